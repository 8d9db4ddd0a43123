"""``BaseHook``: Airflow 2's ``airflow.hooks.base.BaseHook``, for reading connections.

``BaseHook.get_connection("my_db")`` returns a
:class:`~squall.secrets.connections.Connection` from ``SQUALL_CONN_MY_DB`` (or
``AIRFLOW_CONN_MY_DB`` under ``[core] airflow_compat``) or the ``connection`` table, and
masks its password in this process's logs. A hook of one's own subclasses it and implements
:meth:`BaseHook.get_conn`.
"""

from __future__ import annotations

import logging
from typing import Any

from squall.secrets.connection_store import get_connection
from squall.secrets.connections import Connection

log = logging.getLogger(__name__)

__all__ = ["BaseHook", "Connection"]


class BaseHook:
    """The base of hooks (Airflow's ``BaseHook``)."""

    conn_name_attr: str = ""
    default_conn_name: str = ""
    conn_type: str = ""
    hook_name: str = ""

    def __init__(self, logger_name: str | None = None) -> None:
        self.log = logging.getLogger(logger_name or f"{type(self).__module__}."
                                     f"{type(self).__name__}")

    @classmethod
    def get_connection(cls, conn_id: str) -> Connection:
        """Connection ``conn_id``; ``ConnectionNotFound`` (a ``SquallError``, so
        ``AirflowException`` catches it) when it is not defined."""
        conn = get_connection(conn_id)
        log.info("Using connection ID '%s' for task execution.", conn.conn_id)
        return conn

    @classmethod
    def get_hook(cls, conn_id: str) -> BaseHook:
        raise NotImplementedError(
            "Squall has no hook registry: instantiate the hook class you need")

    def get_conn(self) -> Any:
        """The client of the external system (each hook implements it)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement get_conn")
