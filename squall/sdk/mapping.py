"""Dynamic task mapping (Airflow 2.3+): one task, one task instance per item of a list.

``Operator.partial(**fixed).expand(**lists)``, ``.expand_kwargs(list_of_dicts)`` and the
TaskFlow ``@task`` ``.partial(...)`` / ``.expand(...)`` / ``.expand_kwargs(...)`` make a
:class:`MappedOperator`: a task whose instances are made when the DAG runs, one per item of
what it is expanded over (a literal list or dict, or an upstream's return value, possibly
through ``XComArg.map(fn)`` / ``XComArg.zip(...)``; several expanded arguments give their
cross product). Each instance, with its ``map_index``, runs the real operator built by
:meth:`MappedOperator.unmap` from the fixed arguments and its own item.

The scheduler never imports DAG files, so :meth:`MappedOperator.expand_spec` describes the
expand input as JSON (literal lengths, references to upstream tasks) for
:mod:`squall.runs.mapping` to compute the number of instances from the database.
Airflow's references: ``airflow/models/mappedoperator.py``, ``expandinput.py``,
``xcom_arg.py``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from squall.common.errors import DagDefinitionError
from squall.sdk.dag_defaults import current_defaults
from squall.sdk.operators.base import BaseOperator, Context, XComArg, iter_xcom_args

log = logging.getLogger(__name__)

RETURN_VALUE_KEY = "return_value"

#: the template context's keys: a mapped @task's argument may not be one (Airflow's rule)
KNOWN_CONTEXT_KEYS = frozenset({
    "conf", "conn", "dag", "dag_run", "data_interval_end", "data_interval_start", "ds",
    "ds_nodash", "execution_date", "expanded_ti_count", "inlet_events", "inlets",
    "logical_date", "macros", "map_index_template", "next_ds", "next_ds_nodash",
    "next_execution_date", "outlet_events", "outlets",
    "params", "prev_data_interval_start_success", "prev_data_interval_end_success",
    "prev_ds", "prev_ds_nodash", "prev_execution_date", "prev_execution_date_success",
    "prev_start_date_success", "run_id", "task", "task_instance", "task_instance_key_str",
    "test_mode", "ti", "tomorrow_ds", "tomorrow_ds_nodash", "triggering_dataset_events",
    "ts", "ts_nodash", "ts_nodash_with_tz", "var", "yesterday_ds", "yesterday_ds_nodash",
})

#: BaseOperator's own arguments: what a MappedOperator keeps for scheduling
_MAPPED_BASE_SKIP = frozenset({"task_id", "dag", "task_group", "default_args"})


def is_mappable(value: Any) -> bool:
    """Airflow's ``is_mappable``: a list, a dict, or a reference to an upstream's result."""
    return isinstance(value, list | dict | XComArg)


# --------------------------------------------------------------------------- XComArg map / zip


class MapXComArg(XComArg):
    """``xcom_arg.map(fn)``: the upstream's items, each passed through ``fn``."""

    def __init__(self, arg: XComArg, callables: Sequence[Callable[[Any], Any]]) -> None:
        super().__init__(arg.operator, arg.key)
        self.arg = arg
        self.callables = list(callables)

    def __repr__(self) -> str:
        return f"MapXComArg({self.arg!r}, {len(self.callables)} callable(s))"

    @property
    def roots(self) -> list[BaseOperator]:
        return self.arg.roots

    @property
    def leaves(self) -> list[BaseOperator]:
        return self.arg.leaves

    def map(self, f: Callable[[Any], Any]) -> MapXComArg:
        return MapXComArg(self.arg, [*self.callables, _check_callable(f)])

    def resolve(self, context: Context) -> Any:
        value = self.arg.resolve(context)
        if not isinstance(value, Sequence | dict) or isinstance(value, str):
            raise ValueError(f"XCom map expects sequence or dict, not {type(value).__name__}")
        return MapResult(value, self.callables)

    def spec(self) -> dict[str, Any]:
        return {"type": "map", "arg": value_spec(self.arg)}


