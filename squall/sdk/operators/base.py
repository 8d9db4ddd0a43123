"""BaseOperator: what every task is, and XComArg, a reference to another task's result."""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from squall.common.errors import DagDefinitionError
from squall.sdk import setup_teardown
from squall.sdk.dag_defaults import current_defaults
from squall.sdk.deprecation import warn_deprecated
from squall.sdk.edges import DependencyMixin
from squall.sdk.operators.base_options import TaskOptions
from squall.sdk.operators.default_args import merged_default_args
from squall.sdk.params import ParamsDict
from squall.sdk.setup_teardown import SetupTeardownMixin, SetupTeardownRefMixin
from squall.sdk.timetables import coerce_datetime
from squall.sdk.trigger_rule import TriggerRule, WeightRule

if TYPE_CHECKING:
    from squall.common.db import SessionFactory
    from squall.sdk.dag import DAG
    from squall.sdk.taskgroup import TaskGroup

log = logging.getLogger(__name__)

Context = dict[str, Any]
TaskCallback = Callable[[Context], Any]

DEFAULT_QUEUE = "default"
DEFAULT_POOL = "default_pool"


class BaseOperatorMeta(type):
    """Applies ``default_args`` (from the DAG, enclosing task groups and the ``default_args``
    argument) to the keyword arguments of the outermost ``__init__`` of an operator."""

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> Any:
        cls = super().__new__(mcs, name, bases, namespace)
        if "__init__" in namespace:
            cls.__init__ = _apply_defaults(cls.__init__)  # type: ignore[misc]
        return cls


