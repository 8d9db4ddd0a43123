"""Squall: a Celery-based workflow executor with an Airflow-2-shaped DAG authoring API.

``from squall import DAG, task, BashOperator, ...``. The names are imported on first use,
so importing a Squall subpackage (the worker, the scheduler) does not load them all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from squall.common.dag import DAG, dag
    from squall.common.decorators import task
    from squall.common.dependencies import chain, cross_downstream
    from squall.common.errors import SensorTimeout, TaskFailedNoRetry, TaskSkipped, TaskTimedOut
    from squall.common.operators.base import BaseOperator, XComArg
    from squall.common.operators.bash import BashOperator
    from squall.common.operators.empty import EmptyOperator
    from squall.common.operators.python import (
        BranchPythonOperator,
        PythonOperator,
        ShortCircuitOperator,
    )
    from squall.common.sensors.base import BaseSensorOperator
    from squall.common.sensors.filesystem import FileSensor
    from squall.common.sensors.python import PythonSensor
    from squall.common.sensors.time_delta import TimeDeltaSensor
    from squall.common.taskgroup import TaskGroup, task_group
    from squall.common.trigger_rule import TriggerRule

_EXPORTS: dict[str, str] = {
    "DAG": "squall.common.dag",
    "dag": "squall.common.dag",
    "task": "squall.common.decorators",
    "task_group": "squall.common.taskgroup",
    "TaskGroup": "squall.common.taskgroup",
    "chain": "squall.common.dependencies",
    "cross_downstream": "squall.common.dependencies",
    "BaseOperator": "squall.common.operators.base",
    "XComArg": "squall.common.operators.base",
    "EmptyOperator": "squall.common.operators.empty",
    "BashOperator": "squall.common.operators.bash",
    "PythonOperator": "squall.common.operators.python",
    "BranchPythonOperator": "squall.common.operators.python",
    "ShortCircuitOperator": "squall.common.operators.python",
    "BaseSensorOperator": "squall.common.sensors.base",
    "PythonSensor": "squall.common.sensors.python",
    "TimeDeltaSensor": "squall.common.sensors.time_delta",
    "FileSensor": "squall.common.sensors.filesystem",
    "TriggerRule": "squall.common.trigger_rule",
    "TaskSkipped": "squall.common.errors",
    "TaskFailedNoRetry": "squall.common.errors",
    "TaskTimedOut": "squall.common.errors",
    "SensorTimeout": "squall.common.errors",
}

__all__ = [
    "DAG",
    "BaseOperator",
    "BaseSensorOperator",
    "BashOperator",
    "BranchPythonOperator",
    "EmptyOperator",
    "FileSensor",
    "PythonOperator",
    "PythonSensor",
    "SensorTimeout",
    "ShortCircuitOperator",
    "TaskFailedNoRetry",
    "TaskGroup",
    "TaskSkipped",
    "TaskTimedOut",
    "TimeDeltaSensor",
    "TriggerRule",
    "XComArg",
    "chain",
    "cross_downstream",
    "dag",
    "task",
    "task_group",
]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'squall' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
