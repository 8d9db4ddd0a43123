"""The DAG arguments Airflow 2.7-2.10 added that Squall takes as Airflow does:
``max_consecutive_failed_dag_runs``, ``fail_stop``, ``template_undefined``,
``jinja_environment_kwargs``, ``access_control``, ``default_view``, ``orientation`` and
``auto_register``; their validation, with Airflow's rules (``airflow/models/dag.py``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import jinja2

from squall.common.errors import DagDefinitionError
from squall.sdk.dag_defaults import current_defaults
from squall.sdk.deprecation import warn_deprecated
from squall.sdk.trigger_rule import TriggerRule

if TYPE_CHECKING:
    from squall.sdk.dag import DAG
    from squall.sdk.operators.base import BaseOperator

log = logging.getLogger(__name__)

#: Airflow's DEFAULT_VIEW_PRESETS and ORIENTATION_PRESETS
DEFAULT_VIEW_PRESETS: Final = ("grid", "graph", "duration", "gantt", "landing_times")
ORIENTATION_PRESETS: Final = ("LR", "TB", "RL", "BT")
#: the trigger rules a fail_stop DAG's tasks may have (Airflow's
#: FailStopDagInvalidTriggerRule._allowed_rules)
FAIL_STOP_RULES: Final = frozenset({TriggerRule.ALL_SUCCESS.value, "all_done_setup_success"})

#: DAG ids whose access_control was reported as ignored in this process
_ACCESS_CONTROL_REPORTED: set[str] = set()


@dataclass(frozen=True)
class DagOptions:
    """The validated values."""

    max_consecutive_failed_dag_runs: int = 0
    fail_stop: bool = False
    template_undefined: type[jinja2.Undefined] = jinja2.StrictUndefined
    jinja_environment_kwargs: dict[str, Any] = field(default_factory=dict)
    access_control: dict[str, Any] | None = None
    default_view: str = "grid"
    orientation: str = "LR"
    auto_register: bool = True

    @classmethod
    def build(cls, dag_id: str, *, max_consecutive_failed_dag_runs: int, fail_stop: bool,
              template_undefined: type[Any] | None,
              jinja_environment_kwargs: dict[str, Any] | None,
              access_control: dict[str, Any] | None, default_view: str | None,
              orientation: str, auto_register: bool) -> DagOptions:
        failed_runs = max_consecutive_failed_dag_runs
        if isinstance(failed_runs, bool) or not isinstance(failed_runs, int):
            raise DagDefinitionError(
                f"DAG {dag_id}: max_consecutive_failed_dag_runs must be an int, "
                f"got {failed_runs!r}")
        if failed_runs == 0:  # Airflow: 0 takes [core] max_consecutive_failed_dag_runs_per_dag
            failed_runs = current_defaults().max_consecutive_failed_dag_runs
        if failed_runs < 0:
            raise DagDefinitionError(
                f"DAG {dag_id}: invalid max_consecutive_failed_dag_runs {failed_runs}: "
                "requires max_consecutive_failed_dag_runs >= 0")
        undefined = jinja2.StrictUndefined if template_undefined is None else template_undefined
        if not (isinstance(undefined, type) and issubclass(undefined, jinja2.Undefined)):
            raise DagDefinitionError(
                f"DAG {dag_id}: template_undefined must be a jinja2.Undefined subclass, "
                f"got {template_undefined!r}")
        if jinja_environment_kwargs is not None and not isinstance(jinja_environment_kwargs,
                                                                   dict):
            raise DagDefinitionError(
                f"DAG {dag_id}: jinja_environment_kwargs must be a dict, "
                f"got {jinja_environment_kwargs!r}")
        if access_control is not None:
            _report_access_control(dag_id)
        return cls(max_consecutive_failed_dag_runs=failed_runs, fail_stop=bool(fail_stop),
                   template_undefined=undefined,
                   jinja_environment_kwargs=dict(jinja_environment_kwargs or {}),
                   access_control=access_control,
                   default_view=_default_view(dag_id, default_view),
                   orientation=_orientation(dag_id, orientation),
                   auto_register=bool(auto_register))


def _default_view(dag_id: str, value: str | None) -> str:
    if value is None:
        return "grid"  # Airflow's [webserver] dag_default_view
    view = str(value).lower()
    if view == "tree":
        warn_deprecated(f"DAG {dag_id}: default_view of 'tree' has been renamed to 'grid'")
        return "grid"
    if view not in DEFAULT_VIEW_PRESETS:
        raise DagDefinitionError(
            f"DAG {dag_id}: invalid default_view {value!r} (one of "
            f"{', '.join(DEFAULT_VIEW_PRESETS)})")
    return view


def _orientation(dag_id: str, value: str) -> str:
    if value not in ORIENTATION_PRESETS:
        raise DagDefinitionError(
            f"DAG {dag_id}: invalid orientation {value!r} (one of "
            f"{', '.join(ORIENTATION_PRESETS)})")
    return value


def _report_access_control(dag_id: str) -> None:
    if dag_id in _ACCESS_CONTROL_REPORTED:
        return
    _ACCESS_CONTROL_REPORTED.add(dag_id)
    log.warning("DAG %s: access_control is ignored: Squall's roles apply to every DAG of the "
                "deployment (docs/airflow-compat.md)", dag_id)


def check_fail_stop_rule(dag: DAG, task: BaseOperator) -> None:
    """A fail_stop DAG's tasks must keep the all_success trigger rule (Airflow's
    ``FailStopDagInvalidTriggerRule``)."""
    if getattr(dag, "fail_stop", False) and str(task.trigger_rule) not in FAIL_STOP_RULES:
        raise DagDefinitionError(
            f"DAG {dag.dag_id}: task {task.task_id} has trigger_rule {task.trigger_rule!s}, but "
            "a fail_stop DAG can only have the all_success trigger rule "
            "(FailStopDagInvalidTriggerRule)")
