"""The ``airflow`` import name provided by ``squall.compat.airflow`` (``[core] airflow_compat``)."""

# the airflow modules exist only at run time, once the compatibility layer is installed
# mypy: disable-error-code="import-not-found"

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pendulum
import pytest

from squall.common import errors
from squall.common.errors import SquallError
from squall.compat import airflow as compat
from squall.compat.airflow import SUPPORTED_MODULES, AirflowCompatError
from squall.sdk.dag import DAG
from squall.sdk.deprecation import DeprecatedArgumentWarning
from squall.sdk.trigger_rule import TriggerRule

#: what the brief promises: airflow module -> attributes (each a Squall object)
EXPECTED: dict[str, set[str]] = {
    "airflow": {"DAG"},
    "airflow.models": {"DAG", "BaseOperator", "Variable", "Connection", "Param"},
    "airflow.models.variable": {"Variable"},
    "airflow.models.param": {"Param", "ParamsDict", "DagParam"},
    "airflow.models.dagparam": {"DagParam"},
    "airflow.models.connection": {"Connection"},
    "airflow.hooks": set(),
    "airflow.models.mappedoperator": {"MappedOperator"},
    "airflow.models.xcom_arg": {"XComArg"},
    "airflow.hooks.base": {"BaseHook"},
    "airflow.models.dag": {"DAG", "dag"},
    "airflow.models.baseoperator": {"BaseOperator", "chain", "cross_downstream"},
    "airflow.operators": set(),
    "airflow.operators.bash": {"BashOperator"},
    "airflow.operators.python": {"PythonOperator", "BranchPythonOperator", "ShortCircuitOperator"},
    "airflow.operators.empty": {"EmptyOperator"},
    "airflow.operators.dummy": {"DummyOperator"},
    "airflow.decorators": {"dag", "task", "task_group", "setup", "teardown"},
    "airflow.decorators.setup_teardown": {"setup_task", "teardown_task"},
    "airflow.exceptions": {
        "AirflowSkipException",
        "AirflowFailException",
        "AirflowSensorTimeout",
        "AirflowTaskTimeout",
        "AirflowException",
        "ParamValidationError",
        "RemovedInAirflow3Warning",
        "TaskDeferred",
        "TaskDeferralError",
    },
    "airflow.utils": set(),
    "airflow.utils.trigger_rule": {"TriggerRule"},
    "airflow.utils.task_group": {"TaskGroup"},
    "airflow.utils.dates": {"days_ago"},
    "airflow.sensors": set(),
    "airflow.sensors.base": {"BaseSensorOperator", "PokeReturnValue"},
    "airflow.sensors.python": {"PythonSensor"},
    "airflow.sensors.filesystem": {"FileSensor"},
    "airflow.sensors.time_delta": {"TimeDeltaSensor"},
    # issue 14: the operators and deprecated module paths Airflow 2 DAG files commonly use
    "airflow.operators.bash_operator": {"BashOperator"},
    "airflow.operators.python_operator": {
        "PythonOperator", "BranchPythonOperator", "ShortCircuitOperator"},
    "airflow.operators.dummy_operator": {"DummyOperator"},
    "airflow.operators.branch": {"BaseBranchOperator"},
    "airflow.operators.trigger_dagrun": {"TriggerDagRunOperator"},
    "airflow.operators.dagrun_operator": {"TriggerDagRunOperator"},
    "airflow.operators.latest_only": {"LatestOnlyOperator"},
    "airflow.operators.latest_only_operator": {"LatestOnlyOperator"},
    "airflow.operators.email": {"EmailOperator"},
    "airflow.operators.email_operator": {"EmailOperator"},
    "airflow.utils.email": {"send_email", "get_email_address_list"},
    "airflow.utils.state": {"State", "TaskInstanceState", "DagRunState"},
    "airflow.utils.decorators": {"apply_defaults"},
    "airflow.configuration": {"conf"},
    "airflow.sensors.base_sensor_operator": {"BaseSensorOperator"},
    "airflow.sensors.external_task": {"ExternalTaskSensor", "ExternalTaskMarker"},
    "airflow.sensors.external_task_sensor": {"ExternalTaskSensor", "ExternalTaskMarker"},
}
# issue 24: the rest of Airflow 2.10's core authoring surface
EXPECTED.update({
    "airflow.operators.smooth": {"SmoothOperator"},
    "airflow.sensors.time_sensor": {"TimeSensor"},
    "airflow.sensors.date_time": {"DateTimeSensor"},
    "airflow.sensors.weekday": {"DayOfWeekSensor"},
    "airflow.utils.weekday": {"WeekDay"},
    "airflow.sensors.bash": {"BashSensor"},
    "airflow.macros": {"ds_add", "ds_format", "datetime", "timedelta", "dateutil", "json", "time",
                       "uuid", "random", "datetime_diff_for_humans"},
    "airflow.utils.timezone": {"utc", "utcnow", "datetime", "convert_to_utc", "make_aware",
                               "make_naive", "is_localized", "is_naive", "parse",
                               "coerce_datetime"},
    "airflow.utils.context": {"Context"},
    "airflow.models.taskinstance": {"TaskInstance"},
    "airflow.utils.helpers": {"chain", "cross_downstream"},
})
EXPECTED["airflow.operators.python"] = EXPECTED["airflow.operators.python"] | {
    "get_current_context"}
