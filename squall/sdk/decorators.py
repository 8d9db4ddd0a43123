"""TaskFlow: ``@task`` turns a function into a task factory.

Calling the decorated function inside a DAG creates the task and returns an
:class:`~squall.sdk.operators.base.XComArg` for its result; passing such XComArgs (or
``result["key"]``) as arguments of another decorated call makes that task downstream::

    @task
    def extract() -> dict[str, int]:
        return {"a": 1, "b": 2}

    @task
    def load(a: int, ti=None) -> None: ...

    load(extract()["a"])
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from squall.common.errors import DagDefinitionError, TemplateError
from squall.sdk.dag import DagContext, dag
from squall.sdk.operators.base import BaseOperator, Context, XComArg
from squall.sdk.operators.bash import BashOperator
from squall.sdk.operators.python import (
    BranchPythonOperator,
    PythonOperator,
    ShortCircuitOperator,
    call_with_context,
)
from squall.sdk.operators.python_virtualenv import (
    BranchExternalPythonOperator,
    BranchPythonVirtualenvOperator,
    ExternalPythonOperator,
    PythonVirtualenvOperator,
)
from squall.sdk.sensors.python import PythonSensor
from squall.sdk.task_conditions import ConditionalTask, run_if, skip_if
from squall.sdk.taskgroup import TaskGroupContext, task_group

if TYPE_CHECKING:
    from squall.sdk.dag import DAG
    from squall.sdk.taskgroup import TaskGroup

log = logging.getLogger(__name__)

__all__ = ["bash_task", "branch_external_python_task", "branch_task", "branch_virtualenv_task",
           "dag", "external_python_task", "get_unique_task_id", "python_task", "run_if",
           "sensor_task", "short_circuit_task", "skip_if", "task", "task_group",
           "virtualenv_task"]


# --------------------------------------------------------------------------- operators


class _PythonDecoratedOperator(ConditionalTask, PythonOperator):
    """The operator ``@task`` creates: a PythonOperator that, with ``multiple_outputs``,
    also pushes each key of the returned dict as an XCom of its own."""

    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs")
    custom_operator_name = "@task"

    def execute(self, context: Context) -> Any:
        result = super().execute(context)
        if self.multiple_outputs:
            push_multiple_outputs(self, context, result)
        return result


def push_multiple_outputs(task: BaseOperator, context: Context, result: Any) -> None:
    """Push each key of ``result`` (a dict with string keys) as an XCom of its own."""
    if result is None:
        return
    if not isinstance(result, Mapping):
        raise TypeError(
            f"task {task.task_id}: multiple_outputs is set, so it must return a dict, "
            f"not {type(result).__name__}"
        )
    for key in result:
        if not isinstance(key, str):
            raise TypeError(
                f"task {task.task_id}: multiple_outputs needs string keys, got {key!r}"
            )
    ti = context["ti"]
    for key, value in result.items():
        ti.xcom_push(key, value)


class _BranchPythonDecoratedOperator(ConditionalTask, BranchPythonOperator):
    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs")
    custom_operator_name = "@task.branch"


class _ShortCircuitDecoratedOperator(ConditionalTask, ShortCircuitOperator):
    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs")
    custom_operator_name = "@task.short_circuit"


class _DecoratedSensorOperator(ConditionalTask, PythonSensor):
    custom_operator_name = "@task.sensor"


class _BashDecoratedOperator(ConditionalTask, BashOperator):
    """The function returns the bash command (rendered with Jinja, then run)."""

    template_fields: Sequence[str] = ("op_args", "op_kwargs", "env", "cwd")
    custom_operator_name = "@task.bash"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Any = None,
        op_kwargs: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("bash_command", None)
        super().__init__(bash_command="", **kwargs)
        self.python_callable = python_callable
        self.op_args: Any = op_args if op_args is not None else []
        self.op_kwargs: Any = op_kwargs if op_kwargs is not None else {}

    def execute(self, context: Context) -> Any:
        from squall.sdk.templating import make_jinja_env, render_template

        command = call_with_context(self.python_callable, self.op_args, self.op_kwargs, context)
        if not isinstance(command, str) or not command.strip():
            raise TypeError(
                f"task {self.task_id}: an @task.bash function must return a non-empty string "
                f"(the command), got {command!r}"
            )
        try:
            self.bash_command = render_template(
                command, context, make_jinja_env(self.dag), self.template_ext
            )
        except TemplateError as exc:
            raise TemplateError(f"task {self.task_id} field bash_command: {exc}") from exc
        return super().execute(context)


class _PythonVirtualenvDecoratedOperator(ConditionalTask, PythonVirtualenvOperator):
    template_fields: Sequence[str] = ("requirements", "index_urls", "venv_cache_path",
                                      "templates_dict", "op_args", "op_kwargs")
    custom_operator_name = "@task.virtualenv"

    def execute(self, context: Context) -> Any:
        result = super().execute(context)
        if self.multiple_outputs:
            push_multiple_outputs(self, context, result)
        return result


class _ExternalPythonDecoratedOperator(ConditionalTask, ExternalPythonOperator):
    template_fields: Sequence[str] = ("python", "templates_dict", "op_args", "op_kwargs")
    custom_operator_name = "@task.external_python"

    def execute(self, context: Context) -> Any:
        result = super().execute(context)
        if self.multiple_outputs:
            push_multiple_outputs(self, context, result)
        return result


class _BranchPythonVirtualenvDecoratedOperator(ConditionalTask, BranchPythonVirtualenvOperator):
    template_fields: Sequence[str] = ("requirements", "index_urls", "venv_cache_path",
                                      "templates_dict", "op_args", "op_kwargs")
    custom_operator_name = "@task.branch_virtualenv"


class _BranchExternalPythonDecoratedOperator(ConditionalTask, BranchExternalPythonOperator):
    template_fields: Sequence[str] = ("python", "templates_dict", "op_args", "op_kwargs")
    custom_operator_name = "@task.branch_external_python"


# --------------------------------------------------------------------------- task ids


def get_unique_task_id(
    task_id: str, dag: DAG | None = None, task_group: TaskGroup | None = None
) -> str:
    """``task_id``, or ``task_id__N`` (the next free N) when the DAG already has it."""
    dag = dag or DagContext.current()
    if dag is None:
        return task_id
    if task_group is None:
        task_group = TaskGroupContext.current(dag)
    if task_group.child_id(task_id) not in dag.task_dict:
        return task_id
    core = re.split(r"__\d+$", task_id)[0]
    pattern = re.compile(re.escape(task_group.child_id(core)) + r"__(\d+)$")
    numbers = [int(m.group(1)) for tid in dag.task_dict if (m := pattern.match(tid))]
    return f"{core}__{max(numbers, default=0) + 1}"


def _returns_mapping(func: Callable[..., Any]) -> bool:
    """Whether the return annotation of ``func`` is a dict (or another Mapping)."""
    try:
        ret: Any = typing.get_type_hints(func).get("return", None)
    except Exception:
        ret = inspect.signature(func).return_annotation
    if isinstance(ret, str):
        return bool(re.match(r"(typing\.)?(dict|Dict|Mapping)(\[|$)", ret.strip()))
    origin = typing.get_origin(ret) or ret
    return isinstance(origin, type) and issubclass(origin, Mapping)


# --------------------------------------------------------------------------- decorator


class _TaskDecorator:
    """A decorated function: calling it creates a task and returns its XComArg."""

    #: set by ``@setup`` / ``@teardown`` (squall.sdk.setup_teardown)
    is_setup = False
    is_teardown = False
    on_failure_fail_dagrun = False

    def __init__(
        self,
        function: Callable[..., Any],
        operator_class: type[BaseOperator],
        multiple_outputs: bool | None,
        kwargs: dict[str, Any],
    ) -> None:
        if not callable(function):
            raise DagDefinitionError(f"@task must decorate a function, got {function!r}")
        functools.update_wrapper(self, function)
        self.function = function
        self.operator_class = operator_class
        self.multiple_outputs = multiple_outputs
        self.kwargs = dict(kwargs)
        #: function arguments given by ``.partial()`` (a mapped task's fixed ones)
        self.partial_kwargs: dict[str, Any] = {}
        #: the checks ``@task.run_if`` / ``@task.skip_if`` added (squall.sdk.task_conditions)
        self.conditions: tuple[Any, ...] = ()

    def __repr__(self) -> str:
        return f"<{self.operator_class.__name__} factory for {self.function.__qualname__}>"

    def override(self, **kwargs: Any) -> _TaskDecorator:
        """A copy with these operator arguments (``task_id``, ``retries``, ...) changed."""
        multiple_outputs = kwargs.pop("multiple_outputs", self.multiple_outputs)
        copy = _TaskDecorator(
            self.function, self.operator_class, multiple_outputs, {**self.kwargs, **kwargs}
        )
        copy.partial_kwargs = dict(self.partial_kwargs)
        copy.is_setup, copy.is_teardown = self.is_setup, self.is_teardown
        copy.on_failure_fail_dagrun = self.on_failure_fail_dagrun
        copy.conditions = self.conditions
        return copy

    def partial(self, **kwargs: Any) -> _TaskDecorator:
        """Airflow's ``@task`` ``.partial(**fixed)``: arguments of the function every mapped
        instance gets (``.expand`` / ``.expand_kwargs`` then gives the rest)."""
        self._validate_arg_names("partial", kwargs)
        dup = sorted(set(kwargs) & set(self.partial_kwargs))
        if dup:
            raise DagDefinitionError(f"{self.function.__name__}.partial(): duplicate argument "
                                     f"{dup[0]!r}")
        copy = _TaskDecorator(self.function, self.operator_class, self.multiple_outputs,
                              self.kwargs)
        copy.partial_kwargs = {**self.partial_kwargs, **kwargs}
        return copy

    def expand(self, **map_kwargs: Any) -> XComArg:
        """Airflow's dynamic task mapping: one task instance per item (the cross product
        when several arguments are expanded)."""
        from squall.sdk.mapping import DictOfListsExpandInput, _check_value_mappable

        if not map_kwargs:
            raise DagDefinitionError(f"{self.function.__name__}.expand(): no arguments to "
                                     "expand against")
        self._validate_arg_names("expand", map_kwargs)
        dup = sorted(set(map_kwargs) & set(self.partial_kwargs))
        if dup:
            raise DagDefinitionError(f"{self.function.__name__}.expand() got an unexpected "
                                     f"keyword argument {dup[0]!r} (already given to partial)")
        for name, value in map_kwargs.items():
            _check_value_mappable(self.function.__name__, "expand", name, value)
        return self._expand(DictOfListsExpandInput(map_kwargs))

    def expand_kwargs(self, kwargs: Any, *, strict: bool = True) -> XComArg:
        """One task instance per dict of ``kwargs`` (a list, or an upstream's list)."""
        from squall.sdk.mapping import _list_of_dicts

        return self._expand(_list_of_dicts(self.function.__name__, kwargs))

    def _validate_arg_names(self, func: str, kwargs: Mapping[str, Any]) -> None:
        from squall.sdk.mapping import KNOWN_CONTEXT_KEYS

        name = self.function.__name__
        shadowed = sorted(set(kwargs) & KNOWN_CONTEXT_KEYS)
        if shadowed:
            raise DagDefinitionError(f"{name}: cannot call {func}() on task context "
                                     f"variable(s) {', '.join(repr(n) for n in shadowed)}")
        params = inspect.signature(self.function).parameters
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return
        unknown = [k for k in kwargs if k not in params or params[k].kind in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL)]
        if unknown:
            raise DagDefinitionError(f"{name}.{func}() got an unexpected keyword argument "
                                     f"{unknown[0]!r}")

    def _expand(self, expand_input: Any) -> XComArg:
        from squall.sdk.mapping import make_mapped
        from squall.sdk.operators.default_args import accepted_params

        op_kwargs = self._operator_kwargs()
        task_id = op_kwargs.pop("task_id")
        fail_dagrun = op_kwargs.pop("on_failure_fail_dagrun")
        # checked now, as an unmapped task's are, not when an instance is built on a worker
        unknown = sorted(set(op_kwargs) - accepted_params(self.operator_class)
                         - {"dag", "task_group"})
        if unknown:
            raise DagDefinitionError(f"{self.operator_class.__name__}({task_id!r}): unexpected "
                                     f"argument(s) {', '.join(unknown)}")
        partial_kwargs = {"task_id": task_id, "python_callable": self.function,
                          "op_args": [], "op_kwargs": dict(self.partial_kwargs), **op_kwargs}
        operator = make_mapped(self.operator_class, partial_kwargs, expand_input,
                               expand_into="op_kwargs",
                               operator_name=self.operator_class.__name__)
        operator.is_setup, operator.is_teardown = self.is_setup, self.is_teardown
        operator.on_failure_fail_dagrun = fail_dagrun
        # carried to each instance the worker builds (MappedOperator.unmap)
        operator.conditions = self.conditions
        return XComArg(operator)

    def _operator_kwargs(self) -> dict[str, Any]:
        """The operator's arguments: the decorator's, a unique task_id, multiple_outputs and
        the function's docstring as doc_md."""
        op_kwargs = dict(self.kwargs)
        op_kwargs.setdefault("on_failure_fail_dagrun", self.on_failure_fail_dagrun)
        if self.is_teardown:
            if "trigger_rule" in op_kwargs:
                raise DagDefinitionError(f"{self.function.__name__}: trigger rule not "
                                         "configurable for teardown tasks")
            op_kwargs["trigger_rule"] = "all_done_setup_success"
        dag_ = op_kwargs.get("dag") or DagContext.current()
        group = op_kwargs.get("task_group")
        op_kwargs["task_id"] = get_unique_task_id(
            op_kwargs.pop("task_id", None) or self.function.__name__, dag_, group)
        multiple_outputs = self.multiple_outputs
        if multiple_outputs is None:
            multiple_outputs = (
                self.operator_class in _MULTIPLE_OUTPUTS_OPERATORS
                and _returns_mapping(self.function)
            )
        if multiple_outputs:
            op_kwargs["multiple_outputs"] = True
        if self.function.__doc__ and "doc_md" not in op_kwargs:
            op_kwargs["doc_md"] = inspect.cleandoc(self.function.__doc__)
        return op_kwargs

    def __call__(self, *args: Any, **kwargs: Any) -> XComArg:
        op_kwargs = self._operator_kwargs()
        task_id = op_kwargs.pop("task_id")
        fail_dagrun = op_kwargs.pop("on_failure_fail_dagrun")
        if self.partial_kwargs:
            raise DagDefinitionError(f"task {task_id}: a partial() task must be expanded "
                                     "(.expand or .expand_kwargs), not called")
        try:
            inspect.signature(self.function).bind_partial(*args, **kwargs)
        except TypeError as exc:
            raise DagDefinitionError(
                f"task {task_id}: bad arguments for {self.function.__name__}(): {exc}"
            ) from None
        operator = self.operator_class(
            task_id=task_id,
            python_callable=self.function,
            op_args=list(args),
            op_kwargs=kwargs,
            **op_kwargs,
        )
        operator.is_setup, operator.is_teardown = self.is_setup, self.is_teardown
        operator.on_failure_fail_dagrun = fail_dagrun
        if self.conditions and isinstance(operator, ConditionalTask):
            operator.conditions = self.conditions
        return XComArg(operator)


