"""Pools as a user manages them: list with usage, get, upsert, delete, import and export.

A pool (a ``slot_pool`` row) caps the ``pool_slots`` its QUEUED and RUNNING task instances
hold; ``slots = -1`` means unlimited (as in Airflow 2). ``default_pool`` always exists. The
import / export format is Airflow 2's: ``{"NAME": {"slots": N, "description": "..."}}``.

:func:`missing_pool_reason` is the ``state_reason`` the critical section gives a SCHEDULED
task instance whose pool does not exist; creating the pool clears it
(:func:`clear_missing_pool_reasons`), so nobody reads a stale reason while it waits for a slot.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from squall.common.errors import PoolError
from squall.common.models import DEFAULT_POOL, Pool, TaskInstance, clip_reason
from squall.common.state import TaskInstanceState

log = logging.getLogger(__name__)

TI = TaskInstanceState
#: The longest pool name (the ``slot_pool.pool`` column).
MAX_POOL_NAME = 256
#: ``slots`` of an unlimited pool.
UNLIMITED = -1


@dataclass(frozen=True)
class PoolUsage:
    """One pool and what its task instances hold of it now."""

    name: str
    slots: int
    description: str
    running: int
    queued: int

    @property
    def open_slots(self) -> float:
        if self.slots < 0:
            return float("inf")
        return self.slots - self.running - self.queued

    def as_row(self) -> dict[str, Any]:
        return {"pool": self.name, "slots": self.slots, "description": self.description,
                "running_slots": self.running, "queued_slots": self.queued,
                "open_slots": "unlimited" if self.slots < 0 else int(self.open_slots)}


def missing_pool_reason(name: str) -> str:
    """The ``state_reason`` of a SCHEDULED task instance whose pool ``name`` does not exist."""
    return clip_reason(
        f"pool {name!r} does not exist; create it with `squall pools set {name} SLOTS`")


def validate_pool(name: Any, slots: Any, description: Any = None) -> tuple[str, int, str | None]:
    """``(name, slots, description)`` checked; a :class:`PoolError` naming the problem."""
    if not isinstance(name, str) or not name.strip():
        raise PoolError(f"a pool name must be a non-empty string, not {name!r}")
    if name != name.strip():
        raise PoolError(f"pool name {name!r} has leading or trailing whitespace")
    if len(name) > MAX_POOL_NAME:
        raise PoolError(f"pool name {name[:40]!r}... is longer than {MAX_POOL_NAME} characters")
    if isinstance(slots, bool) or not isinstance(slots, int):
        raise PoolError(f"pool {name!r}: slots must be an integer, not {slots!r}")
    if slots < UNLIMITED:
        raise PoolError(f"pool {name!r}: slots must be 0 or more (or -1 for unlimited), "
                        f"not {slots}")
    if description is not None and not isinstance(description, str):
        raise PoolError(f"pool {name!r}: description must be a string, not {description!r}")
    return name, slots, description


def list_pools(session: Session) -> list[PoolUsage]:
    """Every pool by name, with the slots its RUNNING and QUEUED task instances hold."""
    held: dict[tuple[str, str], int] = {
        (pool, state): int(slots) for pool, state, slots in session.execute(
            select(TaskInstance.pool, TaskInstance.state,
                   func.coalesce(func.sum(TaskInstance.pool_slots), 0))
            .where(TaskInstance.state.in_([TI.RUNNING.value, TI.QUEUED.value]))
            .group_by(TaskInstance.pool, TaskInstance.state))
    }
    return [
        PoolUsage(name=p.pool, slots=p.slots, description=p.description or "",
                  running=held.get((p.pool, TI.RUNNING.value), 0),
                  queued=held.get((p.pool, TI.QUEUED.value), 0))
        for p in session.scalars(select(Pool).order_by(Pool.pool))
    ]


def get_pool(session: Session, name: str) -> PoolUsage:
    for usage in list_pools(session):
        if usage.name == name:
            return usage
    raise PoolError(f"pool {name!r} does not exist (see `squall pools list`)")


def set_pool(session: Session, name: str, slots: int, description: str | None = None) -> bool:
    """Create pool ``name`` or change its slots (and description, when given); True when
    it was created. Creating it clears the missing-pool reason of its task instances."""
    name, slots, description = validate_pool(name, slots, description)
    pool = session.scalar(select(Pool).where(Pool.pool == name).with_for_update())
    if pool is None:
        session.add(Pool(pool=name, slots=slots, description=description or ""))
        session.flush()
        cleared = clear_missing_pool_reasons(session, name)
        log.info("Pool %s: created with %d slot(s); %d waiting task instance(s) may now queue",
                 name, slots, cleared)
        return True
    pool.slots = slots
    if description is not None:
        pool.description = description
    log.info("Pool %s: set to %d slot(s)", name, slots)
    return False


def clear_missing_pool_reasons(session: Session, name: str) -> int:
    """Clear the missing-pool ``state_reason`` of pool ``name``'s SCHEDULED task instances."""
    result = session.execute(
        update(TaskInstance)
        .where(TaskInstance.pool == name, TaskInstance.state == TI.SCHEDULED.value,
               TaskInstance.state_reason == missing_pool_reason(name))
        .values(state_reason=None)
        .execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


def delete_pool(session: Session, name: str) -> None:
    """Delete pool ``name``; ``default_pool`` and unknown pools are a :class:`PoolError`.

    Task instances already QUEUED or RUNNING in it run on; SCHEDULED ones wait, with the
    missing-pool reason, until it is created again.
    """
    if name == DEFAULT_POOL:
        raise PoolError(f"{DEFAULT_POOL} cannot be deleted (set its slots instead)")
    result = session.execute(delete(Pool).where(Pool.pool == name))
    if not int(getattr(result, "rowcount", 0) or 0):
        raise PoolError(f"pool {name!r} does not exist (see `squall pools list`)")
    log.info("Pool %s: deleted", name)


def parse_pools_document(document: Any) -> list[tuple[str, int, str | None]]:
    """The pools of an import document (Airflow 2's export format), every one checked
    before anything is written; a :class:`PoolError` names the first problem."""
    if not isinstance(document, Mapping):
        raise PoolError('expected a JSON object {"NAME": {"slots": N, "description": "..."}}, '
                        f"got a JSON {type(document).__name__}")
    pools: list[tuple[str, int, str | None]] = []
    for name, spec in document.items():
        if not isinstance(spec, Mapping):
            raise PoolError(f"pool {name!r}: expected an object with \"slots\" (and "
                            f"\"description\"), got {spec!r}")
        if "slots" not in spec:
            raise PoolError(f"pool {name!r}: \"slots\" is missing")
        pools.append(validate_pool(name, spec["slots"], spec.get("description")))
    return pools


def import_pools(session: Session, document: Any) -> list[str]:
    """Create or update every pool of ``document``; all or nothing. Their names."""
    pools = parse_pools_document(document)
    for name, slots, description in pools:
        set_pool(session, name, slots, description)
    return [name for name, _, _ in pools]


def export_pools(session: Session) -> dict[str, dict[str, Any]]:
    """Every pool in Airflow 2's format (what :func:`import_pools` reads)."""
    return {p.pool: {"slots": p.slots, "description": p.description or ""}
            for p in session.scalars(select(Pool).order_by(Pool.pool))}