EXPECTED["airflow.models"] = EXPECTED["airflow.models"] | {"TaskInstance"}

#: issue 24 item 4 (squall.compat.airflow_authoring), merged into the modules above
EXPECTED_AUTHORING: dict[str, set[str]] = {
    "airflow.models": {"XComArg"},
    "airflow.models.xcom_arg": {"XComArg"},
    "airflow.models.baseoperator": {"chain_linear"},
    "airflow.utils.edgemodifier": {"Label", "EdgeModifier"},
    "airflow.utils.task_group": {"TaskGroup"},
    "airflow.decorators": {"python_task", "virtualenv_task", "external_python_task",
                           "branch_task", "short_circuit_task", "sensor_task", "bash_task",
                           "branch_virtualenv_task", "branch_external_python_task", "run_if",
                           "skip_if"},
    "airflow.operators.python": {"PythonVirtualenvOperator", "ExternalPythonOperator",
                                 "BranchPythonVirtualenvOperator",
                                 "BranchExternalPythonOperator"},
    "airflow.operators.datetime": {"BranchDateTimeOperator", "target_times_as_dates"},
    "airflow.operators.weekday": {"BranchDayOfWeekOperator"},
    "airflow.timetables": set(),
    "airflow.timetables.base": {"Timetable", "DagRunInfo", "DataInterval", "TimeRestriction"},
    "airflow.timetables.trigger": {"CronTriggerTimetable"},
    "airflow.timetables.events": {"EventsTimetable"},
    "airflow.timetables.interval": {"CronDataIntervalTimetable", "DeltaDataIntervalTimetable"},
    "airflow.timetables.simple": {"NullTimetable", "OnceTimetable", "ContinuousTimetable",
                                  "DatasetTriggeredTimetable"},
    "airflow.plugins_manager": {"AirflowPlugin"},
    # issue 25: datasets
    "airflow": {"Dataset"},
    "airflow.datasets": {"Dataset", "DatasetAlias", "DatasetAll", "DatasetAny", "BaseDataset"},
    "airflow.datasets.metadata": {"Metadata"},
    "airflow.timetables.datasets": {"DatasetOrTimeSchedule"},
    "airflow.models.dataset": {"DatasetModel", "DatasetEvent", "DatasetAliasModel"},
    "airflow.utils.context": {"OutletEventAccessors", "OutletEventAccessor",
                              "InletEventsAccessors"},
}
for _name, _attrs in EXPECTED_AUTHORING.items():
    EXPECTED[_name] = EXPECTED.get(_name, set()) | _attrs