def _decorate(
    operator_class: type[BaseOperator],
    python_callable: Callable[..., Any] | None,
    multiple_outputs: bool | None,
    kwargs: dict[str, Any],
) -> Any:
    def wrap(func: Callable[..., Any]) -> _TaskDecorator:
        return _TaskDecorator(func, operator_class, multiple_outputs, kwargs)

    if python_callable is not None:
        return wrap(python_callable)
    return wrap


class TaskDecoratorCollection:
    """``task``: ``@task``, ``@task(...)``, ``@task.python``, ``@task.branch``,
    ``@task.short_circuit``, ``@task.sensor``, ``@task.bash``, ``@task.virtualenv``,
    ``@task.external_python``, ``@task.branch_virtualenv``, ``@task.branch_external_python``,
    and the conditions ``@task.run_if`` / ``@task.skip_if``."""

    def __call__(
        self,
        python_callable: Callable[..., Any] | None = None,
        multiple_outputs: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        return _decorate(_PythonDecoratedOperator, python_callable, multiple_outputs, kwargs)

    def python(
        self,
        python_callable: Callable[..., Any] | None = None,
        multiple_outputs: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        return _decorate(_PythonDecoratedOperator, python_callable, multiple_outputs, kwargs)

    def branch(self, python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        """The function returns the task id(s) or task group id(s) to follow."""
        return _decorate(_BranchPythonDecoratedOperator, python_callable, False, kwargs)

    def short_circuit(
        self, python_callable: Callable[..., Any] | None = None, **kwargs: Any
    ) -> Any:
        """A falsy result skips the downstream tasks."""
        return _decorate(_ShortCircuitDecoratedOperator, python_callable, False, kwargs)

    def sensor(self, python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        """The function is the sensor's poke: a bool or a PokeReturnValue."""
        return _decorate(_DecoratedSensorOperator, python_callable, False, kwargs)

    def bash(self, python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        """The function returns the bash command to run."""
        return _decorate(_BashDecoratedOperator, python_callable, False, kwargs)

    def virtualenv(
        self,
        python_callable: Callable[..., Any] | None = None,
        multiple_outputs: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """The function runs in a virtualenv with ``requirements`` (PythonVirtualenvOperator)."""
        return _decorate(_PythonVirtualenvDecoratedOperator, python_callable, multiple_outputs,
                         kwargs)

    def external_python(
        self,
        python: str | None = None,
        python_callable: Callable[..., Any] | None = None,
        multiple_outputs: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """The function runs with the interpreter ``python`` (ExternalPythonOperator)."""
        if callable(python):  # @task.external_python used bare: no interpreter given
            raise DagDefinitionError(
                f"@task.external_python on {getattr(python, '__name__', python)!r} needs "
                "python=, the path of an interpreter")
        return _decorate(_ExternalPythonDecoratedOperator, python_callable, multiple_outputs,
                         {**kwargs, "python": python})


    def branch_virtualenv(self, python_callable: Callable[..., Any] | None = None,
                          **kwargs: Any) -> Any:
        """A branch whose function runs in a virtualenv (BranchPythonVirtualenvOperator)."""
        return _decorate(_BranchPythonVirtualenvDecoratedOperator, python_callable, False,
                         kwargs)

    def branch_external_python(self, python: str | None = None,
                               python_callable: Callable[..., Any] | None = None,
                               **kwargs: Any) -> Any:
        """A branch whose function runs with the interpreter ``python``."""
        if callable(python):
            raise DagDefinitionError(
                f"@task.branch_external_python on {getattr(python, '__name__', python)!r} "
                "needs python=, the path of an interpreter")
        return _decorate(_BranchExternalPythonDecoratedOperator, python_callable, False,
                         {**kwargs, "python": python})

    run_if = staticmethod(run_if)
    skip_if = staticmethod(skip_if)


_MULTIPLE_OUTPUTS_OPERATORS: frozenset[type[BaseOperator]] = frozenset(
    {_PythonDecoratedOperator, _PythonVirtualenvDecoratedOperator,
     _ExternalPythonDecoratedOperator})

task = TaskDecoratorCollection()

# Airflow 2's module-level names for the decorators (``airflow.decorators``)
python_task = task.python
virtualenv_task = task.virtualenv
external_python_task = task.external_python
branch_task = task.branch
short_circuit_task = task.short_circuit
sensor_task = task.sensor
bash_task = task.bash
branch_virtualenv_task = task.branch_virtualenv
branch_external_python_task = task.branch_external_python
