"""Variables: Airflow's key -> value store, in the ``variable`` table.

The functions taking a session are what the CLI uses: :func:`set_variable`,
:func:`read_variable`, :func:`delete_variable`, :func:`list_variables`,
:func:`import_variables` (all or nothing) and :func:`export_variables`. Values are
Fernet-encrypted at rest (:class:`~squall.secrets.fernet.FernetCodec`).

:class:`Variable` is Airflow's class-method API for DAG files and tasks
(``Variable.get("key", default_var=None, deserialize_json=True)``); it reads through the
process's :mod:`~squall.secrets.backend` (environment first, then the table). A value
read under a sensitive key (:func:`~squall.secrets.masking.is_sensitive_key`) is masked in
this process's logs from then on. :class:`VariableAccessor` is the ``var`` of the template
context (``{{ var.value.key }}``, ``{{ var.json.key.field }}``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from squall.common.db import session_scope
from squall.common.errors import SquallError
from squall.common.models import VariableModel
from squall.common.models.variable import MAX_KEY
from squall.secrets import backend as secrets_backend
from squall.secrets.fernet import FernetCodec
from squall.secrets.masking import masker

log = logging.getLogger(__name__)

__all__ = [
    "Variable",
    "VariableAccessor",
    "VariableError",
    "VariableRecord",
    "delete_variable",
    "export_variables",
    "import_variables",
    "list_variables",
    "read_variable",
    "set_variable",
]


class VariableError(SquallError):
    """A variable key or value, or a variables file, is not acceptable; the message says
    which and why."""


class _NotSet:
    def __repr__(self) -> str:
        return "NOTSET"


NOTSET: Final = _NotSet()

#: what ``import`` does with a key that exists already (Airflow's --action-on-existing-key)
OnExisting = Literal["overwrite", "fail", "skip"]


@dataclass(frozen=True)
class VariableRecord:
    """A variable as read from the table, decrypted."""

    key: str
    value: str | None
    description: str | None
    is_encrypted: bool


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key.strip():
        raise VariableError(f"variable key {key!r}: a non-empty string is needed")
    if len(key) > MAX_KEY:
        raise VariableError(f"variable key {key[:40]!r}...: longer than {MAX_KEY} characters")
    return key


def _as_text(key: str, value: Any, serialize_json: bool) -> str:
    if serialize_json:
        try:
            return json.dumps(value, indent=2)
        except (TypeError, ValueError) as exc:
            raise VariableError(f"variable {key}: the value is not JSON-serialisable: "
                                f"{exc}") from None
    if not isinstance(value, str):
        return str(value)
    return value


def set_variable(session: Session, codec: FernetCodec, key: str, value: Any, *,
                 description: str | None = None, serialize_json: bool = False) -> None:
    """Create or replace variable ``key`` (a description given replaces the old one)."""
    _check_key(key)
    text = _as_text(key, value, serialize_json)
    secrets_backend.warn_if_plain(codec)
    stored, encrypted = codec.encrypt(text)
    row = session.scalars(select(VariableModel).where(VariableModel.key == key)).one_or_none()
    if row is None:
        row = VariableModel(key=key, description=description)
        session.add(row)
    elif description is not None:
        row.description = description
    row.val, row.is_encrypted = stored, encrypted
    session.flush()
    log.info("Variable %s: set%s", key, " (encrypted)" if encrypted else "")


def _record(codec: FernetCodec, row: VariableModel) -> VariableRecord:
    value = (None if row.val is None
             else codec.decrypt(row.val, row.is_encrypted, what=f"variable {row.key}"))
    return VariableRecord(row.key, value, row.description, row.is_encrypted)


def read_variable(session: Session, codec: FernetCodec, key: str) -> VariableRecord | None:
    """Variable ``key`` from the table (not the environment), or None."""
    row = session.scalars(select(VariableModel).where(VariableModel.key == key)).one_or_none()
    return None if row is None else _record(codec, row)


def delete_variable(session: Session, key: str) -> bool:
    """Delete variable ``key``; whether it existed."""
    result = session.execute(delete(VariableModel).where(VariableModel.key == key))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def list_variables(session: Session, codec: FernetCodec) -> list[VariableRecord]:
    return [_record(codec, row)
            for row in session.scalars(select(VariableModel).order_by(VariableModel.key))]


def import_variables(session: Session, codec: FernetCodec, document: Any, *,
                     on_existing: OnExisting = "overwrite") -> tuple[list[str], list[str]]:
    """Set every variable of ``document`` (``{"key": value}``, a value that is not a string
    stored as JSON, as Airflow does); all or nothing. ``(keys set, keys skipped)``."""
    if not isinstance(document, Mapping):
        raise VariableError('a variables file holds one JSON object, {"key": value, ...}')
    for key in document:
        _check_key(key)
    existing = set(session.scalars(
        select(VariableModel.key).where(VariableModel.key.in_(list(document)))))
    if on_existing == "fail" and existing:
        raise VariableError(f"variable(s) {', '.join(sorted(existing))} exist already "
                            "(--action-on-existing-key fail)")
    done: list[str] = []
    skipped: list[str] = []
    for key, value in document.items():
        if on_existing == "skip" and key in existing:
            skipped.append(key)
            continue
        set_variable(session, codec, key, value, serialize_json=not isinstance(value, str))
        done.append(key)
    return done, skipped


def export_variables(session: Session, codec: FernetCodec) -> dict[str, Any]:
    """Every variable (decrypted), a value that parses as JSON parsed (Airflow's format)."""
    document: dict[str, Any] = {}
    for record in list_variables(session, codec):
        try:
            document[record.key] = json.loads(record.value or "")
        except ValueError:
            document[record.key] = record.value
    return document


# --------------------------------------------------------------------------- Airflow's API


class Variable:
    """Airflow's ``Variable``: class methods reading and writing the process's variables
    (``from airflow.models import Variable`` under ``[core] airflow_compat``)."""

    @staticmethod
    def _lookup(key: str) -> str | None:
        backend = secrets_backend.current()
        found = backend.variable_from_env(key)
        if found is not None:
            log.debug("Variable %s: from the environment variable %s", key, found[0])
            return found[1]
        with session_scope(backend.session_factory()) as session:
            record = read_variable(session, backend.codec, key)
        return None if record is None else record.value

    @classmethod
    def get(cls, key: str, default_var: Any = NOTSET, deserialize_json: bool = False) -> Any:
        """The value of ``key``: ``default_var`` when it does not exist (KeyError when no
        default is given), parsed as JSON with ``deserialize_json``."""
        value = cls._lookup(key)
        if value is None:
            if default_var is NOTSET:
                raise KeyError(f"Variable {key} does not exist")
            return default_var
        if deserialize_json:
            try:
                parsed = json.loads(value)
            except ValueError as exc:
                raise VariableError(f"variable {key} is not valid JSON: {exc}") from None
            masker().add(parsed, key)
            return parsed
        masker().add(value, key)
        return value

    @classmethod
    def set(cls, key: str, value: Any, description: str | None = None,
            serialize_json: bool = False) -> None:
        """Create or replace ``key`` in the table (an environment variable still wins)."""
        backend = secrets_backend.current()
        with session_scope(backend.session_factory()) as session:
            set_variable(session, backend.codec, key, value, description=description,
                         serialize_json=serialize_json)

    @classmethod
    def update(cls, key: str, value: Any, serialize_json: bool = False) -> None:
        """Replace the value of ``key``, which must exist (KeyError otherwise)."""
        backend = secrets_backend.current()
        with session_scope(backend.session_factory()) as session:
            if read_variable(session, backend.codec, key) is None:
                raise KeyError(f"Variable {key} does not exist")
            set_variable(session, backend.codec, key, value, serialize_json=serialize_json)

    @classmethod
    def setdefault(cls, key: str, default: Any, description: str | None = None,
                   deserialize_json: bool = False) -> Any:
        """The value of ``key``; when there is none, ``default`` is stored and returned."""
        value = cls.get(key, default_var=None, deserialize_json=deserialize_json)
        if value is None:
            if default is None:
                raise ValueError("a default value is needed")
            cls.set(key, default, description=description, serialize_json=deserialize_json)
            return default
        return value

    @classmethod
    def delete(cls, key: str) -> int:
        """Delete ``key`` from the table; how many rows were deleted (0 or 1)."""
        backend = secrets_backend.current()
        with session_scope(backend.session_factory()) as session:
            return int(delete_variable(session, key))


# --------------------------------------------------------------------------- templates


class _ValueAccessor:
    def __init__(self, deserialize_json: bool) -> None:
        self._json = deserialize_json

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        return Variable.get(key, deserialize_json=self._json)

    def __getitem__(self, key: str) -> Any:
        return Variable.get(key, deserialize_json=self._json)

    def get(self, key: str, default_var: Any = NOTSET) -> Any:
        return Variable.get(key, default_var=default_var, deserialize_json=self._json)

    def __repr__(self) -> str:
        return f"<variables as {'JSON' if self._json else 'text'}>"


class VariableAccessor:
    """The template context's ``var``: ``{{ var.value.key }}``, ``{{ var.json.key.field }}``,
    ``{{ var.value.get('key', 'default') }}``. A missing variable without a default fails
    the rendering (KeyError), as in Airflow."""

    def __init__(self) -> None:
        self.value = _ValueAccessor(deserialize_json=False)
        self.json = _ValueAccessor(deserialize_json=True)

    def __repr__(self) -> str:
        return "<VariableAccessor>"