class ZipXComArg(XComArg):
    """``a.zip(b, c, fillvalue=...)``: tuples of the items at the same index, as far as the
    shortest (or, with a ``fillvalue``, the longest) goes."""

    _NOTSET: Any = object()

    def __init__(self, args: Sequence[XComArg], fillvalue: Any = _NOTSET) -> None:
        if not args:
            raise DagDefinitionError("zip() needs at least one XComArg")
        super().__init__(args[0].operator, args[0].key)
        self.args = list(args)
        self.fillvalue = fillvalue

    def __repr__(self) -> str:
        return f"ZipXComArg({self.args!r})"

    @property
    def roots(self) -> list[BaseOperator]:
        return [op for arg in self.args for op in arg.roots]

    @property
    def leaves(self) -> list[BaseOperator]:
        return [op for arg in self.args for op in arg.leaves]

    def resolve(self, context: Context) -> Any:
        values = [arg.resolve(context) for arg in self.args]
        for value in values:
            if not isinstance(value, Sequence | dict) or isinstance(value, str):
                raise ValueError(f"XCom zip expects sequence or dict, not {type(value).__name__}")
        return ZipResult(values, self.fillvalue)

    def spec(self) -> dict[str, Any]:
        return {"type": "zip", "args": [value_spec(a) for a in self.args],
                "fill": self.fillvalue is not ZipXComArg._NOTSET}


def _check_callable(f: Any) -> Callable[[Any], Any]:
    if not callable(f):
        raise DagDefinitionError(f"map() needs a callable, got {f!r}")
    if isinstance(f, XComArg) or hasattr(f, "expand"):
        raise DagDefinitionError("map() cannot take a task (a @task function); pass a plain "
                                 "function")
    return f


def xcom_arg_map(arg: XComArg, f: Callable[[Any], Any]) -> MapXComArg:
    if arg.key != RETURN_VALUE_KEY:
        raise DagDefinitionError(f"cannot map over XCom with custom key {arg.key!r} from "
                                 f"{arg.operator!r}")
    return MapXComArg(arg, [_check_callable(f)])


def xcom_arg_zip(arg: XComArg, *others: XComArg, fillvalue: Any = ZipXComArg._NOTSET
                 ) -> ZipXComArg:
    for other in (arg, *others):
        if not isinstance(other, XComArg):
            raise DagDefinitionError(f"zip() takes XComArgs, got {other!r}")
    return ZipXComArg([arg, *others], fillvalue)


class MapResult(Sequence[Any]):
    """The resolved value of a :class:`MapXComArg`: each item goes through the callables
    when it is read."""

    def __init__(self, value: Sequence[Any] | Mapping[Any, Any],
                 callables: Sequence[Callable[[Any], Any]]) -> None:
        self.value: Sequence[Any] = (list(value.items()) if isinstance(value, Mapping)
                                     else value)
        self.callables = callables

    def __len__(self) -> int:
        return len(self.value)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        item = self.value[index]
        for f in self.callables:
            item = f(item)
        return item


class ZipResult(Sequence[Any]):
    """The resolved value of a :class:`ZipXComArg`."""

    def __init__(self, values: Sequence[Any], fillvalue: Any) -> None:
        self.values = [list(v.items()) if isinstance(v, Mapping) else v for v in values]
        self.fillvalue = fillvalue

    def __len__(self) -> int:
        lengths = (len(v) for v in self.values)
        if self.fillvalue is ZipXComArg._NOTSET:
            return min(lengths, default=0)
        return max(lengths, default=0)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return tuple(v[index] if index < len(v) else self.fillvalue for v in self.values)


def value_spec(value: Any) -> dict[str, Any]:
    """The JSON description of one expanded value, for the scheduler."""
    if isinstance(value, MapXComArg | ZipXComArg):
        return value.spec()
    if isinstance(value, XComArg):
        return {"type": "xcom", "task_id": value.operator.task_id, "key": value.key}
    return {"type": "literal", "length": len(value)}


# --------------------------------------------------------------------------- expand inputs


def _check_value_mappable(owner: str, func: str, name: str, value: Any) -> None:
    if not is_mappable(value):
        raise DagDefinitionError(f"{owner}.{func}() got an unexpected type "
                                 f"{type(value).__name__!r} for keyword argument {name}")
    if type(value) is XComArg and value.key != RETURN_VALUE_KEY:
        raise DagDefinitionError(f"{owner}.{func}(): cannot map over XCom with custom key "
                                 f"{value.key!r} from {value.operator!r}")


