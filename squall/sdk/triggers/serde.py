"""The trigger table's encoding of a trigger's keyword arguments and of event payloads.

JSON, with datetimes (kept aware), timedeltas, tuples and sets tagged so they come back as
they went in (a trigger built from its row must equal the one the task deferred with).
Anything else is refused with the argument's name, at defer time, not in the triggerer.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from squall.common.errors import SerializationError

_TAG = "__squall_type"


def _encode(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return {_TAG: "datetime", "value": value.isoformat()}
    if isinstance(value, timedelta):
        return {_TAG: "timedelta", "value": value.total_seconds()}
    if isinstance(value, tuple | set | frozenset):
        kind = "tuple" if isinstance(value, tuple) else "set"
        return {_TAG: kind, "value": [_encode(v, f"{where}[]") for v in value]}
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise SerializationError(f"{where}: dictionary keys must be strings")
        return {k: _encode(v, f"{where}.{k}") for k, v in value.items()}
    raise SerializationError(
        f"{where}: a {type(value).__name__} cannot be stored with a trigger (JSON values, "
        "datetimes, timedeltas, tuples and sets can)")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        kind = value.get(_TAG)
        if kind == "datetime":
            return datetime.fromisoformat(value["value"])
        if kind == "timedelta":
            return timedelta(seconds=value["value"])
        if kind == "tuple":
            return tuple(_decode(v) for v in value["value"])
        if kind == "set":
            return {_decode(v) for v in value["value"]}
        return {k: _decode(v) for k, v in value.items()}
    return value


def dumps(value: Any, where: str = "trigger kwargs") -> str:
    """``value`` as the trigger table stores it; :class:`SerializationError` naming the part
    that cannot be stored."""
    return json.dumps(_encode(value, where), separators=(",", ":"))


def to_json(value: Any, where: str = "event payload") -> Any:
    """``value`` as a JSON-compatible structure (for a JSON column such as ``next_kwargs``)."""
    return _encode(value, where)


def from_json(value: Any) -> Any:
    """The inverse of :func:`to_json`."""
    return _decode(value)


def loads(text: str) -> Any:
    """The inverse of :func:`dumps`."""
    return _decode(json.loads(text))
