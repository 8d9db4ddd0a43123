"""Jinja templating of task fields, and the template context a running task sees.

The context has the keys Airflow 2 gives (``ds``, ``ts``, ``logical_date``,
``data_interval_start``, ``prev_ds``, ``next_ds``, ``params``, ``ti``, ``macros`` ...). As in
Airflow, ``conf`` is the deployment's configuration (:class:`ConfigView`, read on first use);
the run's conf is ``dag_run.conf``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import dateutil.parser
import dateutil.relativedelta
import jinja2
import pendulum
from jinja2.nativetypes import NativeEnvironment

from squall.common.errors import TaskControl, TemplateError
from squall.sdk.datasets.events import (
    InletEventsAccessors,
    OutletEventAccessors,
    TriggeringDatasetEvents,
)
from squall.sdk.params import DagParam, InvalidParams, try_params
from squall.secrets.connection_store import ConnectionAccessor
from squall.secrets.variables import VariableAccessor

if TYPE_CHECKING:
    from squall.common.settings import Settings
    from squall.sdk.dag import DAG
    from squall.sdk.operators.base import BaseOperator, Context

log = logging.getLogger(__name__)

__all__ = [
    "ConfigView",
    "PreviousSuccess",
    "build_context",
    "ds_add",
    "ds_format",
    "make_jinja_env",
    "make_macros",
    "render_template",
    "render_template_fields",
]


# --------------------------------------------------------------------------- macros


def ds_add(ds: str, days: int) -> str:
    """``ds_add("2015-01-01", 5)`` -> ``"2015-01-06"`` (days may be negative)."""
    if not days:
        return str(ds)
    day = datetime.strptime(str(ds), "%Y-%m-%d") + timedelta(days=days)
    return day.strftime("%Y-%m-%d")


def ds_format(ds: str, input_format: str, output_format: str) -> str:
    """``ds_format("2015-01-01", "%Y-%m-%d", "%m-%d-%y")`` -> ``"01-01-15"``."""
    return datetime.strptime(str(ds), input_format).strftime(output_format)


def make_macros() -> SimpleNamespace:
    """The ``macros`` namespace of the template context."""
    return SimpleNamespace(
        ds_add=ds_add,
        ds_format=ds_format,
        datetime=datetime,
        timedelta=timedelta,
        dateutil=dateutil,
        json=json,
        time=time,
        uuid=uuid,
        random=random.random,  # Airflow's macros.random is random.random, the function
    )


# --------------------------------------------------------------------------- filters


def _ds_filter(value: datetime) -> str:
    return value.strftime("%Y-%m-%d")


def _ds_nodash_filter(value: datetime) -> str:
    return value.strftime("%Y%m%d")


def _ts_filter(value: datetime) -> str:
    return value.isoformat()


def _ts_nodash_filter(value: datetime) -> str:
    return value.strftime("%Y%m%dT%H%M%S")


def _ts_nodash_with_tz_filter(value: datetime) -> str:
    return value.isoformat().replace("-", "").replace(":", "")


_FILTERS: dict[str, Callable[[datetime], str]] = {
    "ds": _ds_filter,
    "ds_nodash": _ds_nodash_filter,
    "ts": _ts_filter,
    "ts_nodash": _ts_nodash_filter,
    "ts_nodash_with_tz": _ts_nodash_with_tz_filter,
}


# --------------------------------------------------------------------------- environment


def template_searchpath(dag: DAG | None) -> list[str]:
    """Where template files are looked up: the DAG file's folder, then its searchpath."""
    if dag is None:
        return []
    paths: list[str] = []
    fileloc = getattr(dag, "fileloc", None)
    if fileloc and not str(fileloc).startswith("<"):
        paths.append(os.path.dirname(os.path.abspath(fileloc)))
    paths.extend(str(p) for p in getattr(dag, "template_searchpath", []) or [])
    return paths


def make_jinja_env(dag: DAG | None) -> jinja2.Environment:
    """The Jinja environment used to render the fields of ``dag``'s tasks.

    Undefined names are errors (``StrictUndefined``, or the DAG's ``template_undefined``);
    the DAG's ``jinja_environment_kwargs`` are passed on; ``render_template_as_native_obj``
    selects a :class:`~jinja2.nativetypes.NativeEnvironment`, which renders to Python
    objects instead of strings.
    """
    native = bool(getattr(dag, "render_template_as_native_obj", False))
    env_class: type[jinja2.Environment] = NativeEnvironment if native else jinja2.Environment
    options: dict[str, Any] = {
        "loader": jinja2.FileSystemLoader(template_searchpath(dag)),
        "undefined": getattr(dag, "template_undefined", None) or jinja2.StrictUndefined,
        "extensions": ["jinja2.ext.do"],
        "autoescape": False,
    }
    # the DAG's jinja_environment_kwargs win, as in Airflow's DAG.get_template_env
    options.update(getattr(dag, "jinja_environment_kwargs", None) or {})
    env = env_class(**options)
    env.filters.update(_FILTERS)
    if dag is not None:
        env.globals.update(dag.user_defined_macros)
        env.filters.update(dag.user_defined_filters)
    return env


