"""The deployment's authoring defaults: what a DAG or task gets when its DAG file does not say.

Airflow 2 reads ``[scheduler] catchup_by_default``, ``[core] max_active_runs_per_dag``,
``max_active_tasks_per_dag``, ``default_task_retries`` and ``default_timezone`` when a DAG
file is parsed. Squall does the same without a global configuration: whoever imports a DAG
file (the DAG processor's parse children, a worker, ``squall dags test``, the callback
runner) holds a :class:`~squall.common.settings.Settings`, builds :class:`DagDefaults` from
it and has the loader (:func:`squall.dag_processing.dagbag.load_file`) install them around the
import with :func:`authoring_defaults`. The ``DAG`` and ``BaseOperator`` constructors read
:func:`current_defaults` for every argument left out.

The values are fixed when the DAG is built, so the serialized DAG carries them: the
scheduler, which never imports DAG files (ADR 3), works from the same numbers as the worker
that ran the file with the same settings. Outside a loader (a DAG built in a test or a
script) the defaults are Airflow's own: catchup on, 16 runs, 16 tasks, no retries, UTC.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from squall.common.settings import Settings


@dataclass(frozen=True)
class DagDefaults:
    """A DAG's and a task's settings when the DAG file leaves them out."""

    catchup: bool = True
    max_active_runs: int = 16
    max_active_tasks: int = 16
    retries: int = 0
    #: the time zone of a DAG whose start_date is naive or missing (a name pendulum knows)
    timezone: str = "UTC"
    #: pause the DAG after this many failed runs in a row (0: never)
    max_consecutive_failed_dag_runs: int = 0
    #: the most task instances one mapped task expands into (``[core] max_map_length``)
    max_map_length: int = 1024
    #: ``[core] dag_run_conf_overrides_params``: a run's conf overrides the tries' params
    #: (kept on the DAG as ``conf_overrides_params``, read where its tries' contexts are built)
    conf_overrides_params: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> DagDefaults:
        core = settings.core
        return cls(catchup=settings.scheduler.catchup_by_default,
                   max_active_runs=core.max_active_runs_per_dag,
                   max_active_tasks=core.max_active_tasks_per_dag,
                   retries=core.default_task_retries,
                   timezone=core.default_timezone,
                   max_consecutive_failed_dag_runs=core.max_consecutive_failed_dag_runs_per_dag,
                   max_map_length=core.max_map_length,
                   conf_overrides_params=core.dag_run_conf_overrides_params)


#: Airflow's own defaults, in force where no loader installed the deployment's
AIRFLOW_DEFAULTS = DagDefaults()

_current: ContextVar[DagDefaults | None] = ContextVar("squall_dag_defaults", default=None)


def current_defaults() -> DagDefaults:
    """The defaults in force here (:data:`AIRFLOW_DEFAULTS` unless a loader installed others)."""
    return _current.get() or AIRFLOW_DEFAULTS


@contextlib.contextmanager
def authoring_defaults(defaults: DagDefaults | None) -> Iterator[DagDefaults]:
    """Make ``defaults`` the current ones for the duration (``None``: leave them as they are)."""
    if defaults is None:
        yield current_defaults()
        return
    token = _current.set(defaults)
    try:
        yield defaults
    finally:
        _current.reset(token)
