"""Dataset events as a running task sees them (Airflow 2.10's ``airflow.utils.context``):

* ``outlet_events`` (:class:`OutletEventAccessors`): the task sets the ``extra`` of the event
  its success will record for an outlet dataset, or attaches datasets to an outlet alias;
  :func:`outlet_event_specs` turns that into the events to record
  (:class:`DatasetEventSpec`, picklable: a forked task process sends them to its supervisor
  with its outcome, and they are written in the transaction that records the success);
* ``inlet_events`` (:class:`InletEventsAccessors`): the recorded events of the task's inlets;
* ``triggering_dataset_events``: the events a dataset-triggered run was created from, by
  URI (:class:`TriggeringDatasetEvents`).

The events read back are :class:`DatasetEventView` values with Airflow's ``DatasetEvent``
attributes; the worker reads them from the database (``squall.execution.dataset_events``).
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from squall.sdk.datasets import Dataset, DatasetAlias, extract_event_key
from squall.sdk.datasets.metadata import Metadata

log = logging.getLogger(__name__)

__all__ = [
    "DatasetEventSpec",
    "DatasetEventView",
    "InletEventsAccessors",
    "OutletEventAccessor",
    "OutletEventAccessors",
    "SourceDagRunView",
    "TriggeringDatasetEvents",
    "outlet_event_specs",
    "run_with_metadata",
]


# --------------------------------------------------------------------------- outlets


@dataclass(frozen=True)
class DatasetAliasEvent:
    """One dataset attached to an alias by ``outlet_events[alias].add(...)``."""

    source_alias_name: str
    dest_dataset_uri: str
    extra: dict[str, Any]

    def __getitem__(self, key: str) -> Any:  # Airflow's is a TypedDict
        return getattr(self, key)


@dataclass
class OutletEventAccessor:
    """``outlet_events[dataset]``: the ``extra`` its event gets; for an alias, ``add``."""

    raw_key: str | Dataset | DatasetAlias
    extra: dict[str, Any] = field(default_factory=dict)
    dataset_alias_events: list[DatasetAliasEvent] = field(default_factory=list)

    def add(self, dataset: Dataset | str, extra: dict[str, Any] | None = None) -> None:
        """Attach ``dataset`` to this alias: an event for it is recorded with the try's
        success (``extra`` its extra)."""
        if isinstance(dataset, str):
            warnings.warn("Emitting dataset events using string is deprecated and will be "
                          "removed in Airflow 3. Please use the Dataset object directly",
                          DeprecationWarning, stacklevel=2)
            uri = dataset
        elif isinstance(dataset, Dataset):
            uri = dataset.uri
        else:
            return
        if isinstance(self.raw_key, DatasetAlias):
            alias_name = self.raw_key.name
        elif isinstance(self.raw_key, str):
            alias_name = self.raw_key
        else:
            return
        self.dataset_alias_events.append(
            DatasetAliasEvent(source_alias_name=alias_name, dest_dataset_uri=uri,
                              extra=dict(extra or {})))


class OutletEventAccessors(Mapping[str, OutletEventAccessor]):
    """The ``outlet_events`` context entry: ``outlet_events[Dataset(...)]`` (or an alias, or
    a URI string, deprecated) is created on first access."""

    def __init__(self) -> None:
        self._dict: dict[str, OutletEventAccessor] = {}

    def __str__(self) -> str:
        return f"OutletEventAccessors(_dict={self._dict})"

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def __getitem__(self, key: str | Dataset | DatasetAlias) -> OutletEventAccessor:
        if isinstance(key, str):
            warnings.warn("Accessing outlet_events using string is deprecated and will be "
                          "removed in Airflow 3. Please use the Dataset or DatasetAlias object "
                          "directly", DeprecationWarning, stacklevel=2)
        event_key = extract_event_key(key)
        if event_key not in self._dict:
            self._dict[event_key] = OutletEventAccessor(raw_key=key)
        return self._dict[event_key]

    def _peek(self, key: str) -> OutletEventAccessor | None:
        return self._dict.get(key)


@dataclass(frozen=True)
class DatasetEventSpec:
    """One event to record when the try succeeds (picklable)."""

    uri: str
    extra: dict[str, Any]
    alias_names: tuple[str, ...] = ()


def outlet_event_specs(outlets: Sequence[Any],
                       events: OutletEventAccessors | None) -> tuple[DatasetEventSpec, ...]:
    """The events a successful try records, as Airflow 2.10's
    ``TaskInstance._register_dataset_changes``: one per outlet :class:`Dataset` (its
    ``extra`` from ``outlet_events``), and one per (dataset, extra) attached to the outlet
    aliases, naming every alias that attached it. Other outlet objects are ignored."""
    specs: list[DatasetEventSpec] = []
    by_alias: dict[tuple[str, str], tuple[dict[str, Any], list[str]]] = {}
    for obj in outlets or ():
        if isinstance(obj, Dataset):
            accessor = events._peek(obj.uri) if events is not None else None
            specs.append(DatasetEventSpec(uri=obj.uri,
                                          extra=dict(accessor.extra) if accessor else {}))
        elif isinstance(obj, DatasetAlias):
            accessor = events._peek(obj.name) if events is not None else None
            for event in accessor.dataset_alias_events if accessor else ():
                key = (event.dest_dataset_uri, repr(sorted(event.extra.items())))
                extra, names = by_alias.setdefault(key, (dict(event.extra), []))
                if event.source_alias_name not in names:
                    names.append(event.source_alias_name)
    for (uri, _), (extra, names) in by_alias.items():
        specs.append(DatasetEventSpec(uri=uri, extra=extra, alias_names=tuple(sorted(names))))
    return tuple(specs)


def run_with_metadata(func: Callable[..., Any], outlet_events: OutletEventAccessors | None,
                      /, *args: Any, **kwargs: Any) -> Any:
    """Call ``func``; when it is a generator function, run it to its end, each
    :class:`Metadata` it yields setting an outlet event's ``extra`` (and attaching the
    dataset to the Metadata's alias), and return its ``return`` value (Airflow's
    ``ExecutionCallableRunner``)."""
    if not inspect.isgeneratorfunction(func):
        return func(*args, **kwargs)
    generator = func(*args, **kwargs)
    while True:
        try:
            item = next(generator)
        except StopIteration as stop:
            return stop.value
        if isinstance(item, Metadata) and outlet_events is not None:
            outlet_events._dict.setdefault(
                item.uri, OutletEventAccessor(raw_key=item.uri)).extra.update(item.extra)
            if item.alias_name:
                outlet_events._dict.setdefault(
                    item.alias_name, OutletEventAccessor(raw_key=item.alias_name),
                ).add(Dataset._stored(item.uri, None), extra=item.extra)
            continue
        log.warning("Ignoring unknown data of %r received from task", type(item))


# --------------------------------------------------------------------------- events read back


@dataclass(frozen=True)
class SourceDagRunView:
    """The run whose task recorded an event (``event.source_dag_run``)."""

    dag_id: str
    run_id: str
    run_type: str | None
    logical_date: datetime | None
    data_interval_start: datetime | None
    data_interval_end: datetime | None
    state: str | None
    conf: dict[str, Any] | None

    @property
    def execution_date(self) -> datetime | None:
        return self.logical_date


@dataclass(frozen=True)
class DatasetRef:
    """``event.dataset``: the dataset's URI and extra."""

    id: int
    uri: str
    extra: dict[str, Any] | None


