"""How an operator's keyword arguments get their ``default_args`` (of the DAG, the enclosing
task groups and the ``default_args`` argument) and their merged ``params``, before its
``__init__`` runs (:mod:`squall.sdk.operators.base`'s metaclass, and ``Operator.partial``)."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from squall.sdk.params import ParamsDict

if TYPE_CHECKING:
    from squall.sdk.dag import DAG

__all__ = ["accepted_params", "merged_default_args"]


def accepted_params(cls: type) -> set[str]:
    """The keyword arguments the ``__init__`` of ``cls`` and its bases accept."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        init = getattr(init, "__wrapped__", init)
        for p in inspect.signature(init).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                names.add(p.name)
    return names


def merged_default_args(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the ``default_args`` (of the DAG, the enclosing task groups and the
    ``default_args`` argument) that ``cls`` accepts filled in where missing, and ``params``
    merged as Airflow's ``get_merged_defaults`` (:func:`_merged_params`)."""
    from squall.sdk.dag import DagContext
    from squall.sdk.taskgroup import TaskGroupContext

    dag = kwargs.get("dag") or DagContext.current()
    group = kwargs.get("task_group")
    if group is None and dag is not None:
        group = TaskGroupContext.current(dag)
    merged: dict[str, Any] = {}
    if group is not None:
        merged.update(group.merged_default_args())
    elif dag is not None:
        merged.update(dag.default_args)
    merged.update(kwargs.pop("default_args", None) or {})
    default_params = merged.pop("params", None)
    if merged:
        accepted = accepted_params(cls)
        for key, value in merged.items():
            if key in accepted and key not in kwargs:
                kwargs[key] = value
    if dag is not None or default_params or kwargs.get("params"):
        kwargs["params"] = _merged_params(dag, kwargs.get("params"), default_params)
    return kwargs


def _merged_params(dag: DAG | None, params: Mapping[str, Any] | None,
                   default_params: Mapping[str, Any] | None) -> ParamsDict:
    """A task's params as Airflow's ``get_merged_defaults``: a copy of the DAG's, updated
    with the task's own, then with its ``default_args["params"]``."""
    merged = copy.deepcopy(dag.params) if dag is not None else ParamsDict()
    for layer in (params, default_params):
        if layer:
            merged.update(layer)
    return merged
