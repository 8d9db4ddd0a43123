"""Stand-ins for small Airflow 2 helpers DAG files import: ``airflow.utils.state.State``,
``airflow.utils.decorators.apply_defaults`` and ``airflow.configuration.conf``.

They are served under their Airflow names by :mod:`squall.compat.airflow`; Squall's own code
uses :mod:`squall.common.state`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final, TypeVar

from squall.common.settings import Settings
from squall.common.state import DagRunState, TaskInstanceState
from squall.sdk.templating import ConfigView

log = logging.getLogger(__name__)

__all__ = ["State", "apply_defaults", "conf", "deprecated_chain", "deprecated_cross_downstream"]

F = TypeVar("F", bound=Callable[..., object])

TI = TaskInstanceState


class State:
    """Airflow 2's ``State``: the task instance and DAG run states as strings, and its sets.

    ``State.NONE`` is ``None`` as in Airflow (Squall stores a task instance that has never
    been looked at as ``"none"``; the ExternalTaskSensor accepts either).
    """

    NONE: Final = None
    REMOVED: Final = TI.REMOVED
    SCHEDULED: Final = TI.SCHEDULED
    QUEUED: Final = TI.QUEUED
    RUNNING: Final = TI.RUNNING
    SUCCESS: Final = TI.SUCCESS
    RESTARTING: Final = TI.RESTARTING
    FAILED: Final = TI.FAILED
    UP_FOR_RETRY: Final = TI.UP_FOR_RETRY
    UP_FOR_RESCHEDULE: Final = TI.UP_FOR_RESCHEDULE
    UPSTREAM_FAILED: Final = TI.UPSTREAM_FAILED
    SKIPPED: Final = TI.SKIPPED
    DEFERRED: Final = TI.DEFERRED
    #: Airflow's shutdown state; no Squall task instance ever has it
    SHUTDOWN: Final = "shutdown"

    task_states: Final = (None, *TaskInstanceState.__members__.values())
    dag_states: Final = (DagRunState.QUEUED, DagRunState.SUCCESS, DagRunState.RUNNING,
                         DagRunState.FAILED)
    finished_dr_states: Final = frozenset({DagRunState.SUCCESS, DagRunState.FAILED})
    unfinished_dr_states: Final = frozenset({DagRunState.QUEUED, DagRunState.RUNNING})
    finished: Final = frozenset({TI.SUCCESS, TI.FAILED, TI.SKIPPED, TI.UPSTREAM_FAILED,
                                 TI.REMOVED})
    unfinished: Final = frozenset({None, TI.SCHEDULED, TI.QUEUED, TI.RUNNING, TI.RESTARTING,
                                   TI.UP_FOR_RETRY, TI.UP_FOR_RESCHEDULE, TI.DEFERRED})
    failed_states: Final = frozenset({TI.FAILED, TI.UPSTREAM_FAILED})
    success_states: Final = frozenset({TI.SUCCESS, TI.SKIPPED})


def apply_defaults(func: F) -> F:
    """Airflow 1's ``@apply_defaults``, a no-op as in Airflow 2: every operator's
    ``__init__`` gets ``default_args`` already."""
    return func


def _settings() -> Settings:
    return Settings.load()


#: ``airflow.configuration.conf``: the settings of this process's environment and settings
#: file, read on first use (not when the DAG file imports it), as the context's ``conf``
conf = ConfigView(_settings)


def deprecated_chain(*args: Any, **kwargs: Any) -> None:
    """``airflow.utils.helpers.chain``: deprecated in Airflow 2 for
    ``airflow.models.baseoperator.chain``, which it calls."""
    from squall.sdk.deprecation import warn_deprecated
    from squall.sdk.edges import chain

    warn_deprecated("airflow.utils.helpers.chain is deprecated; use "
                    "airflow.models.baseoperator.chain")
    chain(*args, **kwargs)


def deprecated_cross_downstream(*args: Any, **kwargs: Any) -> None:
    """``airflow.utils.helpers.cross_downstream``: deprecated in Airflow 2 for
    ``airflow.models.baseoperator.cross_downstream``, which it calls."""
    from squall.sdk.deprecation import warn_deprecated
    from squall.sdk.edges import cross_downstream

    warn_deprecated("airflow.utils.helpers.cross_downstream is deprecated; use "
                    "airflow.models.baseoperator.cross_downstream")
    cross_downstream(*args, **kwargs)