#: issue 25: triggers, the *Async sensors and the deferral exceptions
#: (squall.compat.airflow_deferral), merged into the modules above
EXPECTED_DEFERRAL: dict[str, set[str]] = {
    "airflow.triggers": set(),
    "airflow.triggers.base": {"BaseTrigger", "TriggerEvent", "BaseTaskEndEvent",
                              "TaskSuccessEvent", "TaskFailedEvent", "TaskSkippedEvent"},
    "airflow.triggers.temporal": {"DateTimeTrigger", "TimeDeltaTrigger"},
    "airflow.triggers.file": {"FileTrigger"},
    "airflow.triggers.external_task": {"WorkflowTrigger", "DagStateTrigger",
                                       "TaskStateTrigger"},
    "airflow.sensors.time_delta": {"TimeDeltaSensorAsync"},
    "airflow.sensors.date_time": {"DateTimeSensorAsync"},
    "airflow.sensors.time_sensor": {"TimeSensorAsync"},
    "airflow.exceptions": {"TaskDeferred", "TaskDeferralError"},
}
for _name, _attrs in EXPECTED_DEFERRAL.items():
    EXPECTED[_name] = EXPECTED.get(_name, set()) | _attrs


def _airflow_modules() -> list[str]:
    return sorted(n for n in sys.modules if n == "airflow" or n.startswith("airflow."))


@pytest.fixture(autouse=True)
def _always_uninstalled() -> Iterator[None]:
    """Every test starts and ends without the finder and without airflow modules."""
    compat.uninstall()
    assert _airflow_modules() == []
    yield
    compat.uninstall()
    assert not compat.is_installed()
    assert _airflow_modules() == []


@pytest.fixture
def installed() -> Iterator[None]:
    compat.install()
    yield
    compat.uninstall()


# --------------------------------------------------------------------------- install / uninstall


def test_install_is_idempotent_and_uninstall_cleans_up() -> None:
    assert not compat.is_installed()
    compat.install()
    compat.install()
    assert compat.is_installed()
    assert sys.meta_path[0] is compat._FINDER
    assert sys.meta_path.count(compat._FINDER) == 1

    import airflow.operators.bash

    assert "airflow.operators.bash" in sys.modules
    compat.uninstall()
    assert not compat.is_installed()
    assert compat._FINDER not in sys.meta_path
    assert _airflow_modules() == []
    with pytest.raises(ImportError):
        import airflow  # noqa: F401
    compat.uninstall()  # uninstalling twice is harmless


def test_uninstall_leaves_foreign_modules_alone(installed: None) -> None:
    import airflow  # noqa: F401

    foreign = ModuleType("airflow.someone_else")
    sys.modules["airflow.someone_else"] = foreign
    try:
        compat.uninstall()
        assert sys.modules.get("airflow.someone_else") is foreign
        assert "airflow" not in sys.modules
    finally:
        sys.modules.pop("airflow.someone_else", None)


