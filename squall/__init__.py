"""Squall: a Celery-based workflow executor with an Airflow-2-shaped DAG authoring API.

``from squall import DAG, task, BashOperator, ...``. The names are imported on first use,
so importing a Squall subpackage (the worker, the scheduler) does not load them all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from squall.common.errors import SensorTimeout, TaskFailedNoRetry, TaskSkipped, TaskTimedOut
    from squall.sdk.dag import DAG, dag
    from squall.sdk.decorators import task
    from squall.sdk.edges import chain, cross_downstream
    from squall.sdk.operators.base import BaseOperator, XComArg
    from squall.sdk.operators.bash import BashOperator
    from squall.sdk.operators.empty import EmptyOperator
    from squall.sdk.operators.python import (
        BranchPythonOperator,
        PythonOperator,
        ShortCircuitOperator,
    )
    from squall.sdk.sensors.base import BaseSensorOperator
    from squall.sdk.sensors.filesystem import FileSensor
    from squall.sdk.sensors.python import PythonSensor
    from squall.sdk.sensors.time_delta import TimeDeltaSensor
    from squall.sdk.taskgroup import TaskGroup, task_group
    from squall.sdk.trigger_rule import TriggerRule

_EXPORTS: dict[str, str] = {
    "DAG": "squall.sdk.dag",
    "dag": "squall.sdk.dag",
    "task": "squall.sdk.decorators",
    "task_group": "squall.sdk.taskgroup",
    "TaskGroup": "squall.sdk.taskgroup",
    "chain": "squall.sdk.edges",
    "cross_downstream": "squall.sdk.edges",
    "BaseOperator": "squall.sdk.operators.base",
    "XComArg": "squall.sdk.operators.base",
    "EmptyOperator": "squall.sdk.operators.empty",
    "BashOperator": "squall.sdk.operators.bash",
    "PythonOperator": "squall.sdk.operators.python",
    "BranchPythonOperator": "squall.sdk.operators.python",
    "ShortCircuitOperator": "squall.sdk.operators.python",
    "BaseSensorOperator": "squall.sdk.sensors.base",
    "PythonSensor": "squall.sdk.sensors.python",
    "TimeDeltaSensor": "squall.sdk.sensors.time_delta",
    "FileSensor": "squall.sdk.sensors.filesystem",
    "TriggerRule": "squall.sdk.trigger_rule",
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
