"""The ``airflow`` modules of Airflow 2.3-2.10's authoring surface that issue 24 item 4 adds
(task decorators, operators, edge labels, ``chain_linear``, timetables, plugins), merged
into :data:`squall.compat.airflow.SUPPORTED_MODULES` (a module listed in both gets both
sets of attributes)."""

from __future__ import annotations

from typing import Final

_PY = "squall.sdk.operators.python_virtualenv"
_DECORATORS = "squall.sdk.decorators"

#: ``airflow`` module name -> {attribute: "squall.module:attribute"}
AUTHORING_MODULES: Final[dict[str, dict[str, str]]] = {
    "airflow.models": {"XComArg": "squall.sdk.operators.base:XComArg"},
    "airflow.models.xcom_arg": {"XComArg": "squall.sdk.operators.base:XComArg"},
    "airflow.models.baseoperator": {"chain_linear": "squall.sdk.edges:chain_linear"},
    # airflow.utils.helpers.chain / cross_downstream: squall.compat.airflow's (they warn)
    "airflow.utils.edgemodifier": {
        "Label": "squall.sdk.edges:Label",
        "EdgeModifier": "squall.sdk.edges:EdgeModifier",
    },
    "airflow.utils.task_group": {"TaskGroup": "squall.sdk.taskgroup:TaskGroup"},
    "airflow.utils.weekday": {"WeekDay": "squall.sdk.operators.weekday:WeekDay"},
    "airflow.decorators": {
        "python_task": f"{_DECORATORS}:python_task",
        "virtualenv_task": f"{_DECORATORS}:virtualenv_task",
        "external_python_task": f"{_DECORATORS}:external_python_task",
        "branch_task": f"{_DECORATORS}:branch_task",
        "short_circuit_task": f"{_DECORATORS}:short_circuit_task",
        "sensor_task": f"{_DECORATORS}:sensor_task",
        "bash_task": f"{_DECORATORS}:bash_task",
        "branch_virtualenv_task": f"{_DECORATORS}:branch_virtualenv_task",
        "branch_external_python_task": f"{_DECORATORS}:branch_external_python_task",
        "run_if": f"{_DECORATORS}:run_if",
        "skip_if": f"{_DECORATORS}:skip_if",
    },
    "airflow.operators.python": {
        "PythonVirtualenvOperator": f"{_PY}:PythonVirtualenvOperator",
        "ExternalPythonOperator": f"{_PY}:ExternalPythonOperator",
        "BranchPythonVirtualenvOperator": f"{_PY}:BranchPythonVirtualenvOperator",
        "BranchExternalPythonOperator": f"{_PY}:BranchExternalPythonOperator",
    },
    "airflow.operators.datetime": {
        "BranchDateTimeOperator": "squall.sdk.operators.datetime_branch:BranchDateTimeOperator",
        "target_times_as_dates": "squall.sdk.operators.datetime_branch:target_times_as_dates",
    },
    "airflow.operators.weekday": {
        "BranchDayOfWeekOperator": "squall.sdk.operators.weekday:BranchDayOfWeekOperator",
    },
    "airflow.timetables": {},
    "airflow.timetables.base": {
        "Timetable": "squall.sdk.timetables.custom:AirflowTimetable",
        "DagRunInfo": "squall.sdk.timetables.custom:DagRunInfo",
        "DataInterval": "squall.sdk.timetables.base:DataInterval",
        "TimeRestriction": "squall.sdk.timetables.custom:TimeRestriction",
    },
    "airflow.timetables.trigger": {
        "CronTriggerTimetable": "squall.sdk.timetables.airflow_builtin:CronTriggerTimetable",
    },
    "airflow.timetables.events": {
        "EventsTimetable": "squall.sdk.timetables.airflow_builtin:EventsTimetable",
    },
    "airflow.timetables.interval": {
        "CronDataIntervalTimetable": "squall.sdk.timetables.cron:CronDataIntervalTimetable",
        "DeltaDataIntervalTimetable": "squall.sdk.timetables.delta:DeltaDataIntervalTimetable",
    },
    "airflow.timetables.simple": {
        "NullTimetable": "squall.sdk.timetables.base:NullTimetable",
        "OnceTimetable": "squall.sdk.timetables.base:OnceTimetable",
        "ContinuousTimetable": "squall.sdk.timetables.continuous:ContinuousTimetable",
        "DatasetTriggeredTimetable": "squall.sdk.timetables.datasets:DatasetTriggeredTimetable",
    },
    "airflow.plugins_manager": {"AirflowPlugin": "squall.sdk.plugins:AirflowPlugin"},
    # ---- issue 25: datasets (data-aware scheduling)
    "airflow": {"Dataset": "squall.sdk.datasets:Dataset"},
    "airflow.datasets": {
        name: f"squall.sdk.datasets:{name}"
        for name in ("Dataset", "DatasetAlias", "DatasetAll", "DatasetAny", "BaseDataset")
    },
    "airflow.datasets.metadata": {"Metadata": "squall.sdk.datasets.metadata:Metadata"},
    "airflow.timetables.datasets": {
        "DatasetOrTimeSchedule": "squall.sdk.timetables.datasets:DatasetOrTimeSchedule",
    },
    "airflow.models.dataset": {
        "DatasetModel": "squall.common.models:DatasetModel",
        "DatasetEvent": "squall.sdk.datasets.events:DatasetEventView",
        "DatasetAliasModel": "squall.common.models:DatasetAliasModel",
    },
    "airflow.utils.context": {
        "OutletEventAccessors": "squall.sdk.datasets.events:OutletEventAccessors",
        "OutletEventAccessor": "squall.sdk.datasets.events:OutletEventAccessor",
        "InletEventsAccessors": "squall.sdk.datasets.events:InletEventsAccessors",
    },
}

#: the modules above that are packages in Airflow
AUTHORING_PACKAGES: Final[frozenset[str]] = frozenset({"airflow.timetables",
                                                       "airflow.datasets"})