def _apply_defaults(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def wrapper(self: BaseOperator, *args: Any, **kwargs: Any) -> None:
        depth = self.__dict__.get("_init_depth", 0)
        # an instance of a mapped task (squall.sdk.mapping): its arguments have their
        # defaults already, and it joins no DAG
        unmapping = bool(self.__dict__.get("_squall_unmapping"))
        self.__dict__["_init_depth"] = depth + 1
        try:
            if depth == 0 and not unmapping:
                kwargs = merged_default_args(type(self), kwargs)
            init(self, *args, **kwargs)
        finally:
            self.__dict__["_init_depth"] = depth
        if depth == 0 and not unmapping:
            self._set_xcomarg_dependencies()
            setup_teardown.record_task(self)

    return wrapper


class BaseOperator(SetupTeardownMixin, DependencyMixin, metaclass=BaseOperatorMeta):
    """A task: one unit of work, run once per DAG run (per try).

    Subclasses implement :meth:`execute`. Fields named in ``template_fields`` are rendered
    with Jinja before ``execute`` is called; ``XComArg`` values in them are resolved to the
    upstream task's result.
    """

    template_fields: Sequence[str] = ()
    template_ext: Sequence[str] = ()
    template_fields_renderers: dict[str, str] = {}
    ui_color: str = "#fff"
    ui_fgcolor: str = "#000"
    # set by TaskOptions.apply (squall.sdk.operators.base_options)
    ignore_first_depends_on_past: bool = True
    wait_for_past_depends_before_skipping: bool = False
    on_skipped_callback: Any = None
    pre_execute_hook: Callable[..., Any] | None = None
    post_execute_hook: Callable[..., Any] | None = None
    executor: str | None = None
    resources: dict[str, Any] | None = None
    doc: str | None = None
    doc_json: str | None = None
    doc_yaml: str | None = None
    doc_rst: str | None = None
    logger_name: str | None = None
    allow_nested_operators: bool = True

    def __init__(
        self,
        *,
        task_id: str,
        owner: str = "squall",
        email: str | Sequence[str] | None = None,
        email_on_retry: bool = True,
        email_on_failure: bool = True,
        retries: int | None = None,  # None: the deployment's [core] default_task_retries
        retry_delay: timedelta | float = timedelta(seconds=300),
        retry_exponential_backoff: bool = False,
        max_retry_delay: timedelta | float | None = None,
        execution_timeout: timedelta | float | None = None,
        priority_weight: int = 1,
        weight_rule: str = WeightRule.DOWNSTREAM,
        pool: str | None = None,
        pool_slots: int = 1,
        queue: str | None = None,  # None: the deployment's [celery] default_queue
        trigger_rule: str = TriggerRule.ALL_SUCCESS,
        depends_on_past: bool = False,
        wait_for_downstream: bool = False,
        max_active_tis_per_dag: int | None = None,
        max_active_tis_per_dagrun: int | None = None,
        task_concurrency: int | None = None,
        executor_config: dict[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        on_execute_callback: TaskCallback | None = None,
        on_success_callback: TaskCallback | None = None,
        on_failure_callback: TaskCallback | None = None,
        on_retry_callback: TaskCallback | None = None,
        do_xcom_push: bool = True,
        multiple_outputs: bool = False,
        doc_md: str | None = None,
        task_display_name: str | None = None,
        sla: timedelta | None = None,
        run_as_user: str | None = None,
        inlets: Any = None,
        outlets: Any = None,
        # Airflow 2.x arguments kept by squall.sdk.operators.base_options
        ignore_first_depends_on_past: bool = True,
        wait_for_past_depends_before_skipping: bool = False,
        on_skipped_callback: TaskCallback | list[TaskCallback] | None = None,
        pre_execute: Callable[..., Any] | None = None,
        post_execute: Callable[..., Any] | None = None,
        executor: str | None = None,
        resources: dict[str, Any] | None = None,
        doc: str | None = None,
        doc_json: str | None = None,
        doc_yaml: str | None = None,
        doc_rst: str | None = None,
        logger_name: str | None = None,
        allow_nested_operators: bool = True,
        dag: DAG | None = None,
        task_group: TaskGroup | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise DagDefinitionError(
                f"{type(self).__name__}({task_id!r}): unexpected argument(s) "
                f"{', '.join(sorted(kwargs))}"
            )
        from squall.sdk.dag import DagContext, _validate_key
        from squall.sdk.taskgroup import TaskGroupContext

        if not isinstance(task_id, str) or not task_id:
            raise DagDefinitionError(f"task_id must be a non-empty string, got {task_id!r}")
        _validate_key(task_id, "task_id")
        trigger_rule = _renamed_trigger_rule(str(trigger_rule), type(self).__name__, task_id)
        if not TriggerRule.is_valid(str(trigger_rule)):
            raise DagDefinitionError(
                f"task {task_id}: unknown trigger_rule {trigger_rule!r} "
                f"(one of {', '.join(sorted(TriggerRule.all_triggers()))})"
            )
        if str(weight_rule) not in {w.value for w in WeightRule}:
            raise DagDefinitionError(f"task {task_id}: unknown weight_rule {weight_rule!r}")
        if task_concurrency is not None:
            warn_deprecated(f"{type(self).__name__}({task_id!r}): task_concurrency is "
                            "deprecated; use max_active_tis_per_dag")
        if pool_slots < 1:
            raise DagDefinitionError(f"task {task_id}: pool_slots must be >= 1")
        if retries is not None and (not isinstance(retries, int) or retries < 0):
            try:
                retries = int(retries)
            except (TypeError, ValueError):
                raise DagDefinitionError(
                    f"task {task_id}: retries must be a non-negative int, got {retries!r}"
                ) from None

        if sla is not None and not isinstance(sla, timedelta):
            raise DagDefinitionError(f"task {task_id}: sla must be a timedelta, got {sla!r}")
        if run_as_user is not None and (not isinstance(run_as_user, str) or not run_as_user):
            raise DagDefinitionError(
                f"task {task_id}: run_as_user must be a user name, got {run_as_user!r}"
            )

        self.owner = owner
        self.email = email
        # a failed / retried try e-mails ``email`` (squall.execution.email_alerts); a miss
        # of ``sla`` is recorded by the DAG processor (squall.scheduler.sla)
        self.email_on_retry = bool(email_on_retry)
        self.email_on_failure = bool(email_on_failure)
        self.sla = sla
        #: the user the task process runs as (the worker must run as root to switch)
        self.run_as_user = run_as_user
        self.inlets: list[Any] = _as_list(inlets)
        self.outlets: list[Any] = _as_list(outlets)
        self.retries: int = current_defaults().retries if retries is None else int(retries)
        self.retry_delay = _as_timedelta(retry_delay, "retry_delay", task_id)
        self.retry_exponential_backoff = retry_exponential_backoff
        self.max_retry_delay = (
            _as_timedelta(max_retry_delay, "max_retry_delay", task_id)
            if max_retry_delay is not None else None
        )
        self.execution_timeout = (
            _as_timedelta(execution_timeout, "execution_timeout", task_id)
            if execution_timeout is not None else None
        )
        self.priority_weight = int(priority_weight)
        self.weight_rule = WeightRule(str(weight_rule))
        self.pool = pool or DEFAULT_POOL
        self.pool_slots = int(pool_slots)
        self.queue: str | None = queue or None
        self.trigger_rule = TriggerRule(str(trigger_rule))
        self.depends_on_past = depends_on_past
        self.wait_for_downstream = wait_for_downstream
        if wait_for_downstream:
            self.depends_on_past = True
        self.max_active_tis_per_dag = (
            max_active_tis_per_dag if max_active_tis_per_dag is not None else task_concurrency
        )
        #: the most instances of this task queued or running at once in one DAG run (its
        #: mapped instances, Airflow 2.6+)
        self.max_active_tis_per_dagrun = max_active_tis_per_dagrun
        self.executor_config: dict[str, Any] = dict(executor_config or {})
        self.params: ParamsDict = (copy.copy(params) if isinstance(params, ParamsDict)
                                   else ParamsDict(params))
        # a naive date is a wall time in the deployment's [core] default_timezone (Airflow's rule)
        self.start_date = coerce_datetime(start_date, current_defaults().timezone)
        self.end_date = coerce_datetime(end_date, current_defaults().timezone)
        self.on_execute_callback = on_execute_callback
        self.on_success_callback = on_success_callback
        self.on_failure_callback = on_failure_callback
        self.on_retry_callback = on_retry_callback
        self.do_xcom_push = do_xcom_push
        self.multiple_outputs = multiple_outputs
        self.doc_md = doc_md
        TaskOptions(
            ignore_first_depends_on_past=ignore_first_depends_on_past,
            wait_for_past_depends_before_skipping=wait_for_past_depends_before_skipping,
            on_skipped_callback=on_skipped_callback, pre_execute=pre_execute,
            post_execute=post_execute, executor=executor, resources=resources,
            docs={"doc": doc, "doc_json": doc_json, "doc_yaml": doc_yaml, "doc_rst": doc_rst},
            logger_name=logger_name, allow_nested_operators=allow_nested_operators,
        ).apply(self, task_id)
        self._task_display_name = task_display_name
        self.upstream_task_ids: set[str] = set()
        self.downstream_task_ids: set[str] = set()
        self._is_setup = False
        self._is_teardown = False
        self._on_failure_fail_dagrun = False

        dag = dag or DagContext.current()
        if self.__dict__.get("_squall_unmapping"):
            dag = task_group = None
        if task_group is None and dag is not None:
            task_group = TaskGroupContext.current(dag)
        self.task_group: TaskGroup | None = task_group
        self.task_id = task_group.child_id(task_id) if task_group is not None else task_id
        self.dag: DAG | None = None
        if dag is not None:
            self._attach(dag)

    def _attach(self, dag: DAG) -> None:
        from squall.sdk.dag import DAG

        if not isinstance(dag, DAG):
            raise DagDefinitionError(f"task {self.task_id}: dag= must be a DAG, got {dag!r}")
        if self.start_date is None:
            self.start_date = dag.start_date
        if self.end_date is None:
            self.end_date = dag.end_date
        dag.add_task(self)
        self.dag = dag
        if self.task_group is None:
            self.task_group = dag.task_group
        self.task_group.add(self)

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Airflow's dynamic task mapping: ``Operator.partial(task_id=..., **fixed)`` then
        ``.expand(**lists)`` or ``.expand_kwargs(list_of_dicts)`` (squall.sdk.mapping)."""
        from squall.sdk.mapping import operator_partial

        return operator_partial(cls, kwargs)

    # Identity ------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<Task({type(self).__name__}): {self.task_id}>"

    @property
    def dag_id(self) -> str:
        return self.dag.dag_id if self.dag is not None else "_no_dag_"

    @property
    def label(self) -> str:
        return self.task_id.rsplit(".", 1)[-1]

    @property
    def operator_name(self) -> str:
        return type(self).__name__

    @property
    def task_display_name(self) -> str:
        """The name to show: ``task_display_name`` if given, else the task id (Airflow 2.9)."""
        return self._task_display_name or self.task_id

    @property
    def roots(self) -> list[BaseOperator]:
        return [self]

    @property
    def leaves(self) -> list[BaseOperator]:
        return [self]

    @property
    def output(self) -> XComArg:
        """This task's return value, for another task's arguments."""
        return XComArg(self)

    # Dependencies --------------------------------------------------------------------

    def add_downstream_edge(self, other: BaseOperator) -> None:
        if other is self:
            raise DagDefinitionError(f"task {self.task_id} cannot depend on itself")
        if self.dag is None and other.dag is not None:
            self._attach(other.dag)
        elif other.dag is None and self.dag is not None:
            other._attach(self.dag)
        if self.dag is not other.dag:
            raise DagDefinitionError(
                f"tasks {self.task_id} and {other.task_id} belong to different DAGs "
                f"({self.dag_id}, {other.dag_id})"
            )
        self.downstream_task_ids.add(other.task_id)
        other.upstream_task_ids.add(self.task_id)

    def get_direct_relatives(self, upstream: bool = False) -> list[BaseOperator]:
        assert self.dag is not None
        ids = self.upstream_task_ids if upstream else self.downstream_task_ids
        return [self.dag.task_dict[t] for t in sorted(ids)]

    def get_flat_relative_ids(self, upstream: bool = False) -> set[str]:
        """Every task reachable downstream (or upstream), not including this one."""
        if self.dag is None:
            return set()
        seen: set[str] = set()
        todo = list(self.upstream_task_ids if upstream else self.downstream_task_ids)
        while todo:
            tid = todo.pop()
            if tid in seen:
                continue
            seen.add(tid)
            task = self.dag.task_dict[tid]
            todo.extend(task.upstream_task_ids if upstream else task.downstream_task_ids)
        return seen

    @property
    def priority_weight_total(self) -> int:
        """The priority used to order runnable task instances (higher runs first)."""
        if self.weight_rule == WeightRule.ABSOLUTE or self.dag is None:
            return self.priority_weight
        upstream = self.weight_rule == WeightRule.UPSTREAM
        relatives = self.get_flat_relative_ids(upstream=upstream)
        return self.priority_weight + sum(
            self.dag.task_dict[t].priority_weight for t in relatives
        )

    def _set_xcomarg_dependencies(self) -> None:
        for field in self.template_fields:
            value = getattr(self, field, None)
            for arg in iter_xcom_args(value):
                for op in arg.roots:
                    self.set_upstream(op)

    @property
    def log(self) -> logging.Logger:
        """The task's logger (Airflow's ``self.log``): what it logs goes to the try's log."""
        found = self.__dict__.get("_log")
        if found is None:
            cls = type(self)
            name = (getattr(self, "logger_name", None)
                    or f"{cls.__module__}.{cls.__name__}")
            found = logging.getLogger(f"squall.task.operators.{name}")
        return found

    @log.setter
    def log(self, value: logging.Logger) -> None:
        self.__dict__["_log"] = value

    # Running -------------------------------------------------------------------------

    def xcom_push(self, context: Context, key: str, value: Any) -> None:
        """Airflow's ``BaseOperator.xcom_push``: push ``value`` under ``key`` for this try."""
        context["ti"].xcom_push(key=key, value=value)

    def xcom_pull(self, context: Context, task_ids: Any = None, dag_id: str | None = None,
                  key: str = "return_value", include_prior_dates: bool = False) -> Any:
        """Airflow's ``BaseOperator.xcom_pull``, through the context's ``ti``."""
        extra = {"include_prior_dates": True} if include_prior_dates else {}
        return context["ti"].xcom_pull(task_ids=task_ids, dag_id=dag_id, key=key, **extra)

    def execute(self, context: Context) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement execute()")

    def pre_execute(self, context: Context) -> None:
        """Hook run just before :meth:`execute`: calls the ``pre_execute`` argument."""
        hook = getattr(self, "pre_execute_hook", None)
        if hook is not None:
            hook(context)

    def post_execute(self, context: Context, result: Any = None) -> None:
        """Hook run just after :meth:`execute` succeeded: calls the ``post_execute``
        argument."""
        hook = getattr(self, "post_execute_hook", None)
        if hook is not None:
            hook(context, result)

    def defer(self, *, trigger: Any, method_name: str, kwargs: dict[str, Any] | None = None,
              timeout: timedelta | None = None) -> NoReturn:
        """Airflow's ``BaseOperator.defer``: hand the wait to ``trigger`` (a
        :class:`~squall.sdk.triggers.BaseTrigger`) and free the worker slot. When the trigger
        fires, the try resumes on a worker in ``method_name(context, event=..., **kwargs)``;
        if it has not fired after ``timeout``, the try fails."""
        from squall.common.errors import TaskDeferred

        raise TaskDeferred(trigger=trigger, method_name=method_name, kwargs=kwargs,
                           timeout=timeout)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None,
                         context: Context) -> Any:
        """Airflow's ``BaseOperator.resume_execution``: what a deferred try runs on the
        worker instead of :meth:`execute` when it resumes, ``next_method(context,
        **next_kwargs)`` (the trigger's event is ``next_kwargs["event"]``). The method
        ``__fail__`` raises :class:`~squall.common.errors.TaskDeferralError` with
        ``next_kwargs["error"]`` (the trigger raised, or the wait timed out), after logging
        the trigger's traceback if there is one."""
        from squall.common.errors import TaskDeferralError
        from squall.common.state import TRIGGER_FAIL_METHOD

        if next_method == TRIGGER_FAIL_METHOD:
            details = next_kwargs or {}
            trace = details.get("traceback")
            if trace:
                lines = [trace] if isinstance(trace, str) else list(trace)
                log.error("Trigger failed:\n%s", "\n".join(str(line) for line in lines))
            raise TaskDeferralError(str(details.get("error", "Unknown")))
        method = getattr(self, next_method, None)
        if method is None or not callable(method):
            raise TaskDeferralError(
                f"task {self.task_id}: cannot resume: {type(self).__name__} has no method "
                f"{next_method!r}")
        return method(context, **(next_kwargs or {}))

    def on_kill(self) -> None:
        """Called when the try is killed (timeout, SIGTERM): release external resources."""

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render every templated field in place, resolving XComArgs first."""
        from squall.sdk.templating import render_template_fields

        render_template_fields(self, context, jinja_env)

    def retry_delay_for(self, try_number: int) -> timedelta:
        """How long to wait after failed try ``try_number`` before the next one."""
        delay = self.retry_delay
        if self.retry_exponential_backoff:
            seconds = max(delay.total_seconds(), 1.0) * (2 ** max(try_number - 1, 0))
            delay = timedelta(seconds=min(seconds, 365 * 24 * 3600.0))
        if self.max_retry_delay is not None and delay > self.max_retry_delay:
            delay = self.max_retry_delay
        return delay


class XComArg(SetupTeardownRefMixin, DependencyMixin):
    """A reference to a value another task pushes to XCom (by default its return value).

    Passing one as an argument of a task makes that task downstream of the producer; the
    runner resolves it to the value before rendering templates.
    """

    def __init__(self, operator: BaseOperator, key: str = "return_value") -> None:
        self.operator = operator
        self.key = key

    def __getitem__(self, key: str) -> XComArg:
        return XComArg(self.operator, key=key)

    def __iter__(self) -> Any:
        raise TypeError("an XComArg cannot be iterated when the DAG is defined; index it")

    def __repr__(self) -> str:
        return f"XComArg({self.operator.task_id!r}, key={self.key!r})"

    @property
    def roots(self) -> list[BaseOperator]:
        return [self.operator]

    @property
    def leaves(self) -> list[BaseOperator]:
        return [self.operator]

    def resolve(self, context: Context) -> Any:
        ti = context["ti"]
        group = getattr(self.operator, "mapped_group", None)
        index = getattr(ti, "map_index", -1)
        if group is not None and index >= 0 and getattr(context.get("task"), "mapped_group",
                                                        None) is group:
            # inside a mapped task group, instance N reads instance N of the group's tasks
            return ti.xcom_pull(task_ids=self.operator.task_id, key=self.key,
                                map_indexes=index)
        return ti.xcom_pull(task_ids=self.operator.task_id, key=self.key)

    def map(self, f: Callable[[Any], Any]) -> XComArg:
        """Airflow's ``XComArg.map``: each item of the value passed through ``f``."""
        from squall.sdk.mapping import xcom_arg_map

        return xcom_arg_map(self, f)

    def zip(self, *others: XComArg, **kwargs: Any) -> XComArg:
        """Airflow's ``XComArg.zip(*others, fillvalue=...)``: tuples of items."""
        from squall.sdk.mapping import xcom_arg_zip

        unknown = set(kwargs) - {"fillvalue"}
        if unknown:
            raise DagDefinitionError(f"zip() got an unexpected keyword argument "
                                     f"{sorted(unknown)[0]!r}")
        return xcom_arg_zip(self, *others, **kwargs)


def session_factory_of(context: Context, what: str) -> SessionFactory:
    """The metadata database of the running try (its ``ti``'s), for the operators that read
    or write it (TriggerDagRunOperator, ExternalTaskSensor)."""
    from squall.common.errors import SquallError

    factory = getattr(context.get("ti"), "session_factory", None)
    if factory is None:
        raise SquallError(f"{what} needs the metadata database: run it in a DAG run "
                          "(squall dags test, or a scheduler and workers)")
    return factory


def iter_xcom_args(value: Any) -> list[XComArg]:
    """Every XComArg inside ``value`` (lists, tuples, sets, dicts, nested)."""
    found: list[XComArg] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, XComArg):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return found


#: trigger rule names Airflow 2 still accepts (with a warning) -> the rule they now are
_RENAMED_TRIGGER_RULES = {
    "dummy": TriggerRule.ALWAYS,
    "none_failed_or_skipped": TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
}


def _renamed_trigger_rule(rule: str, operator: str, task_id: str) -> str:
    new = _RENAMED_TRIGGER_RULES.get(rule)
    if new is None:
        return rule
    warn_deprecated(f"{operator}({task_id!r}): trigger_rule {rule!r} is deprecated; "
                    f"use {new.value!r}")
    return new.value


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    return [value]


def _as_timedelta(value: timedelta | float | int, name: str, task_id: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    raise DagDefinitionError(
        f"task {task_id}: {name} must be a timedelta or a number of seconds, got {value!r}"
    )
