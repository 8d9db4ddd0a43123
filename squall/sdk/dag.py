"""The DAG: a named set of tasks, their dependencies and a schedule (Airflow 2's shape)."""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, overload

import pendulum

from squall.common.errors import (
    CycleError,
    DagDefinitionError,
    DuplicateTaskIdError,
    ParamValidationError,
    TaskNotFound,
)
from squall.sdk.dag_defaults import current_defaults
from squall.sdk.dag_options import DagOptions, check_fail_stop_rule
from squall.sdk.deprecation import warn_deprecated
from squall.sdk.params import NOTSET, DagParam, ParamsDict
from squall.sdk.timetables import Timetable, coerce_datetime, timetable_from_schedule

if TYPE_CHECKING:
    from squall.sdk.operators.base import BaseOperator
    from squall.sdk.taskgroup import TaskGroup

log = logging.getLogger(__name__)

P = ParamSpec("P")

DagCallback = Callable[[dict[str, Any]], Any]

_UNSET: Any = object()


class DagContext:
    """The stack of DAGs opened with ``with DAG(...)``; tasks created inside join the top."""

    _stack: list[DAG] = []
    #: while not None, every DAG created is appended to it (the DAG bag sets it around the
    #: import of a DAG file to find the DAGs the file defines)
    created: list[DAG] | None = None

    @classmethod
    def push(cls, dag: DAG) -> None:
        cls._stack.append(dag)

    @classmethod
    def pop(cls) -> DAG | None:
        return cls._stack.pop() if cls._stack else None

    @classmethod
    def current(cls) -> DAG | None:
        return cls._stack[-1] if cls._stack else None