class DictOfListsExpandInput:
    """``expand(a=[...], b=upstream)``: the cross product of the arguments' items (the last
    argument varies fastest, as in Airflow)."""

    kind = "dict"

    def __init__(self, value: Mapping[str, Any]) -> None:
        self.value = dict(value)

    def xcom_args(self) -> list[XComArg]:
        return [v for v in self.value.values() if isinstance(v, XComArg)] + [
            a for v in self.value.values() if not isinstance(v, XComArg)
            for a in iter_xcom_args(v)]

    def spec(self) -> dict[str, Any]:
        return {"type": "dict", "args": [[k, value_spec(v)] for k, v in self.value.items()]}

    def resolve(self, context: Context, map_index: int,
                from_xcom: set[int] | None = None) -> dict[str, Any]:
        """This instance's arguments; the ids of those read from XCom go to ``from_xcom``
        (they are data, not templates: Airflow's ``resolved_oids``)."""
        resolved = {k: (v.resolve(context) if isinstance(v, XComArg) else v)
                    for k, v in self.value.items()}
        lengths = {k: len(v) for k, v in resolved.items()}
        total = 1
        for n in lengths.values():
            total *= n
        if not 0 <= map_index < total:
            raise IndexError(f"map index {map_index} is over the mapped length {total}")
        out: dict[str, Any] = {}
        index = map_index
        for key in reversed(list(self.value)):
            length = lengths[key]
            out[key] = _item(resolved[key], index % length)
            index //= length
            if from_xcom is not None and isinstance(self.value[key], XComArg):
                from_xcom.add(id(out[key]))
        return out


class ListOfDictsExpandInput:
    """``expand_kwargs([{...}, {...}])`` or ``expand_kwargs(upstream)``: one instance per
    dict, the dict's items being the instance's arguments."""

    kind = "list"

    def __init__(self, value: Any) -> None:
        self.value = value

    def xcom_args(self) -> list[XComArg]:
        if isinstance(self.value, XComArg):
            return [self.value]
        return iter_xcom_args(self.value)

    def spec(self) -> dict[str, Any]:
        return {"type": "list", "value": value_spec(self.value)}

    def resolve(self, context: Context, map_index: int,
                from_xcom: set[int] | None = None) -> dict[str, Any]:
        whole = isinstance(self.value, XComArg)
        value = self.value.resolve(context) if whole else self.value
        item = value[map_index]
        if isinstance(item, XComArg):
            item = item.resolve(context)
            whole = True
        if not isinstance(item, Mapping):
            raise ValueError(f"expand_kwargs() expects a list[dict], not list["
                             f"{type(item).__name__}]")
        out: dict[str, Any] = {}
        for key, v in item.items():
            if not isinstance(key, str):
                raise ValueError(f"expand_kwargs() input dict keys must all be str, "
                                 f"but {key!r} is of type {type(key).__name__}")
            out[key] = v.resolve(context) if isinstance(v, XComArg) else v
            if from_xcom is not None and (whole or isinstance(v, XComArg)):
                from_xcom.add(id(out[key]))
        return out


ExpandInput = DictOfListsExpandInput | ListOfDictsExpandInput


def _item(value: Any, index: int) -> Any:
    if isinstance(value, Mapping):
        return next(itertools.islice(value.items(), index, None))
    return value[index]


# --------------------------------------------------------------------------- mapped operator


