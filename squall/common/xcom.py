"""XCom: small JSON values tasks pass to each other through the metadata database."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from squall.common.errors import XComValueError
from squall.common.models import XCom, utcnow

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
         value: Any) -> None:
    text = serialize_value(value, dag_id=dag_id, task_id=task_id, key=key)
    session.execute(
        delete(XCom).where(XCom.dag_id == dag_id, XCom.run_id == run_id,
                           XCom.task_id == task_id, XCom.key == key)
    )
    session.add(XCom(dag_id=dag_id, run_id=run_id, task_id=task_id, key=key, value=text,
                     timestamp=utcnow()))


def pull(session: Session, *, dag_id: str, run_id: str, task_ids: str | Iterable[str],
         key: str = RETURN_VALUE_KEY, default: Any = None) -> Any:
    """One value for a single task id, or a list (in the order asked) for several."""
    single = isinstance(task_ids, str)
    ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
    rows = session.execute(
        select(XCom.task_id, XCom.value).where(
            XCom.dag_id == dag_id, XCom.run_id == run_id, XCom.task_id.in_(ids),
            XCom.key == key,
        )
    ).all()
    found = {task_id: json.loads(text) for task_id, text in rows}
    if single:
        return found.get(ids[0], default)
    return [found.get(t, default) for t in ids]


def clear(session: Session, *, dag_id: str, run_id: str, task_id: str) -> None:
    session.execute(
        delete(XCom).where(XCom.dag_id == dag_id, XCom.run_id == run_id,
                           XCom.task_id == task_id)
    )
