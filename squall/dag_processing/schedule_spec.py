"""A DAG's schedule as JSON (the ``"schedule"`` spec of the serialized DAG) and back, and
the time zone encoding the serialized DAG uses; see :mod:`squall.dag_processing.serialization`
for the layout.

A custom (Airflow-protocol) timetable is ``{"type": "custom", "class": "module.QualName",
"value": serialize(), "summary", "description"}``; its class must be built in or registered
by a plugin (:mod:`squall.dag_processing.plugins`, ADR 25), as Airflow requires.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pendulum
from dateutil.relativedelta import relativedelta  # type: ignore[import-untyped, unused-ignore]
from pendulum.tz.timezone import FixedTimezone, Timezone

from squall.common.errors import SerializationError
from squall.sdk.datasets import decode_condition, encode_condition
from squall.sdk.timetables import (
    ContinuousTimetable,
    CronDataIntervalTimetable,
    CustomTimetable,
    DatasetOrTimeSchedule,
    DatasetTriggeredTimetable,
    DeltaDataIntervalTimetable,
    NullTimetable,
    OnceTimetable,
    Timetable,
)
from squall.sdk.timetables.custom import class_path

if TYPE_CHECKING:
    from squall.sdk.dag import DAG

__all__ = ["timetable_from_spec", "timetable_spec", "tz_from_json", "tz_to_json"]

_RELATIVEDELTA_FIELDS = ("years", "months", "days", "hours", "minutes", "seconds",
                         "microseconds")


def timetable_spec(dag: DAG) -> dict[str, Any]:
    """The schedule spec of ``dag`` (see :mod:`squall.dag_processing.serialization`)."""
    return _spec_of(dag, dag.timetable)


def _spec_of(dag: DAG, timetable: Timetable) -> dict[str, Any]:
    if isinstance(timetable, DatasetTriggeredTimetable):
        return {"type": "dataset", "condition": encode_condition(timetable.dataset_condition)}
    if isinstance(timetable, DatasetOrTimeSchedule):
        return {"type": "dataset_or_time",
                "condition": encode_condition(timetable.dataset_condition),
                "timetable": _spec_of(dag, timetable.timetable)}
    if isinstance(timetable, NullTimetable):
        return {"type": "none"}
    if isinstance(timetable, OnceTimetable):
        return {"type": "once"}
    if isinstance(timetable, ContinuousTimetable):
        return {"type": "continuous"}
    if isinstance(timetable, CronDataIntervalTimetable):
        return {
            "type": "cron",
            "expression": timetable.summary or timetable.expression,
            "timezone": tz_to_json(timetable.timezone),
        }
    if isinstance(timetable, DeltaDataIntervalTimetable):
        delta = timetable.delta
        spec: dict[str, Any] = {"type": "delta", "timezone": tz_to_json(timetable.timezone)}
        if isinstance(delta, timedelta):
            spec["seconds"] = delta.total_seconds()
        else:
            spec["relativedelta"] = {f: getattr(delta, f) for f in _RELATIVEDELTA_FIELDS}
        return spec
    if isinstance(timetable, CustomTimetable):
        return _custom_spec(dag, timetable)
    raise SerializationError(
        f"DAG {dag.dag_id}: the timetable {type(timetable).__name__} cannot be serialized "
        "(use None, '@once', a cron expression, a timedelta, a relativedelta or an "
        "Airflow-style timetable registered by a plugin)"
    )


def _custom_spec(dag: DAG, timetable: CustomTimetable) -> dict[str, Any]:
    """``{"type": "custom", "class": "module.QualName", "value": serialize(), ...}``; the
    class must be built in or registered by a plugin (Airflow's ``_TimetableNotRegistered``)."""
    from squall.dag_processing import plugins

    inner = timetable.inner
    path = plugins.registered_class_path(type(inner))
    if path is None:
        raise SerializationError(
            f"DAG {dag.dag_id}: Timetable class {class_path(type(inner))!r} is not registered: "
            "list it in the timetables of an AirflowPlugin in the plugins folder "
            "(core.plugins_folder)")
    try:
        value = inner.serialize()
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"DAG {dag.dag_id}: {path}.serialize() must return a JSON-able dict: {exc}"
        ) from exc
    return {"type": "custom", "class": path, "value": value, "summary": timetable.summary,
            "description": timetable.description}


def timetable_from_spec(spec: Mapping[str, Any]) -> tuple[Timetable, Any]:
    """The timetable and the ``schedule`` value the spec stands for."""
    kind = spec.get("type")
    if kind == "dataset":
        condition = decode_condition(spec["condition"])
        return DatasetTriggeredTimetable(condition), condition
    if kind == "dataset_or_time":
        inner, _ = timetable_from_spec(spec["timetable"])
        both = DatasetOrTimeSchedule(timetable=inner,
                                     datasets=decode_condition(spec["condition"]))
        return both, both
    if kind == "none":
        return NullTimetable(), None
    if kind == "once":
        return OnceTimetable(), "@once"
    if kind == "continuous":
        return ContinuousTimetable(), "@continuous"
    if kind == "cron":
        expression = spec["expression"]
        timetable = CronDataIntervalTimetable(expression, tz_from_json(spec.get("timezone")))
        return timetable, expression
    if kind == "delta":
        delta: timedelta | relativedelta
        if "relativedelta" in spec:
            delta = relativedelta(**{f: spec["relativedelta"].get(f, 0)
                                     for f in _RELATIVEDELTA_FIELDS})
        else:
            delta = timedelta(seconds=float(spec["seconds"]))
        return DeltaDataIntervalTimetable(delta, tz_from_json(spec.get("timezone"))), delta
    if kind == "custom":
        from squall.dag_processing import plugins

        cls = plugins.timetable_class(str(spec["class"]))
        if cls is None:
            raise SerializationError(
                f"Timetable class {spec['class']!r} is not registered: list it in the "
                "timetables of an AirflowPlugin in the plugins folder (core.plugins_folder)")
        inner = getattr(cls, "deserialize")(dict(spec.get("value") or {}))  # noqa: B009
        custom = CustomTimetable(inner)
        return custom, custom.inner
    raise SerializationError(f"unknown schedule type {kind!r} in serialized DAG")


def tz_to_json(tz: Any) -> str | int:
    """A time zone as JSON: its name, or its UTC offset in seconds when fixed."""
    if isinstance(tz, FixedTimezone):
        return int(tz.offset)
    name = getattr(tz, "name", None) or getattr(tz, "key", None)
    return str(name) if name else "UTC"


def tz_from_json(value: Any) -> Timezone | FixedTimezone:
    """The time zone :func:`tz_to_json` wrote (UTC for None)."""
    if value is None:
        return pendulum.UTC
    if isinstance(value, int):
        return pendulum.UTC if value == 0 else pendulum.FixedTimezone(value)
    return pendulum.timezone(str(value))