class MappedOperator(BaseOperator):
    """A task expanded into one task instance per item when its DAG runs.

    It carries every scheduling attribute (pool, retries, trigger rule, ...) from the
    fixed (``partial``) arguments; :meth:`unmap` builds the real operator of one instance.
    """

    #: the checks ``@task.run_if`` / ``@task.skip_if`` added to a mapped ``@task``: each
    #: instance makes them before it runs
    conditions: tuple[Any, ...] = ()

    is_mapped = True

    def __init__(self, *, operator_class: type[BaseOperator], partial_kwargs: dict[str, Any],
                 expand_input: ExpandInput, expand_into: str | None = None,
                 operator_name: str | None = None, **kwargs: Any) -> None:
        self.operator_class = operator_class
        self.partial_kwargs = partial_kwargs
        self.expand_input = expand_input
        #: the decorated-function case: the expanded arguments go into this dict argument
        self.expand_into = expand_into
        self._operator_name = operator_name or operator_class.__name__
        #: ``[core] max_map_length`` where the DAG file was loaded
        self.max_map_length = current_defaults().max_map_length
        super().__init__(**kwargs)
        self.template_fields = tuple(operator_class.template_fields)

    def __repr__(self) -> str:
        return f"<Mapped({self._operator_name}): {self.task_id}>"

    @property
    def operator_name(self) -> str:
        return self._operator_name

    def _set_xcomarg_dependencies(self) -> None:
        for arg in [*iter_xcom_args(self.partial_kwargs), *self.expand_input.xcom_args()]:
            for op in arg.roots:
                self.set_upstream(op)

    @property
    def mapped_spec(self) -> dict[str, Any]:
        """The expand input as JSON, for the scheduler (the serialized DAG's ``expand``)."""
        return self.expand_input.spec()

    def iter_mapped_dependencies(self) -> Iterator[str]:
        """The task ids whose return value this task is expanded over."""
        return iter(sorted(spec_task_ids(self.mapped_spec)))

    def execute(self, context: Context) -> Any:
        raise DagDefinitionError(f"task {self.task_id} is mapped: run one of its expanded "
                                 "task instances (a map index)")

    def unmap(self, context: Context, map_index: int) -> BaseOperator:
        """The real operator of instance ``map_index``: the fixed arguments plus this
        instance's items (XComArgs among them resolved from the upstreams' values)."""
        from_xcom: set[int] = set()
        mapped = self.expand_input.resolve(context, map_index, from_xcom)
        kwargs = dict(self.partial_kwargs)
        if self.expand_into is not None:
            kwargs[self.expand_into] = {**(kwargs.get(self.expand_into) or {}), **mapped}
        else:
            kwargs.update(mapped)
        kwargs["task_id"] = self.task_id
        for name in ("dag", "task_group", "default_args"):
            kwargs.pop(name, None)
        cls = self.operator_class
        op = cls.__new__(cls)
        op.__dict__["_squall_unmapping"] = True
        op.__init__(**kwargs)  # type: ignore[misc]
        op.__dict__.pop("_squall_unmapping", None)
        # the values read from XCom are data: rendering leaves them as they are
        op.__dict__["_squall_unrendered"] = (from_xcom, list(mapped.values()))
        op.__dict__["mapped_spec"] = self.mapped_spec  # it is one instance of a mapped task
        op.task_id = self.task_id
        op.dag = self.dag
        op.task_group = self.task_group
        op.upstream_task_ids = set(self.upstream_task_ids)
        op.downstream_task_ids = set(self.downstream_task_ids)
        op.start_date, op.end_date = self.start_date, self.end_date
        if self.conditions:  # @task.run_if / @task.skip_if on a mapped @task
            op.conditions = self.conditions  # type: ignore[attr-defined]
        return op


def spec_task_ids(spec: Mapping[str, Any]) -> set[str]:
    """The upstream task ids an expand spec (or a value spec) reads."""
    kind = spec.get("type")
    if kind == "xcom":
        return {str(spec["task_id"])}
    if kind == "map":
        return spec_task_ids(spec["arg"])
    if kind == "zip":
        return {t for a in spec["args"] for t in spec_task_ids(a)}
    if kind == "dict":
        return {t for _, v in spec["args"] for t in spec_task_ids(v)}
    if kind == "list":
        return spec_task_ids(spec["value"])
    return set()


def mapped_dependants(task: BaseOperator) -> list[BaseOperator]:
    """The mapped tasks expanded over ``task``'s return value (Airflow's
    ``iter_mapped_dependants``)."""
    if task.dag is None:
        return []
    return [t for t in task.dag.task_dict.values()
            if isinstance(spec := getattr(t, "mapped_spec", None), dict)
            and task.task_id in spec_task_ids(spec)]


