"""What Squall's Airflow compatibility layer knowingly does not provide, and the one-line
error a DAG file that imports it gets (:mod:`squall.compat.airflow` raises it).

:data:`UNSUPPORTED_MODULES` maps an ``airflow`` module (and everything below it) to the
feature it stands for; :data:`UNSUPPORTED_NAMES` does the same for a name imported from a
module Squall does provide. Anything else under ``airflow`` gets a short message pointing
at ``docs/airflow-compat.md``.
"""

from __future__ import annotations

import logging
from typing import Final

log = logging.getLogger(__name__)

__all__ = ["UNSUPPORTED_MODULES", "UNSUPPORTED_NAMES", "attribute_message", "module_message"]

DOCS: Final = "docs/airflow-compat.md"

_PROVIDERS: Final = ("provider packages are not supported: call the service's client "
                     "library from a @task or PythonOperator")
_INTERNALS: Final = "Airflow's internals are not part of the authoring API Squall provides"

#: module (or package prefix) -> the feature, in words
UNSUPPORTED_MODULES: Final[dict[str, str]] = {
    "airflow.operators.subdag": ("SubDagOperator (deprecated in Airflow 2, removed in 3) is "
                                 "not supported: use a TaskGroup"),
    "airflow.operators.generic_transfer": ("GenericTransfer needs database hooks from "
                                           "providers, which Squall does not ship"),
    "airflow.operators.sql": ("SQL operators need database hooks from providers, which "
                              "Squall does not ship"),
    "airflow.providers": _PROVIDERS,
    "airflow.contrib": "Airflow 1's airflow.contrib modules are not supported",
    "airflow.hooks.dbapi": "database hooks come from providers, which Squall does not ship",
    "airflow.hooks.filesystem": "FSHook is not supported: read the path in a task",
    "airflow.hooks.subprocess": "SubprocessHook is not supported: use subprocess in a task",
    "airflow.listeners": "Airflow listeners are not supported",
    "airflow.lineage": "Airflow lineage backends are not supported",
    "airflow.notifications": "notifiers are not supported: use a callback function",
    "airflow.io": "Airflow ObjectStoragePath (airflow.io) is not supported",
    "airflow.executors": _INTERNALS,
    "airflow.jobs": _INTERNALS,
    "airflow.api": _INTERNALS,
    "airflow.api_connexion": _INTERNALS,
    "airflow.www": _INTERNALS,
    "airflow.settings": _INTERNALS,
    "airflow.utils.session": _INTERNALS,
    "airflow.utils.db": _INTERNALS,
    "airflow.models.xcom": "the XCom model is not supported: use ti.xcom_push / xcom_pull",
    "airflow.models.dagrun": "the DagRun model is not supported: use the context's dag_run",
    "airflow.models.dagbag": "DagBag is not supported: Squall loads DAG files itself",
    "airflow.models.pool": "the Pool model is not supported: manage pools with squall pools",
    "airflow.sensors.sql": ("SqlSensor needs database hooks from providers, which Squall does "
                            "not ship"),
}

#: (module, name) -> the feature, for names imported from a module Squall provides
UNSUPPORTED_NAMES: Final[dict[tuple[str, str], str]] = {
    ("airflow.models", "XCom"): UNSUPPORTED_MODULES["airflow.models.xcom"],
    ("airflow.models", "DagRun"): UNSUPPORTED_MODULES["airflow.models.dagrun"],
    ("airflow.models", "DagBag"): UNSUPPORTED_MODULES["airflow.models.dagbag"],
    ("airflow.models", "Pool"): UNSUPPORTED_MODULES["airflow.models.pool"],
}


def _feature_of_module(fullname: str) -> str | None:
    """The feature of ``fullname`` or of the nearest package above it in the table."""
    name = fullname
    while name:
        if name in UNSUPPORTED_MODULES:
            return UNSUPPORTED_MODULES[name]
        name = name.rpartition(".")[0]
    return None


def module_message(fullname: str) -> str:
    """The one-line error of ``import fullname``."""
    feature = _feature_of_module(fullname)
    if feature is not None:
        return f"No module named {fullname!r}: {feature} (see {DOCS})"
    return (f"No module named {fullname!r}: Squall's Airflow compatibility layer does not "
            f"provide it (see {DOCS} for what it provides)")


def attribute_message(modname: str, attr: str) -> str:
    """The one-line error of ``from modname import attr``."""
    feature = UNSUPPORTED_NAMES.get((modname, attr)) or _feature_of_module(f"{modname}.{attr}")
    if feature is not None:
        return f"cannot import name {attr!r} from {modname!r}: {feature} (see {DOCS})"
    return (f"cannot import name {attr!r} from {modname!r}: Squall's Airflow compatibility "
            f"layer does not provide it (see {DOCS} for what it provides)")
