"""DAGs as JSON: what the DAG processor stores and what schedulers and the API work from.

The scheduler and the API never import user code. A DAG file is parsed in a child process,
which hands back :func:`serialize_dag` of each DAG: a JSON-able dict with the DAG's settings,
its schedule as a timetable *spec*, its task groups and, per task, the attributes that
scheduling depends on. :func:`deserialize_dag` rebuilds a real :class:`~squall.sdk.dag.DAG`
from it whose tasks are :class:`SerializedOperator` stand-ins: same ids, dependencies, trigger
rules, retries, pools, queues and priority weights (so ``priority_weight_total`` gives the
same numbers), but no user code (``execute`` raises).

Layout (version 1)::

    {"__version": 1,
     "dag": {"dag_id": ..., "fileloc": ..., "timezone": "UTC",
             "schedule": {"type": "cron", "expression": "@daily", "timezone": "UTC"},
             "start_date": "2024-01-01T00:00:00+00:00", ...,
             "task_group": {"group_id": null, "children": [...]},
             "tasks": [{"task_id": ..., "operator": "BashOperator", ...}, ...]}}

A mapped task (:class:`squall.sdk.mapping.MappedOperator`, or a task of a mapped task
group) also has ``"expand"``: its expand input, e.g. ``{"type": "dict", "args": [["x",
{"type": "xcom", "task_id": "make", "key": "return_value"}]]}`` (value specs: ``literal``
with its ``length``, ``xcom``, ``map`` of one, ``zip`` of several with ``fill``; ``"list"``
for ``expand_kwargs``; ``"group"``: the mapped task group's id), from which the scheduler
computes the number of instances (:mod:`squall.runs.mapping`). A task with
``max_active_tis_per_dagrun`` has it too; other tasks are serialized as before.

A task with ``outlets`` / ``inlets`` has them too: datasets and aliases in the schedule
condition's encoding (``{"__type": "dataset", "uri", "extra"}``, ``{"__type":
"dataset_alias", "name"}``; other objects are left out, as Airflow's lineage objects).

Schedule specs: ``{"type": "dataset", "condition"}`` (a dataset condition, Airflow's
``__type`` encoding: ``dataset``, ``dataset_alias``, ``dataset_all`` / ``dataset_any`` with
``objects``), ``{"type": "dataset_or_time", "condition", "timetable": <spec>}``,
``{"type": "none"}``, ``{"type": "once"}``, ``{"type": "continuous"}``,
``{"type": "cron", "expression", "timezone"}``, ``{"type": "delta", "seconds", "timezone"}``
or ``{"type": "delta", "relativedelta": {"years", "months", "days", "hours", "minutes",
"seconds", "microseconds"}, "timezone"}``. A time zone is a name, or a UTC offset in seconds
for a fixed-offset zone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pendulum.tz.timezone import FixedTimezone, Timezone

from squall.common.errors import SerializationError, SquallError
from squall.dag_processing.schedule_spec import (
    timetable_from_spec,
    timetable_spec,
)
from squall.dag_processing.schedule_spec import tz_from_json as _tz_from_json
from squall.dag_processing.schedule_spec import tz_to_json as _tz_to_json
from squall.sdk.dag import DAG
from squall.sdk.datasets import Dataset, DatasetAlias, decode_condition, encode_condition
from squall.sdk.operators.base import BaseOperator, Context
from squall.sdk.operators.base_options import DOC_FIELDS
from squall.sdk.params import NOTSET, Param, ParamsDict
from squall.sdk.sensors.external_task import ExternalTaskMarker
from squall.sdk.taskgroup import TaskGroup
from squall.sdk.timetables import coerce_datetime

log = logging.getLogger(__name__)

SERIALIZATION_VERSION = 1

# --------------------------------------------------------------------------- stand-in operator


class SerializedOperator(BaseOperator):
    """A task rebuilt from its serialized form: every scheduling attribute, no user code.

    ``operator_name`` is the original operator's class name; :meth:`execute` raises.
    """

    #: the sensor mode (``"poke"`` / ``"reschedule"``) when the original task had one
    mode: str | None = None
    #: an ExternalTaskMarker's target (``_marker_settings``), else None
    external_task_marker: dict[str, Any] | None = None

    def __init__(
        self,
        *,
        operator_name: str,
        operator_module: str | None = None,
        template_fields: Sequence[str] = (),
        is_sensor: bool = False,
        mode: str | None = None,
        sensor: Mapping[str, Any] | None = None,
        ui_color: str = "#fff",
        has_on_success_callback: bool = False,
        has_on_failure_callback: bool = False,
        has_on_retry_callback: bool = False,
        **kwargs: Any,
    ) -> None:
        self._operator_name = operator_name
        #: a mapped task's expand input (squall.sdk.mapping.MappedOperator.mapped_spec)
        spec = kwargs.pop("mapped_spec", None)
        self.mapped_spec: dict[str, Any] | None = dict(spec) if spec else None
        self.operator_module = operator_module
        self.template_fields = tuple(template_fields)
        self.is_sensor = is_sensor
        if mode is not None:
            self.mode = mode
        #: a sensor's poke_interval, timeout (seconds), soft_fail, exponential_backoff and
        #: max_wait (seconds), as the original had them
        self.sensor_settings: dict[str, Any] | None = dict(sensor) if sensor else None
        self.ui_color = ui_color
        self.has_on_success_callback = has_on_success_callback
        self.has_on_failure_callback = has_on_failure_callback
        self.has_on_retry_callback = has_on_retry_callback
        super().__init__(**kwargs)

    @property
    def operator_name(self) -> str:
        return self._operator_name

    def __repr__(self) -> str:
        return f"<Task({self._operator_name}): {self.task_id}>"

    def execute(self, context: Context) -> Any:
        raise SquallError(
            f"task {self.dag_id}.{self.task_id} ({self._operator_name}) is a stand-in rebuilt "
            "from the serialized DAG and cannot run: load the DAG file to execute it"
        )


# --------------------------------------------------------------------------- serialize


def serialize_dag(dag: DAG) -> dict[str, Any]:
    """The JSON-able form of ``dag`` (see the module docstring for the layout).

    Raises :class:`SerializationError` for a schedule that has no spec (a custom timetable).
    """
    data: dict[str, Any] = {
        "dag_id": dag.dag_id,
        "fileloc": dag.fileloc,
        "description": dag.description,
        "timezone": _tz_to_json(dag.timezone),
        "schedule": timetable_spec(dag),
        "start_date": _dt_to_json(dag.start_date),
        "end_date": _dt_to_json(dag.end_date),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "max_active_tasks": dag.max_active_tasks,
        "dagrun_timeout": _td_to_json(dag.dagrun_timeout),
        "tags": list(dag.tags),
        "params": params_to_json(dag.params),
        "doc_md": dag.doc_md,
        "has_on_success_callback": (
            dag.on_success_callback is not None
            or bool(getattr(dag, "has_on_success_callback", False))
        ),
        "has_on_failure_callback": (
            dag.on_failure_callback is not None
            or bool(getattr(dag, "has_on_failure_callback", False))
        ),
        "has_sla_miss_callback": (
            dag.sla_miss_callback is not None
            or bool(getattr(dag, "has_sla_miss_callback", False))
        ),
        "is_paused_upon_creation": dag.is_paused_upon_creation,
        "render_template_as_native_obj": bool(dag.render_template_as_native_obj),
        "template_searchpath": [str(p) for p in dag.template_searchpath],
        "owner_links": jsonable(dag.owner_links),
        # Airflow 2.7-2.10 DAG arguments (squall.sdk.dag_options); the UI hints as given
        "max_consecutive_failed_dag_runs": int(getattr(dag, "max_consecutive_failed_dag_runs", 0)),
        "fail_stop": bool(getattr(dag, "fail_stop", False)),
        "default_view": getattr(dag, "default_view", "grid"),
        "orientation": getattr(dag, "orientation", "LR"),
        "dag_display_name": dag.dag_display_name,
        "edge_info": jsonable(dag.edge_info),
        "task_group": _serialize_group(dag.task_group),
        "tasks": [_serialize_task(task) for task in dag.task_dict.values()],
    }
    return {"__version": SERIALIZATION_VERSION, "dag": data}


def _serialize_group(group: TaskGroup) -> dict[str, Any]:
    children: list[dict[str, Any]] = []
    for child_id, child in group.children.items():
        if isinstance(child, TaskGroup):
            children.append({"type": "group", **_serialize_group(child)})
        else:
            children.append({"type": "task", "task_id": child_id})
    return {
        "group_id": group.group_id,
        "label": getattr(group, "_label", None),
        "prefix_group_id": group.prefix_group_id,
        "tooltip": group.tooltip,
        "ui_color": getattr(group, "ui_color", "CornflowerBlue"),
        "ui_fgcolor": getattr(group, "ui_fgcolor", "#000"),
        "children": children,
    }


def _serialize_task(task: BaseOperator) -> dict[str, Any]:
    data = _task_fields(task)
    # only a mapped task has "expand" (the others' serialized form, and hash, are unchanged)
    spec = getattr(task, "mapped_spec", None)
    if spec is not None:
        data["expand"] = jsonable(spec)
    per_run = getattr(task, "max_active_tis_per_dagrun", None)
    if per_run is not None:
        data["max_active_tis_per_dagrun"] = per_run
    # only a task with datasets has them (the others' serialized form, and hash, unchanged)
    for name in ("outlets", "inlets"):
        encoded = [encode_condition(o) for o in getattr(task, name, None) or ()
                   if isinstance(o, Dataset | DatasetAlias)]
        if encoded:
            data[name] = encoded
    return data


def _task_fields(task: BaseOperator) -> dict[str, Any]:
    mode = getattr(task, "mode", None)
    is_sensor = mode is not None or bool(getattr(task, "is_sensor", False))
    email = task.email
    return {
        "task_id": task.task_id,
        "operator": task.operator_name,
        "operator_module": (
            task.operator_module if isinstance(task, SerializedOperator) else type(task).__module__
        ),
        "upstream_task_ids": sorted(task.upstream_task_ids),
        "downstream_task_ids": sorted(task.downstream_task_ids),
        "trigger_rule": str(task.trigger_rule),
        "retries": task.retries,
        "retry_delay": _td_to_json(task.retry_delay),
        "retry_exponential_backoff": bool(task.retry_exponential_backoff),
        "max_retry_delay": _td_to_json(task.max_retry_delay),
        "execution_timeout": _td_to_json(task.execution_timeout),
        "priority_weight": task.priority_weight,
        "weight_rule": str(task.weight_rule),
        "pool": task.pool,
        "pool_slots": task.pool_slots,
        "queue": task.queue,
        "depends_on_past": bool(task.depends_on_past),
        "wait_for_downstream": bool(task.wait_for_downstream),
        "max_active_tis_per_dag": task.max_active_tis_per_dag,
        "executor_config": jsonable(task.executor_config),
        "params": params_to_json(task.params),
        "start_date": _dt_to_json(task.start_date),
        "end_date": _dt_to_json(task.end_date),
        "owner": task.owner,
        "email": email if email is None or isinstance(email, str) else [str(e) for e in email],
        "email_on_failure": bool(task.email_on_failure),
        "email_on_retry": bool(task.email_on_retry),
        "sla": _td_to_json(task.sla),
        "is_sensor": is_sensor,
        "mode": str(mode) if mode is not None else None,
        "sensor": (
            task.sensor_settings if isinstance(task, SerializedOperator)
            else _sensor_settings(task) if is_sensor else None
        ),
        "template_fields": [str(f) for f in task.template_fields],
        "doc_md": task.doc_md,
        "task_display_name": task.task_display_name,
        "ui_color": str(getattr(task, "ui_color", "#fff")),
        "do_xcom_push": bool(task.do_xcom_push),
        "multiple_outputs": bool(task.multiple_outputs),
        "has_on_execute_callback": task.on_execute_callback is not None,
        "has_on_success_callback": task.on_success_callback is not None,
        "has_on_failure_callback": task.on_failure_callback is not None,
        "has_on_retry_callback": task.on_retry_callback is not None,
        # Airflow 2.x arguments (squall.sdk.operators.base_options)
        "ignore_first_depends_on_past": bool(task.ignore_first_depends_on_past),
        "wait_for_past_depends_before_skipping": bool(task.wait_for_past_depends_before_skipping),
        "has_on_skipped_callback": task.on_skipped_callback is not None,
        "executor": task.executor,
        **{name: getattr(task, name) for name in DOC_FIELDS},
        "is_setup": task.is_setup,
        "is_teardown": task.is_teardown,
        "on_failure_fail_dagrun": task.on_failure_fail_dagrun,
        "external_task_marker": marker_settings(task),
    }


def marker_settings(task: BaseOperator) -> dict[str, Any] | None:
    """An ExternalTaskMarker's ``external_dag_id``, ``external_task_id``,
    ``execution_date`` (a template, rendered with the run's context when clearing) and
    ``recursion_depth``, as clearing across DAGs reads them; None for another task."""
    if isinstance(task, SerializedOperator):
        return task.external_task_marker
    if not isinstance(task, ExternalTaskMarker):
        return None
    return {"external_dag_id": str(task.external_dag_id),
            "external_task_id": str(task.external_task_id),
            "execution_date": str(task.execution_date),
            "recursion_depth": int(task.recursion_depth)}


_SENSOR_FIELDS = ("poke_interval", "timeout", "soft_fail", "exponential_backoff", "max_wait")


def _sensor_settings(task: BaseOperator) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _SENSOR_FIELDS:
        value = getattr(task, name, None)
        out[name] = _td_to_json(value) if isinstance(value, timedelta) else jsonable(value)
    return out


# --------------------------------------------------------------------------- deserialize


def deserialize_dag(data: Mapping[str, Any]) -> DAG:
    """A :class:`DAG` rebuilt from :func:`serialize_dag` output, tasks as stand-ins.

    Besides the ordinary attributes, the DAG gets ``has_on_success_callback``,
    ``has_on_failure_callback`` and ``has_sla_miss_callback`` (the callbacks themselves are
    user code and stay behind).
    """
    version = data.get("__version")
    if version != SERIALIZATION_VERSION:
        raise SerializationError(
            f"unsupported serialized DAG version {version!r} (expected {SERIALIZATION_VERSION})"
        )
    try:
        d: Mapping[str, Any] = data["dag"]
        return _build_dag(d)
    except SerializationError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        dag_id = data.get("dag", {}).get("dag_id") if isinstance(data.get("dag"), dict) else None
        raise SerializationError(
            f"malformed serialized DAG {dag_id!r}: {type(exc).__name__}: {exc}"
        ) from exc


def _build_dag(d: Mapping[str, Any]) -> DAG:
    tz = _tz_from_json(d.get("timezone") or "UTC")
    timetable, raw_schedule = timetable_from_spec(d["schedule"])
    dag = DAG(
        d["dag_id"],
        description=d.get("description"),
        schedule=timetable,
        start_date=_dt_from_json(d.get("start_date"), tz),
        end_date=_dt_from_json(d.get("end_date"), tz),
        catchup=bool(d.get("catchup", True)),
        max_active_runs=int(d.get("max_active_runs", 16)),
        max_active_tasks=int(d.get("max_active_tasks", 16)),
        dagrun_timeout=_td_from_json(d.get("dagrun_timeout")),
        tags=d.get("tags") or [],
        doc_md=d.get("doc_md"),
        template_searchpath=list(d.get("template_searchpath") or []),
        render_template_as_native_obj=bool(d.get("render_template_as_native_obj", False)),
        is_paused_upon_creation=d.get("is_paused_upon_creation"),
        owner_links=dict(d.get("owner_links") or {}),
        timezone=tz.name if isinstance(tz, Timezone) else None,
        max_consecutive_failed_dag_runs=int(d.get("max_consecutive_failed_dag_runs") or 0),
        fail_stop=bool(d.get("fail_stop", False)),
        default_view=d.get("default_view") or "grid",
        orientation=d.get("orientation") or "LR",
        dag_display_name=d.get("dag_display_name"),
    )
    dag.edge_info = {up: dict(downs) for up, downs in (d.get("edge_info") or {}).items()}
    dag.schedule = raw_schedule
    # set after the constructor: validated when the DAG file was parsed, not again here
    dag.params = params_from_json(d.get("params"))
    dag.fileloc = d.get("fileloc") or "<unknown>"
    setattr(dag, "has_on_success_callback", bool(d.get("has_on_success_callback")))  # noqa: B010
    setattr(dag, "has_on_failure_callback", bool(d.get("has_on_failure_callback")))  # noqa: B010
    setattr(dag, "has_sla_miss_callback", bool(d.get("has_sla_miss_callback")))  # noqa: B010

    tasks: list[SerializedOperator] = []
    for t in d.get("tasks") or []:
        tasks.append(_build_task(t, dag, tz))
    for t, task in zip(d.get("tasks") or [], tasks, strict=True):
        task.upstream_task_ids = set(t.get("upstream_task_ids") or [])
        task.downstream_task_ids = set(t.get("downstream_task_ids") or [])
    group = d.get("task_group")
    if group:
        _rebuild_groups(dag, dag.task_group, group)
    return dag


def _build_task(
    t: Mapping[str, Any], dag: DAG, tz: Timezone | FixedTimezone
) -> SerializedOperator:
    task = _build_operator(t, dag, tz)
    task.is_setup = bool(t.get("is_setup"))
    task.is_teardown = bool(t.get("is_teardown"))
    task.on_failure_fail_dagrun = bool(t.get("on_failure_fail_dagrun"))
    task.external_task_marker = t.get("external_task_marker")
    task.outlets = [decode_condition(o) for o in t.get("outlets") or ()]
    task.inlets = [decode_condition(o) for o in t.get("inlets") or ()]
    return task


def _build_operator(
    t: Mapping[str, Any], dag: DAG, tz: Timezone | FixedTimezone
) -> SerializedOperator:
    return SerializedOperator(
        operator_name=t.get("operator") or "BaseOperator",
        operator_module=t.get("operator_module"),
        template_fields=list(t.get("template_fields") or []),
        is_sensor=bool(t.get("is_sensor", False)),
        mode=t.get("mode"),
        sensor=t.get("sensor"),
        ui_color=t.get("ui_color") or "#fff",
        has_on_success_callback=bool(t.get("has_on_success_callback")),
        has_on_failure_callback=bool(t.get("has_on_failure_callback")),
        has_on_retry_callback=bool(t.get("has_on_retry_callback")),
        mapped_spec=t.get("expand"),
        max_active_tis_per_dagrun=t.get("max_active_tis_per_dagrun"),
        task_id=t["task_id"],
        owner=t.get("owner") or "squall",
        email=t.get("email"),
        email_on_failure=bool(t.get("email_on_failure", True)),
        email_on_retry=bool(t.get("email_on_retry", True)),
        sla=_td_from_json(t.get("sla")),
        retries=int(t.get("retries") or 0),
        # a retry_delay of 0 stays 0 (only a missing one is the default 300 s)
        retry_delay=_td_from_json(t.get("retry_delay")) if t.get("retry_delay") is not None
        else timedelta(seconds=300),
        retry_exponential_backoff=bool(t.get("retry_exponential_backoff", False)),
        max_retry_delay=_td_from_json(t.get("max_retry_delay")),
        execution_timeout=_td_from_json(t.get("execution_timeout")),
        priority_weight=int(t.get("priority_weight", 1)),
        weight_rule=t.get("weight_rule") or "downstream",
        pool=t.get("pool"),
        pool_slots=int(t.get("pool_slots", 1)),
        queue=t.get("queue"),
        trigger_rule=t.get("trigger_rule") or "all_success",
        depends_on_past=bool(t.get("depends_on_past", False)),
        wait_for_downstream=bool(t.get("wait_for_downstream", False)),
        max_active_tis_per_dag=t.get("max_active_tis_per_dag"),
        executor_config=dict(t.get("executor_config") or {}),
        params=params_from_json(t.get("params")),
        start_date=_dt_from_json(t.get("start_date"), tz),
        end_date=_dt_from_json(t.get("end_date"), tz),
        do_xcom_push=bool(t.get("do_xcom_push", True)),
        multiple_outputs=bool(t.get("multiple_outputs", False)),
        doc_md=t.get("doc_md"),
        ignore_first_depends_on_past=bool(t.get("ignore_first_depends_on_past", True)),
        wait_for_past_depends_before_skipping=bool(
            t.get("wait_for_past_depends_before_skipping", False)),
        executor=t.get("executor"),
        **{name: t.get(name) for name in DOC_FIELDS},
        task_display_name=t.get("task_display_name"),
        dag=dag,
        task_group=dag.task_group,
    )


def _rebuild_groups(dag: DAG, group: TaskGroup, spec: Mapping[str, Any]) -> None:
    """Recreate the task groups below ``group`` and move the tasks into them."""
    for child in spec.get("children") or []:
        if child.get("type") == "group":
            label = child.get("label") or str(child["group_id"]).rsplit(".", 1)[-1]
            sub = TaskGroup(
                label,
                dag=dag,
                parent_group=group,
                prefix_group_id=bool(child.get("prefix_group_id", True)),
                tooltip=child.get("tooltip") or "",
                ui_color=child.get("ui_color") or "CornflowerBlue",
                ui_fgcolor=child.get("ui_fgcolor") or "#000",
            )
            if sub.group_id != child["group_id"]:  # keep the id the original had
                group.children.pop(str(sub.group_id), None)
                sub.group_id = child["group_id"]
                group.children[str(sub.group_id)] = sub
            _rebuild_groups(dag, sub, child)
        elif child.get("type") == "task" and group is not dag.task_group:
            task = dag.task_dict.get(child["task_id"])
            if task is None:
                continue
            dag.task_group.children.pop(task.task_id, None)
            group.children[task.task_id] = task
            task.task_group = group
    # the children in their original order
    order = [c.get("group_id") if c.get("type") == "group" else c.get("task_id")
             for c in spec.get("children") or []]
    children = dict(group.children)
    group.children.clear()
    group.children.update({key: children.pop(key) for key in order if key in children})
    group.children.update(children)


# --------------------------------------------------------------------------- hashing / JSON


def dag_hash(data: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of serialized DAG ``data``."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


PARAM_CLASS = "squall.sdk.params.Param"


def params_to_json(params: Mapping[str, Any]) -> dict[str, Any]:
    """A DAG's or task's params with their schemas: ``{name: {"__class":
    "squall.sdk.params.Param", "default": ..., "description": ..., "schema": {...}}}``
    (no ``default`` for a Param without one), so that the scheduler, the API and the UI
    can validate a conf and build the trigger form without importing the DAG file."""
    out: dict[str, Any] = {}
    as_params = params if isinstance(params, ParamsDict) else ParamsDict(params)
    for name, param in as_params.items():
        entry: dict[str, Any] = {"__class": PARAM_CLASS, "description": param.description,
                                 "schema": jsonable(param.schema)}
        if param.value is not NOTSET:
            entry["default"] = jsonable(param.value)
        out[str(name)] = entry
    return out


def params_from_json(data: Mapping[str, Any] | None) -> ParamsDict:
    """The inverse of :func:`params_to_json`; a plain value (a DAG serialized before params
    had schemas) becomes a Param without a schema."""
    params = ParamsDict()
    for name, entry in (data or {}).items():
        if isinstance(entry, Mapping) and entry.get("__class") == PARAM_CLASS:
            params[name] = Param(entry.get("default", NOTSET), entry.get("description"),
                                 schema=dict(entry.get("schema") or {}))
        else:
            params[name] = Param(entry)
    return params


def jsonable(value: Any) -> Any:
    """``value`` with everything JSON cannot hold replaced by its ``repr``.

    Dicts (keys become strings), lists and tuples are walked; ``None``, booleans, ints,
    finite floats and strings are kept.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return repr(value)


def _dt_to_json(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt_from_json(value: str | None, tz: Timezone | FixedTimezone) -> datetime | None:
    return coerce_datetime(value, tz) if value else None


def _td_to_json(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _td_from_json(value: float | int | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=float(value))