class OperatorPartial:
    """``Operator.partial(**kwargs)``: the fixed arguments, waiting for ``expand``."""

    def __init__(self, operator_class: type[BaseOperator], kwargs: dict[str, Any]) -> None:
        self.operator_class = operator_class
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"OperatorPartial({self.operator_class.__name__}, {self.kwargs.get('task_id')!r})"

    def expand(self, **mapped_kwargs: Any) -> MappedOperator:
        name = self.operator_class.__name__
        if not mapped_kwargs:
            raise DagDefinitionError(f"{name}.expand(): no arguments to expand against")
        check_operator_args(self.operator_class, "expand", mapped_kwargs)
        _prevent_duplicates(name, self.kwargs, mapped_kwargs)
        for key, value in mapped_kwargs.items():
            _check_value_mappable(name, "expand", key, value)
        return self._create(DictOfListsExpandInput(mapped_kwargs))

    def expand_kwargs(self, kwargs: Any, *, strict: bool = True) -> MappedOperator:
        return self._create(_list_of_dicts(self.operator_class.__name__, kwargs))

    def _create(self, expand_input: ExpandInput) -> MappedOperator:
        return make_mapped(self.operator_class, self.kwargs, expand_input)


def _list_of_dicts(owner: str, kwargs: Any) -> ListOfDictsExpandInput:
    if isinstance(kwargs, Sequence) and not isinstance(kwargs, str):
        for item in kwargs:
            if not isinstance(item, Mapping | XComArg):
                raise DagDefinitionError(f"{owner}.expand_kwargs(): expected XComArg or "
                                         f"list[dict], not list[{type(item).__name__}]")
        return ListOfDictsExpandInput(list(kwargs))
    if isinstance(kwargs, XComArg):
        return ListOfDictsExpandInput(kwargs)
    raise DagDefinitionError(f"{owner}.expand_kwargs(): expected XComArg or list[dict], not "
                             f"{type(kwargs).__name__}")


def _prevent_duplicates(owner: str, fixed: Mapping[str, Any], mapped: Mapping[str, Any]
                        ) -> None:
    dups = [k for k in mapped if k in fixed]
    if len(dups) == 1:
        raise DagDefinitionError(f"{owner}.expand() got an unexpected keyword argument "
                                 f"{dups[0]!r} (unmappable or already specified)")
    if dups:
        raise DagDefinitionError(f"{owner}.expand() got unexpected keyword arguments "
                                 f"{', '.join(repr(d) for d in dups)} (unmappable or already "
                                 "specified)")


def check_operator_args(cls: type[BaseOperator], func: str, kwargs: Mapping[str, Any]) -> None:
    """Airflow's ``validate_mapping_kwargs``: every argument must be one of the operator's."""
    from squall.sdk.operators.default_args import accepted_params as _accepted_params

    unknown = [k for k in kwargs if k not in _accepted_params(cls)]
    if len(unknown) == 1:
        raise DagDefinitionError(f"{cls.__name__}.{func}() got an unexpected keyword argument "
                                 f"{unknown[0]!r}")
    if unknown:
        raise DagDefinitionError(f"{cls.__name__}.{func}() got unexpected keyword arguments "
                                 f"{', '.join(repr(k) for k in unknown)}")


def operator_partial(cls: type[BaseOperator], kwargs: dict[str, Any]) -> OperatorPartial:
    """``cls.partial(**kwargs)``: checked, with the DAG's and groups' ``default_args``."""
    from squall.sdk.operators.default_args import merged_default_args

    if "task_id" not in kwargs:
        raise DagDefinitionError(f"{cls.__name__}.partial() missing required argument: "
                                 "'task_id'")
    check_operator_args(cls, "partial", {k: v for k, v in kwargs.items()
                                         if k not in ("dag", "task_group", "default_args")})
    return OperatorPartial(cls, merged_default_args(cls, dict(kwargs)))


def make_mapped(cls: type[BaseOperator], partial_kwargs: dict[str, Any],
                expand_input: ExpandInput, *, expand_into: str | None = None,
                operator_name: str | None = None) -> MappedOperator:
    """The MappedOperator of ``cls`` with these fixed arguments, in the current DAG."""
    from squall.sdk.operators.default_args import accepted_params as _accepted_params

    base = _accepted_params(BaseOperator)
    base_kwargs = {k: v for k, v in partial_kwargs.items()
                   if k in base and k not in _MAPPED_BASE_SKIP}
    fixed = {k: v for k, v in partial_kwargs.items() if k not in ("dag", "task_group")}
    return MappedOperator(
        operator_class=cls, partial_kwargs=fixed, expand_input=expand_input,
        expand_into=expand_into, operator_name=operator_name,
        task_id=partial_kwargs["task_id"], dag=partial_kwargs.get("dag"),
        task_group=partial_kwargs.get("task_group"), **base_kwargs)
