"""The metadata database, for the triggers that read it (``WorkflowTrigger``,
``DagStateTrigger``, ``TaskStateTrigger``).

A trigger runs in a triggerer (or inline, under ``squall dags test``), not in a task
process, so it has no ``ti.session_factory`` to read the database with. The process that runs
triggers installs its session factory here when it starts (:func:`install_session_factory`),
as task processes install their run creator for ``TriggerDagRunOperator``. The queries are
blocking SQLAlchemy calls: :func:`run_query` runs one in a thread (``asyncio.to_thread``), so
the event loop, shared by every trigger of the process, never waits on the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from squall.common.db import SessionFactory, session_scope
from squall.common.errors import SquallError

__all__ = ["install_session_factory", "installed_session_factory", "run_query"]

T = TypeVar("T")

#: the process's session factory for triggers (the authoring API sits below the triggerer,
#: which hands it down by installing it)
_FACTORY: dict[str, SessionFactory] = {}


def install_session_factory(factory: SessionFactory | None) -> None:
    """Let this process's triggers read the metadata database with ``factory`` (None: not
    any more)."""
    if factory is None:
        _FACTORY.pop("factory", None)
    else:
        _FACTORY["factory"] = factory


def installed_session_factory(what: str) -> SessionFactory:
    """The installed factory; :class:`SquallError` naming ``what`` needs it when there is
    none."""
    factory = _FACTORY.get("factory")
    if factory is None:
        raise SquallError(f"{what} needs the metadata database: run it in a triggerer "
                          "(squall triggerer) or under squall dags test")
    return factory


async def run_query(what: str, query: Callable[[Session], T]) -> T:
    """``query(session)`` in a worker thread, in a session of its own from the installed
    factory (closed before this returns)."""
    factory = installed_session_factory(what)

    def _run() -> T:
        with session_scope(factory) as session:
            return query(session)

    return await asyncio.to_thread(_run)