def test_install_imports_no_squall_module_until_airflow_is_imported() -> None:
    code = textwrap.dedent(
        """
        import sys
        from squall.compat import airflow as compat
        compat.install()
        assert "squall.sdk.operators.bash" not in sys.modules, "install imported too much"
        assert "squall.sdk.dag" not in sys.modules, "install imported too much"
        import airflow.operators.bash
        assert "squall.sdk.operators.bash" in sys.modules
        print("ok")
        """
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --------------------------------------------------------------------------- supported imports


def test_supported_modules_are_what_was_promised() -> None:
    assert {name: set(attrs) for name, attrs in SUPPORTED_MODULES.items()} == EXPECTED
    # every ancestor of a supported module is a supported package
    for name in SUPPORTED_MODULES:
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            assert parent in SUPPORTED_MODULES
            assert parent in compat.PACKAGES


@pytest.mark.parametrize(
    ("module", "attr"),
    [(m, a) for m, attrs in sorted(SUPPORTED_MODULES.items()) for a in sorted(attrs)],
)
def test_each_supported_name_is_the_squall_object(installed: None, module: str, attr: str) -> None:
    mod = importlib.import_module(module)
    target_module, _, target_attr = SUPPORTED_MODULES[module][attr].partition(":")
    assert getattr(mod, attr) is getattr(importlib.import_module(target_module), target_attr)
    assert attr in mod.__all__


def test_packages_have_an_empty_path(installed: None) -> None:
    for name in SUPPORTED_MODULES:
        mod = importlib.import_module(name)
        if name in compat.PACKAGES:
            assert mod.__path__ == []
        else:
            assert not hasattr(mod, "__path__")


def test_airflow_names_are_squall_classes(installed: None) -> None:
    import airflow
    import airflow.models
    from airflow import DAG as TopDAG  # noqa: N811
    from airflow.decorators import dag, task, task_group
    from airflow.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        AirflowTaskTimeout,
    )
    from airflow.models import DAG as ModelsDAG  # noqa: N811
    from airflow.models import BaseOperator as ModelsBaseOperator
    from airflow.models.baseoperator import BaseOperator, chain, cross_downstream
    from airflow.models.dag import DAG as DagModuleDAG  # noqa: N811
    from airflow.operators.bash import BashOperator
    from airflow.operators.dummy import DummyOperator
    from airflow.operators.empty import EmptyOperator
    from airflow.operators.python import (
        BranchPythonOperator,
        PythonOperator,
        ShortCircuitOperator,
    )
    from airflow.sensors.base import BaseSensorOperator
    from airflow.sensors.filesystem import FileSensor
    from airflow.sensors.python import PythonSensor
    from airflow.sensors.time_delta import TimeDeltaSensor
    from airflow.utils.task_group import TaskGroup
    from airflow.utils.trigger_rule import TriggerRule as AirflowTriggerRule

    from squall.common import errors as squall_errors
    from squall.sdk import edges as dependencies
    from squall.sdk import taskgroup
    from squall.sdk.decorators import dag as squall_dag_decorator
    from squall.sdk.decorators import task as squall_task
    from squall.sdk.decorators import task_group as squall_task_group
    from squall.sdk.operators.base import BaseOperator as SquallBaseOperator
    from squall.sdk.operators.bash import BashOperator as SquallBash
    from squall.sdk.operators.dummy import DummyOperator as SquallDummy
    from squall.sdk.operators.empty import EmptyOperator as SquallEmpty
    from squall.sdk.operators.python import BranchPythonOperator as SquallBranch
    from squall.sdk.operators.python import PythonOperator as SquallPython
    from squall.sdk.operators.python import ShortCircuitOperator as SquallShort
    from squall.sdk.sensors.base import BaseSensorOperator as SquallBaseSensor
    from squall.sdk.sensors.filesystem import FileSensor as SquallFileSensor
    from squall.sdk.sensors.python import PythonSensor as SquallPythonSensor
    from squall.sdk.sensors.time_delta import TimeDeltaSensor as SquallTimeDelta

    assert airflow.DAG is TopDAG is ModelsDAG is DagModuleDAG is airflow.models.DAG is DAG
    assert BaseOperator is ModelsBaseOperator is airflow.models.BaseOperator is SquallBaseOperator
    assert chain is dependencies.chain
    assert cross_downstream is dependencies.cross_downstream
    assert BashOperator is SquallBash
    assert PythonOperator is SquallPython
    assert BranchPythonOperator is SquallBranch
    assert ShortCircuitOperator is SquallShort
    assert EmptyOperator is SquallEmpty
    assert DummyOperator is SquallDummy
    assert task is squall_task
    assert dag is squall_dag_decorator
    assert task_group is squall_task_group is taskgroup.task_group
    assert TaskGroup is taskgroup.TaskGroup
    assert AirflowTriggerRule is TriggerRule
    assert BaseSensorOperator is SquallBaseSensor
    assert PythonSensor is SquallPythonSensor
    assert FileSensor is SquallFileSensor
    assert TimeDeltaSensor is SquallTimeDelta
    # the exceptions are the very classes Squall's runner handles
    assert AirflowSkipException is squall_errors.TaskSkipped
    assert AirflowFailException is squall_errors.TaskFailedNoRetry
    assert AirflowSensorTimeout is squall_errors.SensorTimeout
    assert AirflowTaskTimeout is squall_errors.TaskTimedOut
    assert AirflowException is squall_errors.SquallError


