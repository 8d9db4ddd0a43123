"""Jinja templating of task fields, and the template context a running task sees.

The context has the keys Airflow 2 users know (``ds``, ``ts``, ``logical_date``,
``data_interval_start``, ``params``, ``ti``, ``macros`` ...). One difference: ``conf`` is the
DAG run's conf dict, not the server configuration.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import dateutil.parser
import dateutil.relativedelta
import jinja2
import pendulum
from jinja2.nativetypes import NativeEnvironment

from squall.common.connection_store import ConnectionAccessor
from squall.common.errors import TaskControl, TemplateError
from squall.common.variables import VariableAccessor

if TYPE_CHECKING:
    from squall.sdk.dag import DAG
    from squall.sdk.operators.base import BaseOperator, Context

log = logging.getLogger(__name__)

__all__ = [
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
        random=random,
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

    Undefined names are errors (``StrictUndefined``); ``render_template_as_native_obj``
    selects a :class:`~jinja2.nativetypes.NativeEnvironment`, which renders to Python
    objects instead of strings.
    """
    native = bool(getattr(dag, "render_template_as_native_obj", False))
    env_class: type[jinja2.Environment] = NativeEnvironment if native else jinja2.Environment
    env = env_class(
        loader=jinja2.FileSystemLoader(template_searchpath(dag)),
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.do"],
        autoescape=False,
    )
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

    if isinstance(content, XComArg):
        # a value from XCom is data, never a template
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
    refer to. Any failure raises :class:`TemplateError` naming the task and the field.
    """
    env = jinja_env
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
            rendered = _render(value, context, env, task.template_ext, set())
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


def build_context(
    *,
    dag: DAG | None,
    task: BaseOperator,
    dag_run: Any = None,
    ti: Any = None,
    logical_date: datetime | None = None,
    data_interval_start: datetime | None = None,
    data_interval_end: datetime | None = None,
    conf: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    test_mode: bool = False,
) -> Context:
    """The template context of one task instance try.

    Dates default to the DAG run's and are converted to UTC (as in Airflow, ``ds`` is the
    UTC date of the logical date). ``params`` is ``dag.params``, updated with
    ``task.params``, then with the ``params`` argument, then with the run's ``conf``.
    """
    if conf is None and dag_run is not None:
        conf = getattr(dag_run, "conf", None)
    conf = dict(conf or {})
    if logical_date is None and dag_run is not None:
        logical_date = dag_run.logical_date
    logical = _as_datetime(logical_date) or pendulum.now("UTC")
    if data_interval_start is None and dag_run is not None:
        data_interval_start = dag_run.data_interval_start
    if data_interval_end is None and dag_run is not None:
        data_interval_end = dag_run.data_interval_end
    start = _as_datetime(data_interval_start) or logical
    end = _as_datetime(data_interval_end) or start

    merged_params: dict[str, Any] = {}
    if dag is not None:
        merged_params.update(dag.params)
    merged_params.update(task.params)
    merged_params.update(params or {})
    merged_params.update(conf)

    ds = logical.strftime("%Y-%m-%d")
    ds_nodash = ds.replace("-", "")
    ts = logical.isoformat()
    run_id = getattr(dag_run, "run_id", None) or getattr(ti, "run_id", None)
    dag_id = dag.dag_id if dag is not None else task.dag_id
    return {
        "conf": conf,
        "conn": ConnectionAccessor(),
        "dag": dag,
        "dag_run": dag_run,
        "data_interval_start": start,
        "data_interval_end": end,
        "ds": ds,
        "ds_nodash": ds_nodash,
        "execution_date": logical,
        "expanded_ti_count": None,
        "inlets": [],
        "logical_date": logical,
        "macros": make_macros(),
        "map_index_template": None,
        "outlets": [],
        "params": merged_params,
        "prev_data_interval_start_success": None,
        "prev_data_interval_end_success": None,
        "prev_start_date_success": None,
        "run_id": run_id,
        "task": task,
        "task_instance": ti,
        "task_instance_key_str": f"{dag_id}__{task.task_id}__{ds_nodash}",
        "test_mode": test_mode,
        "ti": ti,
        "triggering_dataset_events": {},
        "try_number": getattr(ti, "try_number", 1),
        "ts": ts,
        "ts_nodash": logical.strftime("%Y%m%dT%H%M%S"),
        "ts_nodash_with_tz": ts.replace("-", "").replace(":", ""),
        "var": VariableAccessor(),
    }