@dataclass(frozen=True)
class DatasetEventView:
    """A recorded dataset event, with Airflow's ``DatasetEvent`` attributes."""

    id: int
    dataset_id: int
    uri: str
    extra: dict[str, Any]
    source_dag_id: str | None
    source_task_id: str | None
    source_run_id: str | None
    source_map_index: int | None
    timestamp: datetime
    source_aliases: tuple[str, ...] = ()
    dataset: DatasetRef | None = None
    source_dag_run: SourceDagRunView | None = None

    def __repr__(self) -> str:
        return (f"DatasetEvent(id={self.id}, dataset_id={self.dataset_id}, uri={self.uri!r}, "
                f"extra={self.extra!r}, source_dag_id={self.source_dag_id!r}, "
                f"source_task_id={self.source_task_id!r}, source_run_id={self.source_run_id!r},"
                f" source_map_index={self.source_map_index!r})")


#: reads the events of a dataset (``("dataset", uri)``) or an alias (``("alias", name)``)
EventReader = Callable[[str, str], list[DatasetEventView]]


class InletEventsAccessors(Mapping[Any, list[DatasetEventView]]):
    """The ``inlet_events`` context entry: ``inlet_events[Dataset(...)]`` (or an inlet alias,
    or an index into ``inlets``) is the list of that dataset's recorded events, oldest
    first, read when first asked for."""

    def __init__(self, inlets: Sequence[Any], reader: EventReader | None = None) -> None:
        self._inlets = list(inlets)
        self._reader = reader
        self._datasets = {i.uri: i for i in self._inlets if isinstance(i, Dataset)}
        self._aliases = {i.name: i for i in self._inlets if isinstance(i, DatasetAlias)}
        self._cache: dict[tuple[str, str], list[DatasetEventView]] = {}

    def __iter__(self) -> Iterator[Any]:
        return iter(self._inlets)

    def __len__(self) -> int:
        return len(self._inlets)

    def __getitem__(self, key: Any) -> list[DatasetEventView]:
        obj = key
        if isinstance(key, int):
            obj = self._inlets[key]
            if not isinstance(obj, Dataset | DatasetAlias):
                raise IndexError(key)
        if isinstance(obj, DatasetAlias):
            lookup = ("alias", self._aliases[obj.name].name)
        elif isinstance(obj, Dataset | str):
            if isinstance(obj, str):
                warnings.warn("Accessing inlet_events using string is deprecated and will be "
                              "removed in Airflow 3. Please use the Dataset object directly",
                              DeprecationWarning, stacklevel=2)
            lookup = ("dataset", self._datasets[extract_event_key(obj)].uri)
        else:
            raise ValueError(key)
        if lookup not in self._cache:
            self._cache[lookup] = list(self._reader(*lookup)) if self._reader else []
        return self._cache[lookup]


class TriggeringDatasetEvents(Mapping[str, list[DatasetEventView]]):
    """The ``triggering_dataset_events`` context entry: URI -> the events the run was
    created from (Airflow's ``dag_run.consumed_dataset_events``), read on first use; empty
    for a run that was not triggered by datasets."""

    def __init__(self, loader: Callable[[], list[DatasetEventView]] | None = None) -> None:
        self._loader = loader
        self._by_uri: dict[str, list[DatasetEventView]] | None = None

    def _load(self) -> dict[str, list[DatasetEventView]]:
        if self._by_uri is None:
            by_uri: dict[str, list[DatasetEventView]] = {}
            for event in self._loader() if self._loader else []:
                by_uri.setdefault(event.uri, []).append(event)
            self._by_uri = by_uri
        return self._by_uri

    def __getitem__(self, uri: str) -> list[DatasetEventView]:
        return self._load().get(uri, [])  # Airflow's is a defaultdict(list)

    def __contains__(self, uri: object) -> bool:
        return uri in self._load()

    def get(self, uri: str, default: Any = None) -> Any:
        return self._load().get(uri, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __repr__(self) -> str:
        return f"TriggeringDatasetEvents({self._load()!r})"