def test_deferral_names_are_squall_classes(installed: None) -> None:
    from airflow.exceptions import TaskDeferralError, TaskDeferred
    from airflow.sensors.date_time import DateTimeSensorAsync
    from airflow.sensors.time_delta import TimeDeltaSensorAsync
    from airflow.sensors.time_sensor import TimeSensorAsync
    from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent
    from airflow.triggers.external_task import DagStateTrigger, WorkflowTrigger
    from airflow.triggers.file import FileTrigger
    from airflow.triggers.temporal import DateTimeTrigger, TimeDeltaTrigger

    from squall.sdk import triggers
    from squall.sdk.sensors import date_time, time_delta
    from squall.sdk.triggers import external_task, file, temporal

    assert TaskDeferred is errors.TaskDeferred
    assert TaskDeferralError is errors.TaskDeferralError
    assert issubclass(TaskDeferralError, SquallError)  # an AirflowException, as in Airflow
    assert (BaseTrigger, TriggerEvent, TaskSuccessEvent) == (
        triggers.BaseTrigger, triggers.TriggerEvent, triggers.TaskSuccessEvent)
    assert (DateTimeTrigger, TimeDeltaTrigger) == (temporal.DateTimeTrigger,
                                                   temporal.TimeDeltaTrigger)
    assert FileTrigger is file.FileTrigger
    assert (WorkflowTrigger, DagStateTrigger) == (external_task.WorkflowTrigger,
                                                  external_task.DagStateTrigger)
    assert TimeDeltaSensorAsync is time_delta.TimeDeltaSensorAsync
    assert (DateTimeSensorAsync, TimeSensorAsync) == (date_time.DateTimeSensorAsync,
                                                      date_time.TimeSensorAsync)
    # the Airflow class path of a trigger rebuilds Squall's class under the compat layer
    module, _, name = "airflow.triggers.temporal.DateTimeTrigger".rpartition(".")
    assert getattr(importlib.import_module(module), name) is temporal.DateTimeTrigger


def test_submodules_are_reachable_as_attributes(installed: None) -> None:
    import airflow

    assert airflow.models.dag.DAG is DAG
    assert airflow.utils.trigger_rule.TriggerRule is TriggerRule
    from airflow.models import baseoperator

    assert baseoperator is sys.modules["airflow.models.baseoperator"]


def test_star_import(installed: None) -> None:
    namespace: dict[str, object] = {}
    exec("from airflow.exceptions import *", namespace)
    assert namespace["AirflowSkipException"] is errors.TaskSkipped
    assert "PythonVirtualenvOperator" not in namespace


# --------------------------------------------------------------------------- unsupported imports


@pytest.mark.parametrize(
    ("statement", "feature"),
    [
        ("import airflow.providers.http.operators.http", "provider packages are not supported"),
        ("import airflow.providers", "provider packages are not supported"),
        ("from airflow.providers.amazon.aws.hooks.s3 import S3Hook", "provider packages"),
        ("from airflow.hooks.dbapi import DbApiHook", "database hooks come from providers"),
        ("import airflow.hooks.filesystem", "FSHook is not supported"),
        ("from airflow.models.xcom import XCom", "the XCom model is not supported"),
        ("import airflow.datasets.manager", "does not provide it"),
        ("from airflow.operators.subdag import SubDagOperator",
         "SubDagOperator (deprecated in Airflow 2, removed in 3) is not supported: use a "
         "TaskGroup"),
        ("from airflow.operators.generic_transfer import GenericTransfer",
         "GenericTransfer needs database hooks from providers"),
        # unknown to the table: the short message
        ("import airflow.decorators.python", "does not provide it"),
    ],
)
def test_unsupported_module(installed: None, statement: str, feature: str) -> None:
    with pytest.raises(ImportError) as info:
        exec(statement, {})
    message = str(info.value)
    assert "No module named" in message and feature in message
    # one line, pointing at the documentation, never the list of everything supported
    assert "\n" not in message and "docs/airflow-compat.md" in message
    assert len(message) < 250, message