# --------------------------------------------------------------------------- rendering


def _load_template(name: str, env: jinja2.Environment) -> jinja2.Template:
    if os.path.isabs(name) and os.path.isfile(name):
        with open(name, encoding="utf-8") as fh:
            return env.from_string(fh.read())
    return env.get_template(name)


def _render(
    content: Any,
    context: Mapping[str, Any],
    env: jinja2.Environment,
    template_ext: Sequence[str],
    seen: set[int],
) -> Any:
    from squall.sdk.operators.base import XComArg

    if id(content) in seen:
        return content  # a mapped instance's value read from XCom, or rendered already
    if isinstance(content, XComArg | DagParam):
        # a value from XCom or the run's conf is data, never a template
        return content.resolve(dict(context))
    if isinstance(content, str):
        if template_ext and content.endswith(tuple(template_ext)):
            return _load_template(content, env).render(context)
        return env.from_string(content).render(context)
    if isinstance(content, tuple):
        items = [_render(v, context, env, template_ext, seen) for v in content]
        if hasattr(content, "_fields"):  # a namedtuple
            return type(content)(*items)
        return tuple(items)
    if isinstance(content, list):
        return [_render(v, context, env, template_ext, seen) for v in content]
    if isinstance(content, dict):
        return {k: _render(v, context, env, template_ext, seen) for k, v in content.items()}
    if isinstance(content, set | frozenset):
        return type(content)(_render(v, context, env, template_ext, seen) for v in content)
    fields = getattr(content, "template_fields", None)
    if fields and not isinstance(content, type) and id(content) not in seen:
        # an object with template fields of its own: render them in place
        seen.add(id(content))
        for name in fields:
            value = getattr(content, name)
            setattr(content, name, _render(value, context, env, template_ext, seen))
    return content


def render_template(
    content: Any,
    context: Mapping[str, Any],
    env: jinja2.Environment | None = None,
    template_ext: Sequence[str] = (),
) -> Any:
    """Render ``content``: strings with Jinja, lists/tuples/dicts/sets item by item,
    XComArgs resolved to their value, anything else returned as is.

    A string ending in one of ``template_ext`` is the name of a template file. Jinja
    failures raise :class:`TemplateError`.
    """
    if env is None:
        env = make_jinja_env(None)
    try:
        return _render(content, context, env, template_ext, set())
    except jinja2.TemplateError as exc:
        raise TemplateError(_describe(exc)) from exc


def render_template_fields(
    task: BaseOperator, context: Mapping[str, Any], jinja_env: jinja2.Environment | None = None
) -> None:
    """Render each of ``task.template_fields`` in place on ``task``.

    XComArg values (also inside lists, tuples and dicts) are replaced by the value they
    refer to. Any failure raises :class:`TemplateError` naming the task and the field;
    params that did not validate (:class:`~squall.sdk.params.InvalidParams`) raise their
    :class:`~squall.common.errors.ParamValidationError` first.
    """
    params = context.get("params")
    if isinstance(params, InvalidParams):
        raise params.error
    env = jinja_env
    # a mapped instance's values read from XCom (squall.sdk.mapping.MappedOperator.unmap)
    unrendered: set[int] = set(task.__dict__.get("_squall_unrendered", ((), ()))[0])
    for field in task.template_fields:
        if not hasattr(task, field):
            raise TemplateError(
                f"task {task.task_id} field {field}: {type(task).__name__} has no attribute "
                f"{field!r} (listed in template_fields)"
            )
        value = getattr(task, field)
        if value is None or (isinstance(value, list | tuple | dict) and not value):
            continue  # nothing to render (no Jinja environment is built for it)
        if env is None:
            env = make_jinja_env(task.dag)
        try:
            rendered = _render(value, context, env, task.template_ext, set(unrendered))
        except TaskControl:
            raise
        except Exception as exc:
            raise TemplateError(f"task {task.task_id} field {field}: {_describe(exc)}") from exc
        setattr(task, field, rendered)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TemplateError):
        return str(exc)
    if isinstance(exc, jinja2.TemplateNotFound):
        return f"template file {exc.name!r} not found"
    text = str(exc)
    if isinstance(exc, jinja2.TemplateSyntaxError) and exc.lineno:
        text = f"{exc.message} (line {exc.lineno})"
    return f"{type(exc).__name__}: {text}"


# --------------------------------------------------------------------------- context

_NO_FALLBACK: Any = object()


