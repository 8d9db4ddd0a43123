"""FileSensor: wait until a file (or a glob's match) exists (Airflow 2.10's
``airflow/sensors/filesystem.py``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from squall.common.errors import SquallError
from squall.sdk.operators.base import Context
from squall.sdk.sensors.base import BaseSensorOperator
from squall.sdk.triggers.file import FileTrigger, first_file

log = logging.getLogger(__name__)


class FileSensor(BaseSensorOperator):
    """True when ``filepath`` (a path or a glob pattern, templated) matches a file, or a
    directory holding at least one file (at any depth).

    ``recursive`` lets ``**`` in the pattern match any number of directories. ``fs_conn_id``
    is accepted for compatibility and ignored: the path is used as is (relative paths are
    relative to the worker's working directory).

    ``deferrable=True``, as Airflow 2.10's: one poke on the worker; when the file is there
    the task succeeds at once, else the wait goes to a :class:`FileTrigger` (the absolute
    path, looked at every ``poke_interval`` seconds) for at most ``timeout`` seconds from
    then. When it fires the task succeeds; past the timeout it fails (is skipped with
    ``soft_fail``). ``start_from_trigger`` and ``trigger_kwargs`` are accepted; the first
    try starts on a worker.
    """

    template_fields: Sequence[str] = ("filepath",)
    ui_color = "#91818a"

    def __init__(
        self,
        *,
        filepath: str,
        fs_conn_id: str = "fs_default",
        recursive: bool = False,
        deferrable: bool = False,
        start_from_trigger: bool = False,
        trigger_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filepath = filepath
        self.fs_conn_id = fs_conn_id
        self.recursive = recursive
        self.deferrable = deferrable
        self.start_from_trigger = start_from_trigger
        self.trigger_kwargs = trigger_kwargs

    @property
    def path(self) -> str:
        """The (rendered) path or pattern, with ``~`` expanded."""
        return os.path.expanduser(str(self.filepath))

    def poke(self, context: Context) -> bool:
        log.info("Poking for file %s", self.path)
        found = first_file(self.path, self.recursive)
        if found is not None:
            log.info("Found %s", found)
        return found is not None

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):
            return None
        self.defer(
            timeout=timedelta(seconds=self.timeout),
            trigger=FileTrigger(filepath=os.path.abspath(self.path), recursive=self.recursive,
                                poke_interval=self.poke_interval),
            method_name="execute_complete")

    def execute_complete(self, context: Context, event: bool | None = None) -> None:
        """The trigger fired: ``event`` is True when the file was found."""
        if not event:
            raise SquallError(f"{self.task_id} task failed as {self.filepath} not found.")
        log.info("%s completed successfully as %s found.", self.task_id, self.filepath)
