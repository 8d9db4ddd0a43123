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
from squall.sdk.sensors.python import PythonSensor
from squall.sdk.taskgroup import TaskGroupContext, task_group

if TYPE_CHECKING:
    from squall.sdk.dag import DAG
    from squall.sdk.taskgroup import TaskGroup

log = logging.getLogger(__name__)

__all__ = ["dag", "get_unique_task_id", "task", "task_group"]


# --------------------------------------------------------------------------- operators


class _PythonDecoratedOperator(PythonOperator):
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


class _BranchPythonDecoratedOperator(BranchPythonOperator):
    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs")
    custom_operator_name = "@task.branch"


class _ShortCircuitDecoratedOperator(ShortCircuitOperator):
    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs")
    custom_operator_name = "@task.short_circuit"


class _DecoratedSensorOperator(PythonSensor):
    custom_operator_name = "@task.sensor"


class _BashDecoratedOperator(BashOperator):
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

    def __repr__(self) -> str:
        return f"<{self.operator_class.__name__} factory for {self.function.__qualname__}>"

    def override(self, **kwargs: Any) -> _TaskDecorator:
        """A copy with these operator arguments (``task_id``, ``retries``, ...) changed."""
        multiple_outputs = kwargs.pop("multiple_outputs", self.multiple_outputs)
        return _TaskDecorator(
            self.function, self.operator_class, multiple_outputs, {**self.kwargs, **kwargs}
        )

    def expand(self, **kwargs: Any) -> Any:
        raise DagDefinitionError(
            f"{self.function.__name__}: dynamic task mapping (expand) is not supported"
        )

    partial = expand

    def __call__(self, *args: Any, **kwargs: Any) -> XComArg:
        op_kwargs = dict(self.kwargs)
        dag_ = op_kwargs.get("dag") or DagContext.current()
        group = op_kwargs.get("task_group")
        task_id = get_unique_task_id(
            op_kwargs.pop("task_id", None) or self.function.__name__, dag_, group
        )
        try:
            inspect.signature(self.function).bind_partial(*args, **kwargs)
        except TypeError as exc:
            raise DagDefinitionError(
                f"task {task_id}: bad arguments for {self.function.__name__}(): {exc}"
            ) from None
        multiple_outputs = self.multiple_outputs
        if multiple_outputs is None:
            multiple_outputs = (
                self.operator_class is _PythonDecoratedOperator
                and _returns_mapping(self.function)
            )
        if multiple_outputs:
            op_kwargs["multiple_outputs"] = True
        if self.function.__doc__ and "doc_md" not in op_kwargs:
            op_kwargs["doc_md"] = inspect.cleandoc(self.function.__doc__)
        operator = self.operator_class(
            task_id=task_id,
            python_callable=self.function,
            op_args=list(args),
            op_kwargs=kwargs,
            **op_kwargs,
        )
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
    ``@task.short_circuit``, ``@task.sensor`` and ``@task.bash``."""

    def __call__(
        self,
        python_callable: Callable[..., Any] | None = None,
        multiple_outputs: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        return _decorate(_PythonDecoratedOperator, python_callable, multiple_outputs, kwargs)

    # Airflow 2.10: conditions evaluated before execute (squall.sdk.conditions)
    @staticmethod
    def run_if(condition: Callable[..., Any], skip_message: str | None = None) -> Any:
        """Run the decorated task only when ``condition(context)`` is true; else skip it."""
        from squall.sdk.conditions import run_if

        return run_if(condition, skip_message)

    @staticmethod
    def skip_if(condition: Callable[..., Any], skip_message: str | None = None) -> Any:
        """Skip the decorated task when ``condition(context)`` is true."""
        from squall.sdk.conditions import skip_if

        return skip_if(condition, skip_message)

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


task = TaskDecoratorCollection()