@pytest.mark.parametrize(
    ("statement", "feature"),
    [
        ("from airflow.models import XCom", "the XCom model is not supported"),
        ("from airflow.datasets import DatasetManager", "does not provide it"),
        ("from airflow import providers", "provider packages are not supported"),
        ("from airflow.utils.dates import cron_presets", "does not provide it"),
        ("from airflow.exceptions import AirflowNotFoundException", "does not provide it"),
        ("from airflow.operators.python import PythonVirtualenvOperatorX", "does not provide it"),
    ],
)
def test_unsupported_attribute(installed: None, statement: str, feature: str) -> None:
    with pytest.raises(ImportError) as info:
        exec(statement, {})
    message = str(info.value)
    assert "cannot import name" in message and feature in message
    assert "\n" not in message and "docs/airflow-compat.md" in message
    assert len(message) < 250, message


def test_unsupported_attribute_access(installed: None) -> None:
    import airflow.models

    with pytest.raises(ImportError, match="the XCom model is not supported"):
        _ = airflow.models.XCom


def test_private_and_dunder_names_are_plain_attribute_errors(installed: None) -> None:
    import airflow.operators.python

    # tools probe modules with hasattr/getattr(default): they must keep working
    assert not hasattr(airflow.operators.python, "__file__")
    assert getattr(airflow.operators.python, "__wrapped__", None) is None
    assert not hasattr(airflow.operators.python, "_private")
    # and so must inspect.getmodule, which walks sys.modules
    import inspect

    assert (
        inspect.getmodule(test_private_and_dunder_names_are_plain_attribute_errors)
        is sys.modules[__name__]
    )


def test_nothing_is_provided_without_install() -> None:
    with pytest.raises(ImportError):
        import airflow  # noqa: F401


# --------------------------------------------------------------------------- real airflow


def test_refuses_when_a_real_airflow_is_importable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "airflow"
    package.mkdir()
    (package / "__init__.py").write_text("__version__ = '2.9.0'\n")
    importlib.invalidate_caches()
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])

    with pytest.raises(AirflowCompatError) as info:
        compat.install()
    assert isinstance(info.value, SquallError)
    message = str(info.value)
    assert f"a real Apache Airflow is installed at {package}" in message
    assert "[core] airflow_compat = false" in message
    assert not compat.is_installed()
    assert "airflow" not in sys.modules


def test_refuses_when_a_real_airflow_is_already_imported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = ModuleType("airflow")
    fake.__file__ = str(tmp_path / "site-packages" / "airflow" / "__init__.py")
    monkeypatch.setitem(sys.modules, "airflow", fake)
    with pytest.raises(AirflowCompatError, match="site-packages"):
        compat.install()
    assert not compat.is_installed()


def test_bare_airflow_directory_is_not_a_real_airflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a directory named airflow without __init__.py (say, a folder of DAG files) would be
    # a namespace package, not an Airflow installation
    (tmp_path / "airflow").mkdir()
    importlib.invalidate_caches()
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    compat.install()
    import airflow

    assert airflow.DAG is DAG


# --------------------------------------------------------------------------- days_ago


