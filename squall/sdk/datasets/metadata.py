"""``Metadata``: what a producing task yields to give a dataset event its ``extra``
(Airflow 2.10's ``airflow.datasets.metadata``)."""

from __future__ import annotations

import warnings
from typing import Any

from squall.sdk.datasets import Dataset, DatasetAlias, extract_event_key

__all__ = ["Metadata"]


class Metadata:
    """``yield Metadata(dataset, {"rows": 10})`` in a task: the event recorded for
    ``dataset`` when the try succeeds gets that ``extra``; with ``alias``, the dataset is
    attached to the alias too (as ``outlet_events[alias].add(dataset, extra)``)."""

    def __init__(self, target: str | Dataset, extra: dict[str, Any],
                 alias: DatasetAlias | str | None = None) -> None:
        if isinstance(target, str):
            warnings.warn("Accessing outlet_events using string is deprecated and will be "
                          "removed in Airflow 3. Please use the Dataset or DatasetAlias object "
                          "directly", DeprecationWarning, stacklevel=2)
        self.uri = extract_event_key(target)
        self.extra = extra
        if isinstance(alias, DatasetAlias):
            self.alias_name: str | None = alias.name
        else:
            if alias is not None:
                warnings.warn("Emitting dataset events using string is deprecated and will "
                              "be removed in Airflow 3. Please use the Dataset object directly",
                              DeprecationWarning, stacklevel=2)
            self.alias_name = alias

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Metadata):
            return NotImplemented
        return (self.uri, self.extra, self.alias_name) == (other.uri, other.extra,
                                                           other.alias_name)

    def __repr__(self) -> str:
        return f"Metadata(uri={self.uri!r}, extra={self.extra!r}, alias_name={self.alias_name!r})"
