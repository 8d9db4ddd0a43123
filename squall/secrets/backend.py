"""Where ``Variable.get`` and ``BaseHook.get_connection`` look: environment, then database.

Airflow's authoring API reads variables and connections through class methods with no
session argument (``Variable.get("key")``), so a process needs one place that knows the
metadata database and the Fernet key: a :class:`SecretsBackend`, bound to the process with
:func:`configure` by the entry point (``squall.cli.main`` binds one built from the settings;
nothing is bound at import time). Its database engine is made on first use, and made again
in a forked child (a worker's task process) rather than shared with the parent.

Lookups go as in Airflow: the environment variable ``SQUALL_VAR_<KEY>`` (and
``AIRFLOW_VAR_<KEY>`` under ``[core] airflow_compat``), then the ``variable`` table; for
connections ``SQUALL_CONN_<CONN_ID>`` (``AIRFLOW_CONN_<CONN_ID>``), then the ``connection``
table. The key is upper-cased in the variable's name.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from squall.secrets.fernet import FernetCodec, SecretsError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from squall.common.db import SessionFactory
    from squall.common.settings import Settings

log = logging.getLogger(__name__)

VAR_PREFIX = "SQUALL_VAR_"
CONN_PREFIX = "SQUALL_CONN_"
AIRFLOW_VAR_PREFIX = "AIRFLOW_VAR_"
AIRFLOW_CONN_PREFIX = "AIRFLOW_CONN_"


class SecretsBackend:
    """The environment and the metadata database, as variables and connections see them.

    ``session_factory`` is a factory (or the lazy one :func:`from_settings` makes);
    ``environ`` defaults to :data:`os.environ`, read at each lookup.
    """

    def __init__(self, session_factory: SessionFactory | _LazyFactory,
                 codec: FernetCodec, *, airflow_compat: bool = False,
                 environ: Mapping[str, str] | None = None) -> None:
        self._factory = session_factory
        self.codec = codec
        self.airflow_compat = airflow_compat
        self._environ = environ

    def __repr__(self) -> str:
        return f"<SecretsBackend {self.codec!r} airflow_compat={self.airflow_compat}>"

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def session_factory(self) -> SessionFactory:
        factory = self._factory
        return factory() if isinstance(factory, _LazyFactory) else factory

    def _from_env(self, prefixes: tuple[str, ...], name: str) -> tuple[str, str] | None:
        for prefix in prefixes:
            env_name = prefix + name.upper()
            value = self.environ.get(env_name)
            if value is not None:
                return env_name, value
        return None

    def variable_from_env(self, key: str) -> tuple[str, str] | None:
        """``(environment variable, value)`` of variable ``key``, or None."""
        prefixes = (VAR_PREFIX, AIRFLOW_VAR_PREFIX) if self.airflow_compat else (VAR_PREFIX,)
        return self._from_env(prefixes, key)

    def connection_from_env(self, conn_id: str) -> tuple[str, str] | None:
        """``(environment variable, URI or JSON)`` of connection ``conn_id``, or None."""
        prefixes = ((CONN_PREFIX, AIRFLOW_CONN_PREFIX) if self.airflow_compat
                    else (CONN_PREFIX,))
        return self._from_env(prefixes, conn_id)

    def env_names(self, prefixes: tuple[str, ...]) -> dict[str, str]:
        """Every name set in the environment under ``prefixes`` (lower-cased, as Airflow
        lists them) -> the environment variable."""
        found: dict[str, str] = {}
        for env_name in sorted(self.environ):
            for prefix in prefixes:
                if env_name.startswith(prefix) and len(env_name) > len(prefix):
                    found.setdefault(env_name[len(prefix):].lower(), env_name)
        return found


class _LazyFactory:
    """A session factory on an engine made on first use, and made anew after a fork."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._engine: Engine | None = None
        self._factory: SessionFactory | None = None

    def __call__(self) -> SessionFactory:
        from squall.common.db import make_engine, make_session_factory

        with self._lock:
            if self._factory is None or self._pid != os.getpid():
                if self._engine is not None:
                    # a fork's copy: forget the parent's connections without closing them
                    # (closing would end the parent's sessions on the shared sockets)
                    self._engine.dispose(close=False)
                db = self._settings.database
                # a small pool: a task reads a few variables, it does not serve requests
                self._engine = make_engine(self._settings.sql_alchemy_conn, pool_size=1,
                                           max_overflow=2,
                                           pool_recycle=db.sql_alchemy_pool_recycle,
                                           pool_pre_ping=db.sql_alchemy_pool_pre_ping)
                self._factory = make_session_factory(self._engine)
                self._pid = os.getpid()
            return self._factory


def from_settings(settings: Settings) -> SecretsBackend:
    """A backend on the settings' database (engine made on first use) and Fernet key(s);
    warns when no key is set."""
    codec = FernetCodec(settings.core.fernet_key)
    return SecretsBackend(_LazyFactory(settings), codec,
                          airflow_compat=settings.core.airflow_compat)


_current: SecretsBackend | None = None
_warned_plain = False


def configure(backend: SecretsBackend | None) -> SecretsBackend | None:
    """Bind ``backend`` to this process (None unbinds); the one bound before."""
    global _current
    previous, _current = _current, backend
    return previous


def current() -> SecretsBackend:
    """The backend bound to this process; :class:`SecretsError` when none is."""
    if _current is None:
        raise SecretsError(
            "variables and connections are read from a Squall metadata database, and none is "
            "configured in this process (Squall's commands configure it; elsewhere call "
            "squall.secrets.backend.configure)")
    return _current


def warn_if_plain(codec: FernetCodec) -> None:
    """Warn, once a process, that secrets are being written without encryption."""
    global _warned_plain
    if not codec.enabled and not _warned_plain:
        _warned_plain = True
        log.warning("[core] fernet_key is not set: variable values and connection passwords "
                    "and extras are stored unencrypted")


def rotate_fernet_key(session: Session, codec: FernetCodec) -> tuple[int, int]:
    """Re-encrypt every variable value and connection password and extra under the first
    key of ``codec`` (encrypting plain ones); ``(variables, connections)`` rewritten."""
    from sqlalchemy import select

    from squall.common.models import ConnectionModel, VariableModel

    variables = 0
    for var in session.scalars(select(VariableModel)):
        if var.val is not None:
            var.val, var.is_encrypted = codec.rotate(var.val, var.is_encrypted,
                                                     what=f"variable {var.key}")
            variables += 1
    connections = 0
    for row in session.scalars(select(ConnectionModel)):
        if row.password is not None:
            row.password, row.is_encrypted = codec.rotate(
                row.password, row.is_encrypted,
                what=f"the password of connection {row.conn_id}")
        if row.extra is not None:
            row.extra, row.is_extra_encrypted = codec.rotate(
                row.extra, row.is_extra_encrypted,
                what=f"the extra of connection {row.conn_id}")
        connections += 1
    session.flush()
    return variables, connections