def test_days_ago() -> None:
    now = pendulum.datetime(2024, 3, 1, 15, 42, 7, 123456, tz="UTC")

    def days_ago(n: int, **kwargs: int) -> pendulum.DateTime:
        return compat.days_ago_from(now, n, **kwargs)

    assert days_ago(0) == pendulum.datetime(2024, 3, 1, tz="UTC")
    # across a month end in a leap year
    assert days_ago(1) == pendulum.datetime(2024, 2, 29, tz="UTC")
    assert days_ago(2) == pendulum.datetime(2024, 2, 28, tz="UTC")
    assert days_ago(1, hour=6, minute=30) == pendulum.datetime(2024, 2, 29, 6, 30, tz="UTC")
    assert days_ago(0, hour=1, minute=2, second=3, microsecond=4) == pendulum.datetime(
        2024, 3, 1, 1, 2, 3, 4, tz="UTC"
    )
    result = days_ago(3)
    assert result.utcoffset() == timedelta(0)
    assert (result.hour, result.minute, result.second, result.microsecond) == (0, 0, 0, 0)


def test_days_ago_uses_the_current_utc_date(installed: None) -> None:
    from airflow.utils.dates import days_ago

    before = pendulum.now("UTC")
    result = days_ago(1)
    after = pendulum.now("UTC")
    assert result.utcoffset() == timedelta(0)
    assert result.date() in {before.date() - timedelta(days=1), after.date() - timedelta(days=1)}
    assert result.time().isoformat() == "00:00:00"


# --------------------------------------------------------------------------- end to end

AIRFLOW_DAG_FILE = '''
"""An Airflow 2 DAG file, unchanged."""
from datetime import timedelta

from airflow import DAG
from airflow.decorators import task
from airflow.exceptions import AirflowSkipException
from airflow.models.baseoperator import chain
from airflow.operators.bash import BashOperator
from airflow.operators.empty import EmptyOperator
from airflow.operators.python import PythonOperator
from airflow.utils.dates import days_ago
from airflow.utils.task_group import TaskGroup
from airflow.utils.trigger_rule import TriggerRule

default_args = {"owner": "data", "retries": 2, "retry_delay": timedelta(minutes=1)}


def maybe_skip(**context):
    raise AirflowSkipException("nothing to do today")


with DAG(
    dag_id="airflow_style",
    default_args=default_args,
    schedule_interval="@daily",
    start_date=days_ago(2),
    catchup=False,
    tags=["compat"],
) as dag:
    start = BashOperator(task_id="start", bash_command="echo start")
    skipper = PythonOperator(task_id="maybe_skip", python_callable=maybe_skip)
    always = BashOperator(task_id="always", bash_command="echo always")

    @task
    def summarize(value: int) -> int:
        return value + 1

    with TaskGroup("load") as load:
        first = EmptyOperator(task_id="first")
        second = EmptyOperator(task_id="second")
        first >> second

    join = EmptyOperator(
        task_id="join", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
    )
    done = BashOperator(task_id="done", bash_command="echo done", trigger_rule="all_done")

    start >> [skipper, always]
    [skipper, always] >> join
    chain(join, load, done)
    summary = summarize(41)
    done >> summary
'''


