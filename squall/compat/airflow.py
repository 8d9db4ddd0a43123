"""The ``airflow`` import name, mapped onto Squall (``[core] airflow_compat = true``).

:func:`install` puts a meta path finder at the front of :data:`sys.meta_path` that answers
for ``airflow`` and a fixed set of its submodules, the core of Airflow 2's authoring API
(:data:`SUPPORTED_MODULES`). Each is a virtual module whose attributes are Squall's own
objects: ``airflow.operators.bash.BashOperator`` *is*
:class:`squall.sdk.operators.bash.BashOperator`, ``airflow.exceptions.AirflowSkipException``
*is* :class:`squall.common.errors.TaskSkipped` (so raising it in a task skips the task), and
so on. A DAG file that uses only these runs unchanged.

The modules are built lazily: a Squall module is imported when the ``airflow`` module that
maps onto it is imported, not by :func:`install`.

Anything else under ``airflow`` (``airflow.providers...``, ``from airflow.models import
XCom``) raises :class:`ImportError` in one line naming the feature it stands for
(:mod:`squall.compat.airflow_unsupported`), or, for a name Squall knows nothing about,
pointing at ``docs/airflow-compat.md``.

:func:`install` refuses (:class:`AirflowCompatError`) when a real Apache Airflow is importable:
Squall never shadows it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import logging
import sys
import threading
import types
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Final

import pendulum

from squall.common.errors import AirflowCompatError
from squall.compat.airflow_authoring import AUTHORING_MODULES, AUTHORING_PACKAGES
from squall.compat.airflow_deferral import DEFERRAL_MODULES, DEFERRAL_PACKAGES
from squall.compat.airflow_unsupported import attribute_message, module_message

log = logging.getLogger(__name__)

__all__ = [
    "PACKAGES",
    "SUPPORTED_MODULES",
    "AirflowCompatError",
    "AirflowCompatFinder",
    "days_ago",
    "days_ago_from",
    "install",
    "is_installed",
    "supported_summary",
    "uninstall",
]

#: ``airflow`` module name -> {attribute: "squall.module:attribute"}.
SUPPORTED_MODULES: Final[dict[str, dict[str, str]]] = {
    "airflow": {"DAG": "squall.sdk.dag:DAG"},
    "airflow.models": {
        "DAG": "squall.sdk.dag:DAG",
        "BaseOperator": "squall.sdk.operators.base:BaseOperator",
        "Variable": "squall.secrets.variables:Variable",
        "Connection": "squall.secrets.connections:Connection",
        "Param": "squall.sdk.params:Param",
    },
    "airflow.models.variable": {"Variable": "squall.secrets.variables:Variable"},
    "airflow.models.param": {
        "Param": "squall.sdk.params:Param",
        "ParamsDict": "squall.sdk.params:ParamsDict",
        "DagParam": "squall.sdk.params:DagParam",
    },
    # deprecated in Airflow 2.10 (it warns and re-exports airflow.models.param's DagParam)
    "airflow.models.dagparam": {"DagParam": "squall.sdk.params:DagParam"},
    "airflow.models.connection": {"Connection": "squall.secrets.connections:Connection"},
    "airflow.models.mappedoperator": {"MappedOperator": "squall.sdk.mapping:MappedOperator"},
    "airflow.models.xcom_arg": {"XComArg": "squall.sdk.operators.base:XComArg"},
    "airflow.hooks": {},
    "airflow.hooks.base": {"BaseHook": "squall.sdk.hooks.base:BaseHook"},
    "airflow.models.dag": {
        "DAG": "squall.sdk.dag:DAG",
        "dag": "squall.sdk.dag:dag",
    },
    "airflow.models.baseoperator": {
        "BaseOperator": "squall.sdk.operators.base:BaseOperator",
        "chain": "squall.sdk.edges:chain",
        "cross_downstream": "squall.sdk.edges:cross_downstream",
    },
    "airflow.operators": {},
    "airflow.operators.bash": {"BashOperator": "squall.sdk.operators.bash:BashOperator"},
    "airflow.operators.python": {
        "PythonOperator": "squall.sdk.operators.python:PythonOperator",
        "BranchPythonOperator": "squall.sdk.operators.python:BranchPythonOperator",
        "ShortCircuitOperator": "squall.sdk.operators.python:ShortCircuitOperator",
    },
    "airflow.operators.empty": {"EmptyOperator": "squall.sdk.operators.empty:EmptyOperator"},
    "airflow.operators.dummy": {"DummyOperator": "squall.sdk.operators.dummy:DummyOperator"},
    # Airflow 1 module names that Airflow 2 still serves (deprecated there)
    "airflow.operators.bash_operator": {
        "BashOperator": "squall.sdk.operators.bash:BashOperator",
    },
    "airflow.operators.python_operator": {
        "PythonOperator": "squall.sdk.operators.python:PythonOperator",
        "BranchPythonOperator": "squall.sdk.operators.python:BranchPythonOperator",
        "ShortCircuitOperator": "squall.sdk.operators.python:ShortCircuitOperator",
    },
    "airflow.operators.dummy_operator": {
        "DummyOperator": "squall.sdk.operators.dummy:DummyOperator",
    },
    "airflow.operators.branch": {
        "BaseBranchOperator": "squall.sdk.operators.branch:BaseBranchOperator",
    },
    "airflow.operators.trigger_dagrun": {
        "TriggerDagRunOperator": "squall.sdk.operators.trigger_dagrun:TriggerDagRunOperator",
    },
    "airflow.operators.dagrun_operator": {
        "TriggerDagRunOperator": "squall.sdk.operators.trigger_dagrun:TriggerDagRunOperator",
    },
    "airflow.operators.latest_only": {
        "LatestOnlyOperator": "squall.sdk.operators.latest_only:LatestOnlyOperator",
    },
    "airflow.operators.latest_only_operator": {
        "LatestOnlyOperator": "squall.sdk.operators.latest_only:LatestOnlyOperator",
    },
    "airflow.operators.email": {"EmailOperator": "squall.sdk.operators.email:EmailOperator"},
    "airflow.operators.email_operator": {
        "EmailOperator": "squall.sdk.operators.email:EmailOperator",
    },
    "airflow.utils.email": {
        "send_email": "squall.sdk.email:send_email",
        "get_email_address_list": "squall.sdk.email:get_email_address_list",
    },
    "airflow.decorators": {
        "dag": "squall.sdk.decorators:dag",
        "task": "squall.sdk.decorators:task",
        "task_group": "squall.sdk.decorators:task_group",
        "setup": "squall.sdk.setup_teardown:setup",
        "teardown": "squall.sdk.setup_teardown:teardown",
    },
    "airflow.decorators.setup_teardown": {
        "setup_task": "squall.sdk.setup_teardown:setup",
        "teardown_task": "squall.sdk.setup_teardown:teardown",
    },
    "airflow.exceptions": {
        "AirflowSkipException": "squall.common.errors:TaskSkipped",
        "AirflowFailException": "squall.common.errors:TaskFailedNoRetry",
        "AirflowSensorTimeout": "squall.common.errors:SensorTimeout",
        "AirflowTaskTimeout": "squall.common.errors:TaskTimedOut",
        "AirflowException": "squall.common.errors:SquallError",
        "TaskDeferred": "squall.common.errors:TaskDeferred",
        "TaskDeferralError": "squall.common.errors:TaskDeferralError",
        "ParamValidationError": "squall.common.errors:ParamValidationError",
        "RemovedInAirflow3Warning": "squall.sdk.deprecation:DeprecatedArgumentWarning",
    },
    "airflow.utils": {},
    "airflow.utils.trigger_rule": {"TriggerRule": "squall.sdk.trigger_rule:TriggerRule"},
    "airflow.utils.task_group": {"TaskGroup": "squall.sdk.taskgroup:TaskGroup"},
    "airflow.utils.dates": {"days_ago": "squall.compat.airflow:days_ago"},
    "airflow.utils.state": {
        "State": "squall.compat.airflow_utils:State",
        "TaskInstanceState": "squall.common.state:TaskInstanceState",
        "DagRunState": "squall.common.state:DagRunState",
    },
    "airflow.utils.decorators": {"apply_defaults": "squall.compat.airflow_utils:apply_defaults"},
    "airflow.configuration": {"conf": "squall.compat.airflow_utils:conf"},
    "airflow.sensors": {},
    "airflow.sensors.base": {
        "BaseSensorOperator": "squall.sdk.sensors.base:BaseSensorOperator",
        "PokeReturnValue": "squall.sdk.sensors.base:PokeReturnValue",
    },
    "airflow.sensors.base_sensor_operator": {
        "BaseSensorOperator": "squall.sdk.sensors.base:BaseSensorOperator",
    },
    "airflow.sensors.external_task": {
        "ExternalTaskSensor": "squall.sdk.sensors.external_task:ExternalTaskSensor",
        "ExternalTaskMarker": "squall.sdk.sensors.external_task:ExternalTaskMarker",
    },
    "airflow.sensors.external_task_sensor": {
        "ExternalTaskSensor": "squall.sdk.sensors.external_task:ExternalTaskSensor",
        "ExternalTaskMarker": "squall.sdk.sensors.external_task:ExternalTaskMarker",
    },
    "airflow.sensors.python": {"PythonSensor": "squall.sdk.sensors.python:PythonSensor"},
    "airflow.sensors.filesystem": {"FileSensor": "squall.sdk.sensors.filesystem:FileSensor"},
    "airflow.sensors.time_delta": {
        "TimeDeltaSensor": "squall.sdk.sensors.time_delta:TimeDeltaSensor",
    },
    # ---- issue 24: the rest of Airflow 2.10's core authoring surface
    "airflow.operators.smooth": {"SmoothOperator": "squall.sdk.operators.smooth:SmoothOperator"},
    "airflow.sensors.time_sensor": {"TimeSensor": "squall.sdk.sensors.date_time:TimeSensor"},
    "airflow.sensors.date_time": {
        "DateTimeSensor": "squall.sdk.sensors.date_time:DateTimeSensor",
    },
    "airflow.sensors.weekday": {
        "DayOfWeekSensor": "squall.sdk.sensors.weekday:DayOfWeekSensor",
    },
    "airflow.sensors.bash": {"BashSensor": "squall.sdk.sensors.bash:BashSensor"},
    "airflow.macros": {
        name: f"squall.sdk.macros:{name}"
        for name in ("ds_add", "ds_format", "datetime", "timedelta", "dateutil", "json",
                     "time", "uuid", "random", "datetime_diff_for_humans")
    },
    "airflow.utils.timezone": {
        name: f"squall.compat.airflow_timezone:{name}"
        for name in ("utc", "utcnow", "datetime", "convert_to_utc", "make_aware",
                     "make_naive", "is_localized", "is_naive", "parse", "coerce_datetime")
    },
    "airflow.utils.context": {"Context": "squall.sdk.operators.base:Context"},
    "airflow.models.taskinstance": {
        "TaskInstance": "squall.sdk.runtime:RuntimeTaskInstance",
    },
    "airflow.utils.helpers": {
        "chain": "squall.compat.airflow_utils:deprecated_chain",
        "cross_downstream": "squall.compat.airflow_utils:deprecated_cross_downstream",
    },
}
SUPPORTED_MODULES["airflow.operators.python"]["get_current_context"] = (
    "squall.sdk.current_context:get_current_context")
SUPPORTED_MODULES["airflow.models"]["TaskInstance"] = "squall.sdk.runtime:RuntimeTaskInstance"

for _name, _attrs in AUTHORING_MODULES.items():
    SUPPORTED_MODULES.setdefault(_name, {}).update(_attrs)
for _name, _attrs in DEFERRAL_MODULES.items():
    SUPPORTED_MODULES.setdefault(_name, {}).update(_attrs)

#: the supported modules that are packages in Airflow (they get ``__path__ = []``)
PACKAGES: Final[frozenset[str]] = frozenset(
    {
        "airflow",
        "airflow.models",
        "airflow.hooks",
        "airflow.operators",
        "airflow.utils",
        "airflow.sensors",
        "airflow.decorators",
        "airflow.macros",
    }
) | AUTHORING_PACKAGES | DEFERRAL_PACKAGES

_ORIGIN: Final = "squall.compat.airflow"
_ROOT: Final = "airflow"


# --------------------------------------------------------------------------- airflow.utils.dates


def days_ago(
    n: int, hour: int = 0, minute: int = 0, second: int = 0, microsecond: int = 0
) -> pendulum.DateTime:
    """Today (UTC) at ``hour:minute:second.microsecond`` (midnight by default), minus ``n`` days.

    Airflow 2's ``airflow.utils.dates.days_ago``; the result is an aware UTC datetime.
    """
    return days_ago_from(pendulum.now("UTC"), n, hour=hour, minute=minute, second=second,
                         microsecond=microsecond)


def days_ago_from(
    now: pendulum.DateTime, n: int, hour: int = 0, minute: int = 0, second: int = 0,
    microsecond: int = 0,
) -> pendulum.DateTime:
    """:func:`days_ago` counted from ``now`` (a UTC time) instead of the current time."""
    today = now.replace(hour=hour, minute=minute, second=second, microsecond=microsecond)
    return today - timedelta(days=n)


# --------------------------------------------------------------------------- messages


def _is_airflow_name(fullname: str) -> bool:
    return fullname == _ROOT or fullname.startswith(_ROOT + ".")


def supported_summary() -> str:
    """What the compatibility layer provides, ``module (attributes)`` for each module that has
    attributes (the bare packages ``airflow.operators`` ... only hold those modules)."""
    return "; ".join(
        f"{name} ({', '.join(sorted(attrs))})"
        for name, attrs in sorted(SUPPORTED_MODULES.items())
        if attrs
    )


def _module_not_supported(fullname: str) -> ModuleNotFoundError:
    return ModuleNotFoundError(module_message(fullname), name=fullname)


def _attribute_not_supported(modname: str, attr: str) -> ImportError:
    return ImportError(attribute_message(modname, attr), name=modname)


# --------------------------------------------------------------------------- finder / loader


def _resolve(target: str) -> object:
    """``"squall.module:attr"`` -> the object (importing the module)."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _make_getattr(modname: str) -> Callable[[str], object]:
    """The module ``__getattr__`` (PEP 562) of the virtual module ``modname``.

    A supported submodule is imported on first access; any other public name raises
    :class:`ImportError` naming what is supported. Private and dunder names raise
    :class:`AttributeError`, as tools probing modules (``hasattr(m, "__file__")``) expect.
    """

    def __getattr__(name: str) -> object:  # noqa: N807 - PEP 562 module hook
        child = f"{modname}.{name}"
        if child in SUPPORTED_MODULES:
            return importlib.import_module(child)
        if name.startswith("_"):
            raise AttributeError(f"module {modname!r} has no attribute {name!r}")
        raise _attribute_not_supported(modname, name)

    return __getattr__


class AirflowCompatFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and builds the virtual ``airflow`` modules; refuses every other ``airflow.*``."""

    def __init__(self) -> None:
        #: every module this loader executed, by name (uninstall removes them)
        self.created: dict[str, types.ModuleType] = {}

    # MetaPathFinder -------------------------------------------------------------------

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not _is_airflow_name(fullname):
            return None
        if fullname not in SUPPORTED_MODULES:
            log.debug("airflow compat: refusing unsupported module %s", fullname)
            raise _module_not_supported(fullname)
        return importlib.machinery.ModuleSpec(
            fullname, self, origin=_ORIGIN, is_package=fullname in PACKAGES
        )

    def invalidate_caches(self) -> None:
        return None

    # Loader ---------------------------------------------------------------------------

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return types.ModuleType(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        name = module.__name__
        attrs = SUPPORTED_MODULES[name]
        module.__doc__ = (
            f"Squall's stand-in for Airflow's {name} (Squall's Airflow compatibility layer)."
        )
        for attr, target in attrs.items():
            setattr(module, attr, _resolve(target))
        setattr(module, "__all__", sorted(attrs))  # noqa: B010 - a module's own attribute
        setattr(module, "__getattr__", _make_getattr(name))  # noqa: B010
        self.created[name] = module
        log.debug(
            "airflow compat: built %s from %s",
            name,
            ", ".join(sorted({t.partition(":")[0] for t in attrs.values()})) or "nothing",
        )


_FINDER: Final = AirflowCompatFinder()
_lock = threading.Lock()


# --------------------------------------------------------------------------- install


def _real_airflow_location() -> str | None:
    """Where a real Airflow would be imported from (ignoring our finder), or None."""
    loaded = sys.modules.get(_ROOT)
    if loaded is not None:
        loaded_spec = getattr(loaded, "__spec__", None)
        if loaded_spec is None or loaded_spec.loader is not _FINDER:
            # imported already, by something other than us
            return str(
                getattr(loaded, "__file__", None)
                or getattr(loaded_spec, "origin", None)
                or "<already imported>"
            )
    spec = importlib.machinery.PathFinder.find_spec(_ROOT)
    if spec is None:
        return None
    if spec.origin is None or not spec.has_location:
        # a namespace package: a bare directory named "airflow" on sys.path, not an Airflow
        log.warning(
            "airflow compat: a directory named airflow without __init__.py is on "
            "sys.path (%s); it is not an Airflow installation and will be shadowed",
            ", ".join(spec.submodule_search_locations or []),
        )
        return None
    origin = Path(spec.origin)
    return str(origin.parent if spec.submodule_search_locations is not None else origin)


def install() -> None:
    """Provide the ``airflow`` import name (idempotent).

    Raises :class:`AirflowCompatError` when a real Apache Airflow is importable.
    """
    with _lock:
        if _FINDER in sys.meta_path:
            return
        location = _real_airflow_location()
        if location is not None:
            raise AirflowCompatError(
                f"a real Apache Airflow is installed at {location}; Squall will not shadow it: "
                "uninstall it or set [core] airflow_compat = false"
            )
        sys.meta_path.insert(0, _FINDER)
        log.info(
            "airflow compat: installed the airflow import name (%d modules)", len(SUPPORTED_MODULES)
        )


def uninstall() -> None:
    """Remove the finder and every ``airflow`` module it put in :data:`sys.modules`."""
    with _lock:
        was_installed = _FINDER in sys.meta_path
        while _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
        for name, module in list(_FINDER.created.items()):
            if sys.modules.get(name) is module:
                del sys.modules[name]
        for name, module in list(sys.modules.items()):
            if (
                _is_airflow_name(name)
                and getattr(getattr(module, "__spec__", None), "loader", None) is _FINDER
            ):
                del sys.modules[name]
        _FINDER.created.clear()
        if was_installed:
            log.info("airflow compat: uninstalled the airflow import name")


def is_installed() -> bool:
    """True while the finder is on :data:`sys.meta_path`."""
    return _FINDER in sys.meta_path
