"""The one message the scheduler sends and a worker accepts: run one try of one task instance.

A message is a JSON object validated into :class:`TaskRunCommand` (pydantic, frozen, no extra
keys). Anything else (another kind, another version, a missing or malformed field) raises
:class:`~squall.common.errors.PayloadError` and is never executed.

The DAG file travels relative to a named root (``DAGS_FOLDER/etl/daily.py``, or
``EXAMPLES/...`` for the shipped examples), because the scheduler's and the workers' DAG
folders may be mounted at different paths. Nothing else is accepted: an absolute path, a
path with ``..`` or another root is a malformed command, refused before anything is
imported, so a message can make a worker import only files under its DAG folder (or the
shipped examples).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from squall.common.errors import PayloadError
from squall.common.models import TaskInstanceKey

PAYLOAD_VERSION = 1
DAGS_FOLDER_ROOT = "DAGS_FOLDER"
EXAMPLES_ROOT = "EXAMPLES"

_ROOTS = (DAGS_FOLDER_ROOT, EXAMPLES_ROOT)
_KEY_PATTERN = r"^[A-Za-z0-9_.\-]{1,250}$"


class TaskRunCommand(BaseModel):
    """Run try ``try_number`` of task instance (dag_id, task_id, run_id, map_index)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    version: Literal[1] = 1
    kind: Literal["run_task"] = "run_task"
    dag_id: str = Field(pattern=_KEY_PATTERN)
    task_id: str = Field(pattern=_KEY_PATTERN)
    run_id: str = Field(min_length=1, max_length=250)
    #: -1 unless the task is mapped; a worker that predates mapping refuses the field
    map_index: int = Field(default=-1, ge=-1)
    try_number: int = Field(ge=1)
    dag_file: str = Field(min_length=1, max_length=2000)
    queue: str = Field(min_length=1, max_length=256)

    @field_validator("dag_file")
    @classmethod
    def _under_a_root(cls, value: str) -> str:
        root, _, rest = value.partition("/")
        parts = rest.split("/")
        if root not in _ROOTS or not rest or "\x00" in rest or any(
                part in ("", ".", "..") for part in parts):
            raise ValueError(
                f"must be a relative path under {DAGS_FOLDER_ROOT}/ or {EXAMPLES_ROOT}/ "
                f"without '.', '..' or empty parts, got {value!r}")
        return value

    @property
    def key(self) -> TaskInstanceKey:
        return TaskInstanceKey(self.dag_id, self.task_id, self.run_id, self.map_index)

    def to_message(self) -> dict[str, Any]:
        """The JSON object sent; ``map_index`` only for a mapped task instance, so the message
        for any other is the same as before mapping existed."""
        message = self.model_dump(mode="json")
        if message["map_index"] == -1:
            del message["map_index"]
        return message

    @classmethod
    def from_message(cls, message: Any) -> TaskRunCommand:
        """Validate a received message (a dict or its JSON text)."""
        if isinstance(message, str | bytes):
            try:
                message = json.loads(message)
            except ValueError as exc:
                raise PayloadError(f"message is not JSON: {exc}") from None
        if not isinstance(message, dict):
            raise PayloadError(
                f"message must be a JSON object, got {type(message).__name__}"
            )
        if message.get("kind", "run_task") != "run_task":
            raise PayloadError(f"unsupported command kind {message.get('kind')!r}")
        if message.get("version", PAYLOAD_VERSION) != PAYLOAD_VERSION:
            raise PayloadError(
                f"unsupported payload version {message.get('version')!r} "
                f"(this worker speaks version {PAYLOAD_VERSION})"
            )
        try:
            return cls.model_validate(message)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}"
                for err in exc.errors()
            )
            raise PayloadError(f"malformed task-run command: {problems}") from None


def relative_dag_file(fileloc: str, dags_folder: Path, examples_folder: Path | None) -> str:
    """``fileloc`` as ``ROOT/relative/path`` when it is under a known root, else as is (which
    no command accepts: the scheduler fails such a task instance with the reason)."""
    path = Path(os.path.abspath(fileloc))
    for root_name, root in ((DAGS_FOLDER_ROOT, dags_folder), (EXAMPLES_ROOT, examples_folder)):
        if root is None:
            continue
        try:
            rel = path.relative_to(Path(os.path.abspath(root)))
        except ValueError:
            continue
        return f"{root_name}/{rel.as_posix()}"
    return str(path)


def resolve_dag_file(dag_file: str, dags_folder: Path, examples_folder: Path | None) -> Path:
    """The local path of a ``dag_file`` from a command: under this worker's DAG folder or
    examples folder; anything else raises :class:`PayloadError`."""
    root_name, _, rest = dag_file.partition("/")
    roots = {DAGS_FOLDER_ROOT: dags_folder, EXAMPLES_ROOT: examples_folder}
    if root_name in roots and rest:
        root = roots[root_name]
        if root is None:
            raise PayloadError(f"dag_file {dag_file!r}: this worker has no {root_name}")
        base = Path(os.path.abspath(root))
        path = Path(os.path.abspath(base / rest))
        if base != path and base not in path.parents:
            raise PayloadError(f"dag_file {dag_file!r} points outside {root_name}")
        return path
    raise PayloadError(f"dag_file {dag_file!r} is not under {DAGS_FOLDER_ROOT}/ or "
                       f"{EXAMPLES_ROOT}/")