def _as_datetime(value: Any) -> pendulum.DateTime | None:
    if value is None:
        return None
    if isinstance(value, pendulum.DateTime):
        dt = value
    elif isinstance(value, datetime):
        dt = pendulum.instance(value, tz="UTC")
    elif isinstance(value, str):
        parsed = pendulum.parse(value)
        if not isinstance(parsed, pendulum.DateTime):
            raise TemplateError(f"not a date-time: {value!r}")
        dt = parsed
    else:
        raise TemplateError(f"not a date-time: {value!r}")
    return dt.in_timezone("UTC")


@dataclass(frozen=True)
class PreviousSuccess:
    """The DAG's latest successful run before this one (by logical date), as Airflow 2's
    ``prev_*_success`` context keys show it."""

    logical_date: datetime | None
    data_interval_start: datetime | None
    data_interval_end: datetime | None
    #: when this task's instance in that run started (None when it has none)
    start_date: datetime | None


class ConfigView:
    """The ``conf`` of the template context: the deployment's settings, asked as Airflow's
    ``airflow.configuration.conf`` is (``conf.get("core", "dags_folder")``,
    ``conf.getboolean(...)``, ``getint``, ``getfloat``, ``has_option``).

    ``load`` is called on first use only (most tasks never ask).
    """

    def __init__(self, load: Callable[[], Settings]) -> None:
        self._load = load
        self._settings: Settings | None = None

    def _value(self, section: str, key: str, fallback: Any) -> Any:
        from squall.common.errors import SettingsError

        if self._settings is None:
            self._settings = self._load()
        try:
            return self._settings.get(section.lower(), key.lower())
        except SettingsError:
            if fallback is not _NO_FALLBACK:
                return fallback
            raise

    def get(self, section: str, key: str, fallback: Any = _NO_FALLBACK, **kwargs: Any) -> Any:
        """The value as text (``""`` for an unset optional value); ``fallback`` (or
        ``default``) for an unknown key, else :class:`SettingsError`."""
        if "default" in kwargs:
            fallback = kwargs["default"]
        value = self._value(section, key, fallback)
        if value is fallback:
            return value
        if value is None:
            return ""
        if isinstance(value, bool):
            return "True" if value else "False"
        return str(value)

    def getboolean(self, section: str, key: str, fallback: Any = _NO_FALLBACK) -> bool:
        value = self._value(section, key, fallback)
        if isinstance(value, str):
            return value.strip().lower() in ("t", "true", "1", "yes", "on")
        return bool(value)

    def getint(self, section: str, key: str, fallback: Any = _NO_FALLBACK) -> int:
        return int(self._value(section, key, fallback))

    def getfloat(self, section: str, key: str, fallback: Any = _NO_FALLBACK) -> float:
        return float(self._value(section, key, fallback))

    def has_option(self, section: str, key: str) -> bool:
        return self._value(section, key, None) is not None

    def __repr__(self) -> str:
        return "<squall configuration>"


def _load_settings() -> Settings:
    from squall.common.settings import Settings

    return Settings.load()


def _utc(value: datetime) -> pendulum.DateTime:
    return pendulum.instance(value.astimezone(UTC), tz="UTC")


def previous_schedule(dag: DAG | None, logical: datetime) -> pendulum.DateTime | None:
    """The logical date of the schedule tick before ``logical`` (Airflow 2's
    ``dag.previous_schedule``); None for a DAG without a periodic schedule."""
    from squall.sdk.timetables.base import _DataIntervalTimetable

    timetable = getattr(dag, "timetable", None)
    timetable = getattr(timetable, "timetable", timetable)  # DatasetOrTimeSchedule's
    if not isinstance(timetable, _DataIntervalTimetable):
        return None
    return _utc(timetable._prev(logical.astimezone(UTC)))


def next_schedule(dag: DAG | None, start: datetime, end: datetime) -> pendulum.DateTime | None:
    """The logical date of the run after the one covering ``[start, end)``, ignoring the
    DAG's start and end dates and catchup (Airflow 2's ``next_dagrun_info(...,
    restricted=False)``); None when the schedule has none."""
    from squall.sdk.timetables.base import DataInterval

    timetable = getattr(dag, "timetable", None)
    if timetable is None:
        return None
    info = timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(_utc(start), _utc(end)),
        start_date=None, end_date=None, catchup=True, now=_utc(end),
    )
    return None if info is None else _utc(info.logical_date)


