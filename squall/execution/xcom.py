"""XCom: small JSON values tasks pass to each other through the metadata database."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, select
from sqlalchemy.orm import Session

from squall.common.errors import XComValueError
from squall.common.models import DagRun, XCom, utcnow

log = logging.getLogger(__name__)

RETURN_VALUE_KEY = "return_value"


def serialize_value(value: Any, *, dag_id: str, task_id: str, key: str) -> str:
    """The JSON text of ``value``; a clear error when it cannot be stored."""
    try:
        return json.dumps(value, default=_default)
    except (TypeError, ValueError) as exc:
        raise XComValueError(
            f"XCom {key!r} of task {dag_id}.{task_id}: value of type {type(value).__name__} "
            f"is not JSON-serialisable ({exc}); return or push only JSON values "
            "(str, int, float, bool, None, lists and dicts of them, dates)"
        ) from None


def _default(value: Any) -> Any:
    from datetime import date, datetime

    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def push(session: Session, *, dag_id: str, run_id: str, task_id: str, key: str,
         value: Any, map_index: int = -1) -> None:
    text = serialize_value(value, dag_id=dag_id, task_id=task_id, key=key)
    session.execute(
        delete(XCom).where(XCom.dag_id == dag_id, XCom.run_id == run_id,
                           XCom.task_id == task_id, XCom.map_index == map_index,
                           XCom.key == key)
    )
    session.add(XCom(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index,
                     key=key, value=text, timestamp=utcnow()))


def pull(session: Session, *, dag_id: str, run_id: str,
         task_ids: str | Iterable[str] | None, key: str | None = RETURN_VALUE_KEY,
         default: Any = None, include_prior_dates: bool = False,
         logical_date: datetime | None = None) -> Any:
    """XCom values, as Airflow 2's ``TaskInstance.xcom_pull`` finds them.

    ``task_ids`` a single id, or None (any task: Airflow's "no filter"): the most recent
    matching value, or ``default``. Several ids: a list in the order asked, each id's most
    recent value or ``default``. ``key=None`` matches any key. With ``include_prior_dates``
    the values of earlier runs of the DAG (by logical date) count too, the latest run first;
    without it only those of ``run_id``. ``logical_date`` is the pulling run's (read from
    ``run_id`` when not given; give it when pulling from another DAG).

    A mapped task's value (its instances pushed with map indexes 0..n-1) is the list of its
    instances' values in map-index order (Airflow's ``LazyXComSelectSequence``), of the run
    the most recent one was pushed in.
    """
    query = (
        select(XCom.task_id, XCom.value, XCom.map_index, XCom.run_id)
        .join(DagRun, and_(DagRun.dag_id == XCom.dag_id, DagRun.run_id == XCom.run_id))
        .where(XCom.dag_id == dag_id)
    )
    if include_prior_dates:
        if logical_date is None:
            logical_date = session.scalar(select(DagRun.logical_date).where(
                DagRun.dag_id == dag_id, DagRun.run_id == run_id))
            if logical_date is None:
                return default if task_ids is None or isinstance(task_ids, str) else [
                    default for _ in task_ids]
        query = query.where(DagRun.logical_date <= logical_date)
    else:
        query = query.where(XCom.run_id == run_id)
    if key is not None:
        query = query.where(XCom.key == key)
    ids = None if task_ids is None else [task_ids] if isinstance(task_ids, str) else list(
        task_ids)
    if ids is not None:
        query = query.where(XCom.task_id.in_(ids))
    query = query.order_by(DagRun.logical_date.desc(), XCom.timestamp.desc())
    if ids is None or isinstance(task_ids, str):
        row = session.execute(query.limit(1)).first()
        if row is None:
            return default
        if row.map_index >= 0:
            return _mapped_values(session, dag_id, row.run_id, row.task_id, key)
        return json.loads(row.value)
    found: dict[str, Any] = {}
    for task_id, text, map_index, xcom_run_id in session.execute(query):
        if task_id not in found:  # the most recent one
            found[task_id] = (_mapped_values(session, dag_id, xcom_run_id, task_id, key)
                              if map_index >= 0 else json.loads(text))
    return [found.get(t, default) for t in ids]


def _mapped_values(session: Session, dag_id: str, run_id: str, task_id: str,
                   key: str | None) -> list[Any]:
    query = select(XCom.value).where(XCom.dag_id == dag_id, XCom.run_id == run_id,
                                     XCom.task_id == task_id, XCom.map_index >= 0)
    if key is not None:
        query = query.where(XCom.key == key)
    return [json.loads(text) for text in session.scalars(query.order_by(XCom.map_index))]


def clear(session: Session, *, dag_id: str, run_id: str, task_id: str,
          map_index: int = -1) -> None:
    session.execute(
        delete(XCom).where(XCom.dag_id == dag_id, XCom.run_id == run_id,
                           XCom.task_id == task_id, XCom.map_index == map_index)
    )