class DAG:
    """A workflow: tasks, their dependencies and when to run them.

    ``schedule`` is a cron string, a preset (``@daily`` ...), a ``timedelta``, a
    :class:`Timetable` or ``None`` (manual only). Its deprecated names ``schedule_interval``
    and ``timetable``, ``concurrency`` (``max_active_tasks``) and ``full_filepath`` (no
    effect) are accepted with a warning (:mod:`squall.sdk.deprecation`).

    ``catchup``, ``max_active_runs`` and ``max_active_tasks`` left out, and the time zone of
    a DAG whose ``start_date`` is naive or missing, come from the deployment's settings
    (:mod:`squall.sdk.dag_defaults`).
    """

    def __init__(
        self,
        dag_id: str,
        description: str | None = None,
        schedule: Any = _UNSET,
        schedule_interval: Any = _UNSET,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        catchup: bool | None = None,
        default_args: dict[str, Any] | None = None,
        max_active_runs: int | None = None,
        max_active_tasks: int | None = None,
        concurrency: int | None = None,
        dagrun_timeout: timedelta | None = None,
        tags: Iterable[str] | None = None,
        params: Mapping[str, Any] | None = None,
        doc_md: str | None = None,
        on_success_callback: DagCallback | None = None,
        on_failure_callback: DagCallback | None = None,
        sla_miss_callback: Callable[..., Any] | None = None,
        user_defined_macros: dict[str, Any] | None = None,
        user_defined_filters: dict[str, Callable[..., Any]] | None = None,
        template_searchpath: str | Iterable[str] | None = None,
        render_template_as_native_obj: bool = False,
        is_paused_upon_creation: bool | None = None,
        owner_links: dict[str, str] | None = None,
        timezone: str | None = None,
        timetable: Timetable | None = None,
        full_filepath: str | None = None,
        # Airflow 2.7-2.10 arguments (squall.sdk.dag_options)
        max_consecutive_failed_dag_runs: int = 0,
        fail_stop: bool = False,
        template_undefined: type[Any] | None = None,
        jinja_environment_kwargs: dict[str, Any] | None = None,
        access_control: dict[str, Any] | None = None,
        default_view: str | None = None,
        orientation: str = "LR",
        auto_register: bool = True,
        dag_display_name: str | None = None,
    ) -> None:
        if not isinstance(dag_id, str) or not dag_id:
            raise DagDefinitionError(f"dag_id must be a non-empty string, got {dag_id!r}")
        _validate_key(dag_id, "dag_id")
        schedule = _deprecated_schedule(dag_id, schedule, schedule_interval, timetable)
        if concurrency is not None:
            warn_deprecated(f"DAG {dag_id}: concurrency is deprecated; use max_active_tasks")
            if concurrency or max_active_tasks is None:  # Airflow 2.10: it wins when set
                max_active_tasks = concurrency
        if full_filepath is not None:
            warn_deprecated(f"DAG {dag_id}: full_filepath is deprecated and has no effect; "
                            "leave it out")
        defaults = current_defaults()
        self.dag_id = dag_id
        self.description = description
        self.default_args: dict[str, Any] = dict(default_args or {})
        start = start_date if start_date is not None else self.default_args.get("start_date")
        tz_name = timezone or _tz_name_of(start) or defaults.timezone
        self.timezone = pendulum.timezone(tz_name)
        self.start_date = coerce_datetime(start, self.timezone)
        end = end_date if end_date is not None else self.default_args.get("end_date")
        self.end_date = coerce_datetime(end, self.timezone)
        raw_schedule = None if schedule is _UNSET else schedule
        self.schedule: Any = raw_schedule
        self.timetable: Timetable = timetable_from_schedule(raw_schedule, self.timezone)
        self.catchup = defaults.catchup if catchup is None else bool(catchup)
        if max_active_runs is None:
            max_active_runs = defaults.max_active_runs
        if not isinstance(max_active_runs, int) or max_active_runs < 1:
            raise DagDefinitionError(f"DAG {dag_id}: max_active_runs must be an int >= 1")
        limit = getattr(self.timetable, "active_runs_limit", None)
        if limit is not None and max_active_runs > limit:
            raise DagDefinitionError(
                f"DAG {dag_id}: invalid max_active_runs: schedule {self.timetable.summary!r} "
                f"requires max_active_runs <= {limit}")
        self.max_active_runs = max_active_runs
        self.max_active_tasks: int = (
            defaults.max_active_tasks if max_active_tasks is None else int(max_active_tasks)
        )
        if self.max_active_tasks < 1:
            raise DagDefinitionError(f"DAG {dag_id}: max_active_tasks must be >= 1")
        if dagrun_timeout is not None and not isinstance(dagrun_timeout, timedelta):
            raise DagDefinitionError(f"DAG {dag_id}: dagrun_timeout must be a timedelta")
        self.dagrun_timeout = dagrun_timeout
        self.tags: list[str] = sorted(set(tags or []))
        self.params = _dag_params(dag_id, params, self.default_args, self.timetable)
        #: the run's conf overrides the tries' params ([core] dag_run_conf_overrides_params
        #: of whoever imported the DAG file: a worker, ``squall dags test``)
        self.conf_overrides_params = defaults.conf_overrides_params
        self.doc_md = doc_md
        self.on_success_callback = on_success_callback
        self.on_failure_callback = on_failure_callback
        #: called by the DAG processor with Airflow's arguments when tasks miss their ``sla``
        #: (squall.scheduler.sla)
        self.sla_miss_callback = sla_miss_callback
        self.user_defined_macros = dict(user_defined_macros or {})
        self.user_defined_filters = dict(user_defined_filters or {})
        if isinstance(template_searchpath, str):
            template_searchpath = [template_searchpath]
        self.template_searchpath: list[str] = list(template_searchpath or [])
        self.render_template_as_native_obj = render_template_as_native_obj
        self.is_paused_upon_creation = is_paused_upon_creation
        self.owner_links = dict(owner_links or {})
        options = DagOptions.build(
            dag_id, max_consecutive_failed_dag_runs=max_consecutive_failed_dag_runs,
            fail_stop=fail_stop, template_undefined=template_undefined,
            jinja_environment_kwargs=jinja_environment_kwargs, access_control=access_control,
            default_view=default_view, orientation=orientation, auto_register=auto_register)
        #: pause the DAG after this many failed runs in a row (0: never; the scheduler)
        self.max_consecutive_failed_dag_runs = options.max_consecutive_failed_dag_runs
        #: a failed task stops the rest of its run (Airflow's fail_stop)
        self.fail_stop = options.fail_stop
        self.template_undefined = options.template_undefined
        self.jinja_environment_kwargs = options.jinja_environment_kwargs
        self.access_control = options.access_control
        self.default_view = options.default_view
        self.orientation = options.orientation
        self.auto_register = options.auto_register
        self.task_dict: dict[str, BaseOperator] = {}
        #: the name shown instead of the id (API ``dag_display_name``, the UI); Airflow 2.9
        self._dag_display_name = dag_display_name
        #: upstream task id -> downstream task id -> {"label": ...} (edge labels)
        self.edge_info: dict[str, dict[str, dict[str, Any]]] = {}
        self.fileloc: str = _caller_file()
        from squall.sdk.taskgroup import TaskGroup

        self.task_group: TaskGroup = TaskGroup.create_root(self)
        if DagContext.created is not None:
            DagContext.created.append(self)

    # Context manager -----------------------------------------------------------------

    def __enter__(self) -> DAG:
        DagContext.push(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        DagContext.pop()

    def __repr__(self) -> str:
        return f"<DAG: {self.dag_id}>"

    def param(self, name: str, default: Any = NOTSET) -> DagParam:
        """A reference to the param ``name``, resolved from the run's conf when a task
        renders it (Airflow's ``DAG.param``); a ``default`` sets the DAG's param."""
        return DagParam(self, name, default)

    @property
    def dag_display_name(self) -> str:
        """The name to show: ``dag_display_name`` if given, else the DAG id."""
        return self._dag_display_name or self.dag_id

    def set_edge_info(self, upstream_task_id: str, downstream_task_id: str,
                      info: dict[str, Any]) -> None:
        """Record information (an edge label) on the edge between two tasks."""
        self.edge_info.setdefault(upstream_task_id, {})[downstream_task_id] = dict(info)

    def get_edge_info(self, upstream_task_id: str, downstream_task_id: str) -> dict[str, Any]:
        """The information on an edge (``{}`` when there is none)."""
        return dict(self.edge_info.get(upstream_task_id, {}).get(downstream_task_id, {}))

    # Tasks ----------------------------------------------------------------------------

    def add_task(self, task: BaseOperator) -> None:
        if task.task_id in self.task_dict and self.task_dict[task.task_id] is not task:
            raise DuplicateTaskIdError(
                f"DAG {self.dag_id}: task_id {task.task_id!r} is used by more than one task"
            )
        check_fail_stop_rule(self, task)
        self.task_dict[task.task_id] = task

    @property
    def tasks(self) -> list[BaseOperator]:
        return list(self.task_dict.values())

    @property
    def task_ids(self) -> list[str]:
        return list(self.task_dict)

    def get_task(self, task_id: str) -> BaseOperator:
        try:
            return self.task_dict[task_id]
        except KeyError:
            raise TaskNotFound(f"DAG {self.dag_id} has no task {task_id!r}") from None

    def has_task(self, task_id: str) -> bool:
        return task_id in self.task_dict

    @property
    def roots(self) -> list[BaseOperator]:
        return [t for t in self.task_dict.values() if not t.upstream_task_ids]

    @property
    def leaves(self) -> list[BaseOperator]:
        return [t for t in self.task_dict.values() if not t.downstream_task_ids]

    @property
    def owner(self) -> str:
        return ", ".join(sorted({t.owner for t in self.task_dict.values()}))

    # Validation -----------------------------------------------------------------------

    def check_cycle(self) -> None:
        """Raise :class:`CycleError` naming the tasks of a cycle, if there is one."""
        white, grey, black = 0, 1, 2
        color = dict.fromkeys(self.task_dict, white)
        for start in self.task_dict:
            if color[start] != white:
                continue
            path: list[str] = []
            stack: list[tuple[str, Iterable[str]]] = [
                (start, iter(sorted(self.task_dict[start].downstream_task_ids)))
            ]
            color[start] = grey
            path.append(start)
            while stack:
                node, children = stack[-1]
                child = next(iter(children), None)
                if child is None:
                    stack.pop()
                    path.pop()
                    color[node] = black
                    continue
                if color.get(child, white) == grey:
                    cycle = [*path[path.index(child):], child]
                    raise CycleError(
                        f"DAG {self.dag_id} has a cycle: {' >> '.join(cycle)}"
                    )
                if color.get(child, white) == white:
                    color[child] = grey
                    path.append(child)
                    stack.append((child, iter(sorted(self.task_dict[child].downstream_task_ids))))

    def validate(self) -> None:
        """Everything a DAG file is checked for when it is loaded."""
        for task in self.task_dict.values():
            check_fail_stop_rule(self, task)
            for other in task.upstream_task_ids | task.downstream_task_ids:
                if other not in self.task_dict:
                    raise DagDefinitionError(
                        f"DAG {self.dag_id}: task {task.task_id} depends on {other!r}, "
                        "which is not in this DAG"
                    )
            if task.is_setup:  # Airflow's DAG.validate_setup_teardown
                for down in task.downstream_task_ids:
                    rule = self.task_dict[down].trigger_rule
                    if not self.task_dict[down].is_teardown and rule != "all_success":
                        raise DagDefinitionError(
                            f"DAG {self.dag_id}: setup task {task.task_id} is followed by "
                            f"{down} with trigger rule {rule}: setup tasks must be followed "
                            "with trigger rule ALL_SUCCESS")
        self.check_cycle()

    def topological_sort(self) -> list[BaseOperator]:
        order: list[BaseOperator] = []
        indegree = {tid: len(t.upstream_task_ids) for tid, t in self.task_dict.items()}
        ready = sorted(tid for tid, d in indegree.items() if d == 0)
        while ready:
            tid = ready.pop(0)
            order.append(self.task_dict[tid])
            for down in sorted(self.task_dict[tid].downstream_task_ids):
                indegree[down] -= 1
                if indegree[down] == 0:
                    ready.append(down)
        if len(order) != len(self.task_dict):
            self.check_cycle()
        return order

    def partial_subset(self, task_ids: Iterable[str]) -> list[str]:
        return [t for t in task_ids if t in self.task_dict]

    # Scheduling helpers ---------------------------------------------------------------

    @property
    def schedule_summary(self) -> str:
        return self.timetable.summary

    def tree_lines(self) -> list[str]:
        """The DAG as indented text, one task a line (for ``squall dags show``)."""
        lines: list[str] = []

        def walk(task: BaseOperator, depth: int, seen: set[str]) -> None:
            lines.append(f"{'    ' * depth}<Task({type(task).__name__}): {task.task_id}>")
            if task.task_id in seen:
                return
            for down in sorted(task.downstream_task_ids):
                walk(self.task_dict[down], depth + 1, seen | {task.task_id})

        for root in sorted(self.roots, key=lambda t: t.task_id):
            walk(root, 0, set())
        return lines


@overload
def dag(dag_id: Callable[P, Any]) -> Callable[P, DAG]: ...


@overload
def dag(dag_id: str | None = None, **dag_kwargs: Any) -> Callable[[Callable[P, Any]],
                                                                  Callable[P, DAG]]: ...


def dag(dag_id: Any = None, **dag_kwargs: Any) -> Any:
    """Decorate a function that builds tasks; calling it returns the DAG.

    Keyword parameters of the function become DAG params (their defaults the params'
    defaults), as with Airflow's ``@dag``.
    """
    if callable(dag_id):  # used bare: @dag
        return dag()(dag_id)

    def decorator(func: Callable[P, Any]) -> Callable[P, DAG]:
        @functools.wraps(func)
        def factory(*args: P.args, **kwargs: P.kwargs) -> DAG:
            sig = inspect.signature(func)
            bound = sig.bind_partial(*args, **kwargs)
            bound.apply_defaults()
            kw = dict(dag_kwargs)
            kw.setdefault("description", (func.__doc__ or "").strip() or None)
            kw.setdefault("doc_md", func.__doc__)
            new_dag = DAG(dag_id or func.__name__, **kw)
            # each argument a DagParam (its value validated against a Param of that name in
            # ``params``), resolved from the run's conf when a task renders it, as Airflow's
            try:
                f_kwargs = {name: new_dag.param(name, value)
                            for name, value in bound.arguments.items()}
            except ParamValidationError as exc:
                raise DagDefinitionError(f"DAG {new_dag.dag_id}: {exc}") from None
            new_dag.fileloc = inspect.getfile(func)
            build: Callable[..., Any] = func  # called with DagParams, not its declared types
            with new_dag:
                build(**f_kwargs)
            return new_dag

        return factory

    return decorator


def _deprecated_schedule(dag_id: str, schedule: Any, schedule_interval: Any,
                         timetable: Timetable | None) -> Any:
    """The schedule given by ``schedule`` or one of its deprecated names, by Airflow 2.10's
    rules: a warning for each deprecated name given; at most one of the three set to
    something (not None / empty); ``timetable``, then ``schedule_interval``, wins."""
    given = [name for name, value in (("schedule", schedule),
                                      ("schedule_interval", schedule_interval),
                                      ("timetable", timetable))
             if value is not _UNSET and bool(value)]
    if len(given) > 1:
        raise DagDefinitionError(f"DAG {dag_id}: give only one of {', '.join(given)}")
    if schedule_interval is not _UNSET:
        warn_deprecated(f"DAG {dag_id}: schedule_interval is deprecated; use schedule")
    if timetable is not None:
        warn_deprecated(f"DAG {dag_id}: timetable is deprecated; use schedule")
        return timetable
    return schedule_interval if schedule_interval is not _UNSET else schedule


def get_current_dag() -> DAG | None:
    return DagContext.current()


def _tz_name_of(value: Any) -> str | None:
    tz = getattr(value, "tzinfo", None)
    if tz is None:
        return None
    name = getattr(tz, "name", None) or getattr(tz, "key", None)
    if name:
        return str(name)
    offset = value.utcoffset()
    if offset == timedelta(0):
        return "UTC"
    return None


_SDK_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_COMPAT_DIR = os.path.join(os.path.dirname(os.path.dirname(_SDK_DIR)), "compat") + os.sep
_EXAMPLES_DIR = os.path.join(_SDK_DIR, "examples") + os.sep


def _dag_params(dag_id: str, params: Mapping[str, Any] | None, default_args: dict[str, Any],
                timetable: Timetable) -> ParamsDict:
    """The DAG's params: ``params`` updated with ``default_args["params"]`` (which leaves
    ``default_args``), as Airflow's ``DAG.__init__``. A DAG that can be scheduled must have
    params that validate without a conf (Airflow's ``DAG.validate_schedule_and_params``)."""
    merged = ParamsDict(params) if not isinstance(params, ParamsDict) else copy.copy(params)
    if "params" in default_args:
        merged.update(default_args.pop("params") or {})
    if timetable.can_be_scheduled:
        try:
            merged.validate()
        except ParamValidationError as exc:
            raise DagDefinitionError(
                f"DAG {dag_id}: DAG is not allowed to define a Schedule, if there are any "
                "required params without default values or default values are not valid "
                f"({exc})") from None
    return merged


def _caller_file() -> str:
    """The file that created the DAG: the first frame outside Squall's authoring API and
    its Airflow compatibility layer (the shipped examples are DAG files like any other)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if (not filename.startswith((_SDK_DIR, _COMPAT_DIR))
                or filename.startswith(_EXAMPLES_DIR)):
            return filename
        frame = frame.f_back  # type: ignore[assignment]
    return "<unknown>"


def _validate_key(key: str, what: str) -> None:
    import re

    if len(key) > 250 or not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
        raise DagDefinitionError(
            f"{what} {key!r} must be at most 250 characters of letters, digits, '_', '.', '-'"
        )