def _ds(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%d")


def _nodash(value: str | None) -> str | None:
    return None if value is None else value.replace("-", "")


def build_context(
    *,
    dag: DAG | None,
    task: BaseOperator,
    dag_run: Any = None,
    ti: Any = None,
    logical_date: datetime | None = None,
    data_interval: tuple[datetime | None, datetime | None] = (None, None),
    conf: dict[str, Any] | None = None,
    test_mode: bool = False,
    previous_success: PreviousSuccess | None = None,
    config: ConfigView | None = None,
) -> Context:
    """The template context of one task instance try, with the keys Airflow 2 gives.

    Dates default to the DAG run's and are converted to UTC (as in Airflow, ``ds`` is the
    UTC date of the logical date; ``data_interval`` is (start, end)). ``params`` is
    ``dag.params``, updated with ``task.params``, then with the run's ``conf`` (the ``conf``
    argument, else ``dag_run.conf``) unless ``[core] dag_run_conf_overrides_params`` was off
    where the DAG file was imported (``dag.conf_overrides_params``),
    validated (:func:`squall.sdk.params.process_params`: a param that does not validate
    raises :class:`~squall.common.errors.ParamValidationError`). ``prev_ds`` / ``next_ds`` and their
    ``*_execution_date`` are the neighbouring schedule ticks, or this run's logical date for
    a manually triggered run (``dag_run.external_trigger``), as in Airflow 2.2+.
    ``previous_success`` gives the ``prev_*_success`` keys (None: there is none);
    ``config`` is the context's ``conf`` (default: the settings loaded on first use).
    """
    if conf is None and dag_run is not None:
        conf = getattr(dag_run, "conf", None)
    conf = dict(conf or {})
    if logical_date is None and dag_run is not None:
        logical_date = dag_run.logical_date
    logical = _as_datetime(logical_date) or pendulum.now("UTC")
    data_interval_start, data_interval_end = data_interval
    if data_interval_start is None and dag_run is not None:
        data_interval_start = dag_run.data_interval_start
    if data_interval_end is None and dag_run is not None:
        data_interval_end = dag_run.data_interval_end
    start = _as_datetime(data_interval_start) or logical
    end = _as_datetime(data_interval_end) or start

    merged_params = try_params(
        dag.params if dag is not None else None, task.params, conf,
        conf_overrides=bool(getattr(dag, "conf_overrides_params", True)))

    if dag_run is not None and getattr(dag_run, "external_trigger", False):
        prev_logical: pendulum.DateTime | None = logical
        next_logical: pendulum.DateTime | None = logical
    else:
        prev_logical = previous_schedule(dag, logical)
        next_logical = next_schedule(dag, start, end)
    prev = previous_success or PreviousSuccess(None, None, None, None)

    ds = logical.strftime("%Y-%m-%d")
    ds_nodash = ds.replace("-", "")
    yesterday_ds = _ds(logical - timedelta(days=1))
    tomorrow_ds = _ds(logical + timedelta(days=1))
    ts = logical.isoformat()
    run_id = getattr(dag_run, "run_id", None) or getattr(ti, "run_id", None)
    dag_id = dag.dag_id if dag is not None else task.dag_id
    return {
        "conf": config if config is not None else ConfigView(_load_settings),
        "conn": ConnectionAccessor(),
        "dag": dag,
        "dag_run": dag_run,
        "data_interval_start": start,
        "data_interval_end": end,
        "ds": ds,
        "ds_nodash": ds_nodash,
        "execution_date": logical,
        "expanded_ti_count": None,
        "inlet_events": InletEventsAccessors(list(getattr(task, "inlets", []))),
        "inlets": list(getattr(task, "inlets", [])),
        "logical_date": logical,
        "macros": make_macros(),
        "map_index_template": None,
        "next_ds": _ds(next_logical),
        "next_ds_nodash": _nodash(_ds(next_logical)),
        "next_execution_date": next_logical,
        "outlet_events": OutletEventAccessors(),
        "outlets": list(getattr(task, "outlets", [])),
        "params": merged_params,
        "prev_data_interval_start_success": _as_datetime(prev.data_interval_start),
        "prev_data_interval_end_success": _as_datetime(prev.data_interval_end),
        "prev_ds": _ds(prev_logical),
        "prev_ds_nodash": _nodash(_ds(prev_logical)),
        "prev_execution_date": prev_logical,
        "prev_execution_date_success": _as_datetime(prev.logical_date),
        "prev_start_date_success": _as_datetime(prev.start_date),
        "run_id": run_id,
        "task": task,
        "task_instance": ti,
        "task_instance_key_str": f"{dag_id}__{task.task_id}__{ds_nodash}",
        "test_mode": test_mode,
        "ti": ti,
        "tomorrow_ds": tomorrow_ds,
        "tomorrow_ds_nodash": _nodash(tomorrow_ds),
        "triggering_dataset_events": TriggeringDatasetEvents(),
        "try_number": getattr(ti, "try_number", 1),
        "ts": ts,
        "ts_nodash": logical.strftime("%Y%m%dT%H%M%S"),
        "ts_nodash_with_tz": ts.replace("-", "").replace(":", ""),
        "var": VariableAccessor(),
        "yesterday_ds": yesterday_ds,
        "yesterday_ds_nodash": _nodash(yesterday_ds),
    }