def _import_file(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def test_airflow_dag_file_loads_unchanged(installed: None, tmp_path: Path) -> None:
    path = tmp_path / "airflow_style.py"
    path.write_text(AIRFLOW_DAG_FILE)
    with pytest.warns(DeprecatedArgumentWarning, match="schedule_interval is deprecated"):
        module = _import_file(path, "squall_test_airflow_style_dag")

    dag = module.dag
    assert isinstance(dag, DAG)
    assert dag.dag_id == "airflow_style"
    assert dag.fileloc == str(path)
    assert dag.catchup is False
    assert dag.tags == ["compat"]
    assert dag.start_date is not None
    assert dag.start_date.utcoffset() == timedelta(0)
    assert dag.start_date.time().isoformat() == "00:00:00"

    assert sorted(dag.task_ids) == sorted(
        ["start", "maybe_skip", "always", "load.first", "load.second", "join", "done", "summarize"]
    )

    def up(task_id: str) -> set[str]:
        return set(dag.get_task(task_id).upstream_task_ids)

    assert up("start") == set()
    assert up("maybe_skip") == {"start"}
    assert up("always") == {"start"}
    assert up("join") == {"maybe_skip", "always"}
    assert up("load.first") == {"join"}
    assert up("load.second") == {"load.first"}
    assert up("done") == {"load.second"}
    assert up("summarize") == {"done"}
    dag.validate()

    rules = {t.task_id: t.trigger_rule for t in dag.tasks}
    assert rules["join"] is TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
    assert rules["done"] is TriggerRule.ALL_DONE
    assert rules["start"] is TriggerRule.ALL_SUCCESS

    # default_args apply as in Airflow
    start = dag.get_task("start")
    assert start.owner == "data"
    assert start.retries == 2
    assert start.retry_delay == timedelta(minutes=1)

    # the operators are Squall's
    from squall.sdk.operators.bash import BashOperator
    from squall.sdk.operators.python import PythonOperator

    assert type(start) is BashOperator
    skipper = dag.get_task("maybe_skip")
    assert isinstance(skipper, PythonOperator)

    # raising AirflowSkipException in the callable raises Squall's TaskSkipped
    with pytest.raises(errors.TaskSkipped, match="nothing to do today"):
        skipper.python_callable()


# --------------------------------------------------------------------------- issue 24 helpers


def test_airflow_macros_module(installed: None) -> None:
    """airflow/macros/__init__.py: ds_add, ds_format and the modules it re-exports."""
    from airflow import macros

    assert macros.ds_add("2015-01-06", -5) == "2015-01-01"
    assert macros.ds_format("1/5/2015", "%m/%d/%Y", "%Y-%m-%d") == "2015-01-05"
    assert macros.datetime(2024, 1, 1) + macros.timedelta(days=1) == macros.datetime(2024, 1, 2)
    assert callable(macros.random) and macros.uuid.uuid4()
    assert macros.dateutil.relativedelta is not None


def test_airflow_utils_timezone(installed: None) -> None:
    """airflow/utils/timezone.py: naive values are read in the default time zone."""
    import datetime as dt

    from airflow.utils import timezone

    now = timezone.utcnow()
    assert now.tzinfo is not None and now.utcoffset() == dt.timedelta(0)
    assert timezone.datetime(2024, 1, 1).tzinfo is not None
    aware = timezone.make_aware(dt.datetime(2024, 1, 1, 12), pendulum.timezone("Europe/Paris"))
    assert aware is not None and aware.utcoffset() == dt.timedelta(hours=1)
    with pytest.raises(ValueError, match="make_aware expects a naive datetime"):
        timezone.make_aware(aware)
    assert timezone.convert_to_utc(dt.datetime(2024, 1, 1)) == pendulum.datetime(2024, 1, 1)
    assert timezone.make_naive(pendulum.datetime(2024, 1, 1, 12), pendulum.timezone(
        "Europe/Paris")) == dt.datetime(2024, 1, 1, 13)
    assert timezone.is_naive(dt.datetime(2024, 1, 1)) and timezone.is_localized(now)
    assert timezone.parse("2024-01-01T10:00:00") == pendulum.datetime(2024, 1, 1, 10)


def test_deprecated_helpers_chain(installed: None) -> None:
    """airflow/utils/helpers.py: chain / cross_downstream still there, deprecated."""
    from airflow import DAG
    from airflow.operators.empty import EmptyOperator
    from airflow.utils.helpers import chain

    with DAG("h", start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
        a, b = EmptyOperator(task_id="a"), EmptyOperator(task_id="b")
        with pytest.warns(Warning, match="airflow.utils.helpers.chain is deprecated"):
            chain(a, b)
    assert a.downstream_task_ids == {"b"}


def test_get_current_context_is_the_running_tasks(installed: None) -> None:
    from airflow.operators.python import get_current_context

    from squall.sdk.current_context import set_current_context

    with set_current_context({"ds": "2024-01-01"}):
        assert get_current_context()["ds"] == "2024-01-01"
