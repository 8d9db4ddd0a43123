"""``/api/v1/pools``: list (order, pages), get, create, patch, delete, in Airflow 2's shape.

Reading needs the ``viewer`` role, changing a pool ``admin``. The database work is
:mod:`squall.runs.pools` (the same checks and usage counting as ``squall pools``); a
change wakes the scheduler, so a pool that grew lets its task instances queue at once.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from squall.api.auth import Admin, Viewer
from squall.api.pagination import OrderBy, Paged, order_by, total
from squall.api.problems import ApiProblem, bad_request, not_found
from squall.api.schemas import ERRORS
from squall.api.schemas_misc import CONFLICT, Pool, PoolCollection
from squall.api.state import DB
from squall.common.errors import PoolError
from squall.common.models import DEFAULT_POOL, TaskInstance
from squall.common.models import Pool as PoolRow
from squall.common.state import TaskInstanceState
from squall.common.wakeup import notify_scheduler
from squall.runs import audit, pools

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["Pool"], responses=ERRORS)

_ORDER = {"id": PoolRow.id, "name": PoolRow.pool, "slots": PoolRow.slots}
#: the fields a request may set
_WRITABLE = ("name", "slots", "description", "include_deferred")
#: fields of the Pool shape a request may send back unchanged (they are ignored)
_READ_ONLY = frozenset({"occupied_slots", "running_slots", "queued_slots", "scheduled_slots",
                        "open_slots", "deferred_slots"})

PoolBody = Annotated[dict[str, Any], Body(
    description="a Pool: name, slots (-1 for unlimited), description")]


def _slots_in(session: Session, names: list[str], state: TaskInstanceState) -> dict[str, int]:
    """The slots of the task instances of each pool in ``state``."""
    if not names:
        return {}
    rows = session.execute(
        select(TaskInstance.pool, func.coalesce(func.sum(TaskInstance.pool_slots), 0))
        .where(TaskInstance.state == state.value, TaskInstance.pool.in_(names))
        .group_by(TaskInstance.pool))
    return {pool: int(slots) for pool, slots in rows}


def _pools_json(session: Session, rows: list[PoolRow]) -> list[dict[str, Any]]:
    usage = {u.name: u for u in pools.list_pools(session)}
    waiting = _slots_in(session, [r.pool for r in rows], TaskInstanceState.SCHEDULED)
    # deferred task instances hold no slot (Airflow's include_deferred=False, the only
    # setting Squall has); they are counted apart, as Airflow's deferred_slots
    deferred = _slots_in(session, [r.pool for r in rows], TaskInstanceState.DEFERRED)
    out = []
    for row in rows:
        held = usage.get(row.pool)
        running, queued = (held.running, held.queued) if held is not None else (0, 0)
        occupied = running + queued
        out.append({
            "name": row.pool, "slots": row.slots, "occupied_slots": occupied,
            "running_slots": running, "queued_slots": queued,
            "scheduled_slots": waiting.get(row.pool, 0),
            "open_slots": -1 if row.slots < 0 else row.slots - occupied,
            "deferred_slots": deferred.get(row.pool, 0), "description": row.description,
            "include_deferred": False,
        })
    return out


def _pool_json(session: Session, row: PoolRow) -> dict[str, Any]:
    return _pools_json(session, [row])[0]


def _find(session: Session, name: str, *, lock: bool = False) -> PoolRow:
    stmt = select(PoolRow).where(PoolRow.pool == name)
    row = session.scalar(stmt.with_for_update() if lock else stmt)
    if row is None:
        raise not_found(f"Pool with name: '{name}' not found")
    return row


def _fields(body: dict[str, Any], update_mask: list[str] | None) -> dict[str, Any]:
    """The writable fields of ``body`` (those of ``update_mask`` when given); a 400 for an
    unknown field and for ``include_deferred`` true."""
    unknown = sorted(set(body) - set(_WRITABLE) - _READ_ONLY)
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)} (a pool has "
                          f"{', '.join(_WRITABLE)})")
    if update_mask is not None:
        masked = [f.strip() for part in update_mask for f in part.split(",") if f.strip()]
        bad = sorted(set(masked) - set(_WRITABLE))
        if bad:
            raise bad_request(f"update_mask: {', '.join(bad)} cannot be changed (only "
                              f"{', '.join(_WRITABLE)})")
        missing = sorted(f for f in masked if f not in body)
        if missing:
            raise bad_request(f"update_mask names {', '.join(missing)}, which the body does "
                              "not give")
        fields = {f: body[f] for f in masked}
    else:
        fields = {f: body[f] for f in _WRITABLE if f in body}
    if fields.get("include_deferred") not in (None, False):
        raise bad_request("include_deferred must be false: deferred task instances never "
                          "hold a pool slot in Squall")
    fields.pop("include_deferred", None)
    return fields


def _checked(name: Any, slots: Any, description: Any) -> tuple[str, int, str | None]:
    try:
        return pools.validate_pool(name, slots, description)
    except PoolError as exc:
        raise bad_request(str(exc)) from None


@router.get("/pools", summary="List pools", response_model=PoolCollection)
def list_pools(pages: Paged, session: DB, user: Viewer,
               order: OrderBy = None) -> dict[str, Any]:
    stmt = select(PoolRow)
    rows = list(session.scalars(pages.apply(order_by(stmt, order, _ORDER, "id"))))
    return {"pools": _pools_json(session, rows), "total_entries": total(session, stmt)}


@router.get("/pools/{pool_name}", summary="Get a pool", response_model=Pool)
def get_pool(pool_name: str, session: DB, user: Viewer) -> dict[str, Any]:
    return _pool_json(session, _find(session, pool_name))


@router.post("/pools", summary="Create a pool", response_model=Pool,
             responses=CONFLICT)
def post_pool(body: PoolBody, session: DB, user: Admin) -> dict[str, Any]:
    fields = _fields(body, None)
    missing = [f for f in ("name", "slots") if f not in fields]
    if missing:
        raise bad_request(f"missing required field(s): {', '.join(missing)}")
    name, slots, description = _checked(fields["name"], fields["slots"],
                                        fields.get("description"))
    if session.scalar(select(PoolRow.id).where(PoolRow.pool == name)) is not None:
        raise ApiProblem(409, f"Pool: {name} already exists")
    try:
        pools.set_pool(session, name, slots, description)
        session.flush()
    except IntegrityError:
        raise ApiProblem(409, f"Pool: {name} was created by someone else meanwhile") from None
    notify_scheduler(session, f"pool {name} created (API, by {user.username})")
    audit.record_event(session, audit.POOL_CREATE, owner=user.username, source="api",
                       extra={"pool": name, "slots": slots})
    log.info("api: %s created pool %s (%d slots)", user.username, name, slots)
    return _pool_json(session, _find(session, name))


@router.patch("/pools/{pool_name}", summary="Update a pool", response_model=Pool,
              responses=CONFLICT)
def patch_pool(pool_name: str, body: PoolBody, session: DB, user: Admin,
               update_mask: Annotated[list[str] | None, Query()] = None) -> dict[str, Any]:
    row = _find(session, pool_name, lock=True)
    fields = _fields(body, update_mask)
    if update_mask is None:
        missing = [f for f in ("name", "slots") if f not in fields]
        if missing:
            raise bad_request(f"missing required field(s): {', '.join(missing)} (or name "
                              "the fields to change in update_mask)")
    name, slots, description = _checked(fields.get("name", row.pool),
                                        fields.get("slots", row.slots),
                                        fields.get("description"))
    if name != row.pool:
        if row.pool == DEFAULT_POOL:
            raise bad_request(f"{DEFAULT_POOL}'s name cannot be changed")
        if session.scalar(select(PoolRow.id).where(PoolRow.pool == name)) is not None:
            raise ApiProblem(409, f"Pool: {name} already exists")
        row.pool = name
    row.slots = slots
    if "description" in fields:
        row.description = description
    try:
        session.flush()
    except IntegrityError:
        raise ApiProblem(409, f"Pool: {name} was created by someone else meanwhile") from None
    if name != pool_name:
        pools.clear_missing_pool_reasons(session, name)
    notify_scheduler(session, f"pool {name} changed (API, by {user.username})")
    audit.record_event(session, audit.POOL_EDIT, owner=user.username, source="api",
                       extra={"pool": pool_name, **({"new_name": name} if name != pool_name
                                                     else {}), "slots": slots,
                              "fields": sorted(fields)})
    log.info("api: %s changed pool %s: %s", user.username, pool_name, sorted(fields))
    return _pool_json(session, row)


@router.delete("/pools/{pool_name}", summary="Delete a pool", status_code=204,
               response_class=Response, responses={204: {"description": "deleted"}})
def delete_pool(pool_name: str, session: DB, user: Admin) -> Response:
    _find(session, pool_name)
    if pool_name == DEFAULT_POOL:
        raise bad_request(f"{DEFAULT_POOL} cannot be deleted (change its slots instead)")
    try:
        pools.delete_pool(session, pool_name)
    except PoolError as exc:  # deleted by someone else meanwhile
        raise not_found(str(exc)) from None
    audit.record_event(session, audit.POOL_DELETE, owner=user.username, source="api",
                       extra={"pool": pool_name})
    log.info("api: %s deleted pool %s", user.username, pool_name)
    return Response(status_code=204)
