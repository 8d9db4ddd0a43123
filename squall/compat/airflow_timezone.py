"""``airflow.utils.timezone``: Airflow 2.10's time-zone helpers, on pendulum.

The default time zone (Airflow's ``settings.TIMEZONE``) is the deployment's
``[core] default_timezone`` (:func:`squall.sdk.dag_defaults.current_defaults`), read when a
helper is called, never at import.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pendulum
from pendulum import DateTime

from squall.sdk.dag_defaults import current_defaults

log = logging.getLogger(__name__)

__all__ = ["coerce_datetime", "convert_to_utc", "datetime", "is_localized", "is_naive",
           "make_aware", "make_naive", "parse", "utc", "utcnow"]

utc = pendulum.UTC


def _default_tz() -> Any:
    return pendulum.timezone(current_defaults().timezone)


def is_localized(value: dt.datetime) -> bool:
    """Whether ``value`` is aware."""
    return value.utcoffset() is not None


def is_naive(value: dt.datetime) -> bool:
    """Whether ``value`` is naive."""
    return value.utcoffset() is None


def utcnow() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(tz=utc)


def convert_to_utc(value: dt.datetime | None) -> DateTime | None:
    """``value`` in UTC; a naive value is first read in the default time zone."""
    if value is None:
        return None
    if not is_localized(value):
        value = pendulum.instance(value, _default_tz())
    return pendulum.instance(value.astimezone(utc))


def make_aware(value: dt.datetime | None, timezone: Any = None) -> dt.datetime | None:
    """A naive ``value`` as a wall time in ``timezone`` (default: the default time zone)."""
    if timezone is None:
        timezone = _default_tz()
    if not value:
        return None
    if is_localized(value):
        raise ValueError(f"make_aware expects a naive datetime, got {value}")
    value = value.replace(fold=1)  # Airflow's choice: the second of a repeated wall time
    localize = getattr(timezone, "localize", None)
    if localize is not None:
        return localize(value)
    convert = getattr(timezone, "convert", None)
    if convert is not None:
        return convert(value)
    return value.replace(tzinfo=timezone)


def make_naive(value: dt.datetime, timezone: Any = None) -> dt.datetime:
    """An aware ``value`` as a naive wall time in ``timezone`` (default: the default zone)."""
    if timezone is None:
        timezone = _default_tz()
    if is_naive(value):
        raise ValueError("make_naive() cannot be applied to a naive datetime")
    date = value.astimezone(timezone)
    return dt.datetime(date.year, date.month, date.day, date.hour, date.minute, date.second,
                       date.microsecond)


def datetime(*args: Any, **kwargs: Any) -> dt.datetime:
    """``datetime.datetime(...)`` in the default time zone unless ``tzinfo`` is given."""
    if "tzinfo" not in kwargs:
        kwargs["tzinfo"] = _default_tz()
    return dt.datetime(*args, **kwargs)


def parse(string: str, timezone: Any = None, *, strict: bool = False) -> DateTime:
    """``string`` parsed to an aware datetime (in ``timezone`` or the default zone)."""
    return pendulum.parse(string, tz=timezone or _default_tz(), strict=strict)  # type: ignore[return-value]


def coerce_datetime(v: dt.datetime | None, tz: Any = None) -> DateTime | None:
    """``v`` as an aware pendulum DateTime (a naive one read in ``tz``)."""
    if v is None:
        return None
    if isinstance(v, DateTime):
        return v if v.tzinfo else make_aware(v, tz)  # type: ignore[return-value]
    return pendulum.instance(v if v.tzinfo else make_aware(v, tz))  # type: ignore[arg-type]
