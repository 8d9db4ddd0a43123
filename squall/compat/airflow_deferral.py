"""The ``airflow`` modules of Airflow 2.10's deferral surface (issue 25): triggers, the
``*Async`` sensors and the deferral exceptions, merged into
:data:`squall.compat.airflow.SUPPORTED_MODULES` (a module listed in both gets both sets of
attributes).

A trigger's ``serialize()`` names Squall's class path; under the compatibility layer the
Airflow class paths (``airflow.triggers.temporal.DateTimeTrigger``...) import the same
classes, so a user-written trigger that names an Airflow path is rebuilt all the same.
"""

from __future__ import annotations

from typing import Final

_T = "squall.sdk.triggers"

#: ``airflow`` module name -> {attribute: "squall.module:attribute"}
DEFERRAL_MODULES: Final[dict[str, dict[str, str]]] = {
    "airflow.triggers": {},
    "airflow.triggers.base": {
        name: f"{_T}.base:{name}"
        for name in ("BaseTrigger", "TriggerEvent", "BaseTaskEndEvent", "TaskSuccessEvent",
                     "TaskFailedEvent", "TaskSkippedEvent")
    },
    "airflow.triggers.temporal": {
        "DateTimeTrigger": f"{_T}.temporal:DateTimeTrigger",
        "TimeDeltaTrigger": f"{_T}.temporal:TimeDeltaTrigger",
    },
    "airflow.triggers.file": {"FileTrigger": f"{_T}.file:FileTrigger"},
    "airflow.triggers.external_task": {
        "WorkflowTrigger": f"{_T}.external_task:WorkflowTrigger",
        "DagStateTrigger": f"{_T}.external_task:DagStateTrigger",
        "TaskStateTrigger": f"{_T}.external_task:TaskStateTrigger",
    },
    "airflow.sensors.time_delta": {
        "TimeDeltaSensorAsync": "squall.sdk.sensors.time_delta:TimeDeltaSensorAsync",
    },
    "airflow.sensors.date_time": {
        "DateTimeSensorAsync": "squall.sdk.sensors.date_time:DateTimeSensorAsync",
    },
    "airflow.sensors.time_sensor": {
        "TimeSensorAsync": "squall.sdk.sensors.date_time:TimeSensorAsync",
    },
    "airflow.exceptions": {
        "TaskDeferred": "squall.common.errors:TaskDeferred",
        "TaskDeferralError": "squall.common.errors:TaskDeferralError",
    },
}

#: the modules above that are packages in Airflow
DEFERRAL_PACKAGES: Final[frozenset[str]] = frozenset({"airflow.triggers"})
