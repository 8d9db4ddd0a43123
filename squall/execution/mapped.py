"""The runner's part of dynamic task mapping: the operator one mapped task instance runs, and
the check of a return value that mapped tasks downstream expand over.

Airflow 2's rules (``taskinstance.py`` ``_record_task_map_for_downstreams``): when a task has
mapped dependants that expand over its return value, the value must be pushed
(``XComForMappingNotPushed``), be a list or a dict (``UnmappableXComTypePushed``) and hold
at most ``[core] max_map_length`` items (``UnmappableXComLengthPushed``); otherwise the
*upstream* fails.
"""

from __future__ import annotations

import copy
import logging
import traceback
from typing import Any

from squall.common.errors import UnmappableXComError
from squall.sdk.mapping import MappedOperator, mapped_dependants
from squall.sdk.operators.base import BaseOperator
from squall.sdk.runtime import RuntimeTaskInstance

log = logging.getLogger(__name__)


def task_for_try(task: BaseOperator, ti: RuntimeTaskInstance
                 ) -> tuple[BaseOperator, str | None]:
    """The operator the try of ``ti`` runs (a copy: rendering templates changes it) and, when
    a mapped task cannot be built for its map index, why (the try then fails)."""
    if not isinstance(task, MappedOperator):
        return copy.copy(task), None
    if ti.map_index < 0:
        return copy.copy(task), (f"task {task.task_id} is mapped: only its expanded task "
                                 "instances (map index 0, 1, ...) can run")
    try:
        return task.unmap({"ti": ti}, ti.map_index), None
    except Exception as exc:
        log.error("TaskInstance %s.%s[%d]: cannot build the mapped task for its index:\n%s",
                  ti.dag_id, ti.task_id, ti.map_index,
                  "".join(traceback.format_exception(exc)).rstrip())
        return copy.copy(task), f"{type(exc).__name__}: {exc}"


def check_mappable_result(task: BaseOperator, value: Any) -> None:
    """Raise :class:`UnmappableXComError` when ``value`` (what ``task`` returned, None when
    it pushes nothing) cannot feed the mapped tasks expanded over it."""
    if isinstance(task, MappedOperator):
        return  # a mapped upstream: its instances' values are counted, not checked
    dependants = mapped_dependants(task)
    if not dependants:
        return
    if value is None:
        raise UnmappableXComError("did not push XCom for task mapping (the mapped task(s) "
                                  f"{', '.join(t.task_id for t in dependants)} expand over "
                                  "its return value)")
    if not isinstance(value, list | tuple | dict):
        raise UnmappableXComError(f"unmappable return type {type(value).__qualname__!r}")
    limit = min(getattr(t, "max_map_length", 1024) for t in dependants)
    if len(value) > limit:
        raise UnmappableXComError(f"unmappable return value length: {len(value)} > {limit}")
