"""Datasets: what a task produces (``outlets``) and what a DAG's schedule waits for (Airflow
2.4-2.10's ``airflow.datasets``).

* :class:`Dataset` ``(uri, extra=None)``: the URI is checked and normalised as Airflow 2.10
  core does it (:func:`sanitize_uri`); two datasets are equal when their URIs are.
* :class:`DatasetAlias` ``(name)``: a name a producer attaches datasets to at run time
  (``outlet_events[alias].add(Dataset(...))``), and a schedule can wait for.
* ``a & b`` is :class:`DatasetAll`, ``a | b`` :class:`DatasetAny`; ``schedule=[a, b]`` is
  ``DatasetAll(a, b)``.

:meth:`BaseDataset.as_expression` is Airflow's scheduling expression, stored in
``dag.dataset_expression`` and read by the scheduler: a dataset is its URI string, an alias
``{"alias": name}``, a condition ``{"all": [...]}`` / ``{"any": [...]}``;
:func:`squall.runs.dataset_conditions.condition_holds` says whether it holds.
:func:`encode_condition` /
:func:`decode_condition` are the serialized DAG's form (Airflow's ``__type`` encoding; it
keeps each dataset's ``extra``).
"""

from __future__ import annotations

import logging
import os
import urllib.parse
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final
from urllib.parse import SplitResult

from squall.common.errors import DatasetURIError

log = logging.getLogger(__name__)

__all__ = [
    "BaseDataset",
    "Dataset",
    "DatasetAlias",
    "DatasetAll",
    "DatasetAny",
    "decode_condition",
    "encode_condition",
    "expression_aliases",
    "expression_uris",
    "extract_event_key",
    "sanitize_uri",
]

#: Airflow's ``Dataset.uri`` length limit (and the ``dataset.uri`` column's)
MAX_URI_LENGTH: Final = 3000


def _normalize_noop(parts: SplitResult) -> SplitResult:
    return parts


#: scheme -> URI normaliser. Airflow 2.10 core has only ``file`` (a no-op); the others
#: (s3, gcs, postgres ...) come with provider packages, which Squall does not ship.
_NORMALIZERS: Final[dict[str, Callable[[SplitResult], SplitResult]]] = {
    "file": _normalize_noop,
}


def sanitize_uri(uri: str) -> str:
    """``uri`` checked and normalised as Airflow 2.10's ``_sanitize_uri``.

    Refused (:class:`DatasetURIError`, a ``ValueError``): empty, only whitespace, not ASCII,
    the reserved ``airflow`` scheme. Something that does not look like a URI (no scheme and no
    host), or has an ``x-`` scheme, is kept as it is. Otherwise the scheme is lower-cased,
    user and password dropped (with a warning), the query sorted, trailing slashes of the path
    removed (an empty path becomes ``/``) and the fragment dropped.
    """
    if not isinstance(uri, str):
        raise DatasetURIError(f"Dataset URI must be a string, got {type(uri).__name__}")
    if not uri:
        raise DatasetURIError("Dataset URI cannot be empty")
    if uri.isspace():
        raise DatasetURIError("Dataset URI cannot be just whitespace")
    if not uri.isascii():
        raise DatasetURIError("Dataset URI must only consist of ASCII characters")
    parsed = urllib.parse.urlsplit(uri)
    if not parsed.scheme and not parsed.netloc:  # not a URI: kept as given
        return uri
    scheme = parsed.scheme.lower()
    if not scheme or scheme.startswith("x-"):
        return uri
    if scheme == "airflow":
        raise DatasetURIError("Dataset scheme 'airflow' is reserved")
    _, has_auth, netloc = parsed.netloc.rpartition("@")
    if has_auth:
        warnings.warn("A dataset URI should not contain auth info (e.g. username or "
                      "password). It has been automatically dropped.", UserWarning,
                      stacklevel=3)
    query = urllib.parse.urlencode(sorted(urllib.parse.parse_qsl(parsed.query))) \
        if parsed.query else ""
    parsed = parsed._replace(scheme=scheme, netloc=netloc, path=parsed.path.rstrip("/") or "/",
                             query=query, fragment="")
    normalizer = _NORMALIZERS.get(scheme)
    if normalizer is not None:
        parsed = normalizer(parsed)
    return urllib.parse.urlunsplit(parsed)


class BaseDataset:
    """What ``DAG(schedule=...)`` accepts as a data-aware condition; ``&`` and ``|``
    combine them."""

    def __bool__(self) -> bool:
        return True

    def __or__(self, other: object) -> BaseDataset:
        if not isinstance(other, BaseDataset):
            return NotImplemented
        return DatasetAny(self, other)

    def __and__(self, other: object) -> BaseDataset:
        if not isinstance(other, BaseDataset):
            return NotImplemented
        return DatasetAll(self, other)

    def as_expression(self) -> Any:
        """Airflow's scheduling expression (JSON-able; see the module docstring)."""
        raise NotImplementedError

    def evaluate(self, statuses: Mapping[str, bool]) -> bool:
        """Whether the condition holds, ``statuses`` saying which URIs were updated."""
        raise NotImplementedError

    def iter_datasets(self) -> Iterator[tuple[str, Dataset]]:
        """``(uri, dataset)`` of each dataset named, first occurrence of a URI only."""
        raise NotImplementedError

    def iter_dataset_aliases(self) -> Iterator[DatasetAlias]:
        raise NotImplementedError


class DatasetAlias(BaseDataset):
    """A name datasets are attached to while a producer runs (Airflow 2.10)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DatasetAlias):
            return self.name == other.name
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"DatasetAlias(name={self.name!r})"

    def as_expression(self) -> Any:
        return {"alias": self.name}

    def evaluate(self, statuses: Mapping[str, bool]) -> bool:
        # resolved by the scheduler from the database (evaluate_expression's ``aliases``)
        return False

    def iter_datasets(self) -> Iterator[tuple[str, Dataset]]:
        return iter(())

    def iter_dataset_aliases(self) -> Iterator[DatasetAlias]:
        yield self


class Dataset(os.PathLike[str], BaseDataset):
    """A representation of data dependencies between workflows (Airflow's ``Dataset``)."""

    __version__: Final = 1

    def __init__(self, uri: str, extra: dict[str, Any] | None = None) -> None:
        uri = sanitize_uri(uri)
        if len(uri) > MAX_URI_LENGTH:
            raise DatasetURIError(f"Length of 'uri' must be <= {MAX_URI_LENGTH}: {len(uri)}")
        self.uri = uri
        self.extra = extra

    @classmethod
    def _stored(cls, uri: str, extra: dict[str, Any] | None) -> Dataset:
        """A dataset whose URI was sanitized already (read back from a serialized DAG)."""
        dataset = cls.__new__(cls)
        dataset.uri, dataset.extra = uri, extra
        return dataset

    def __fspath__(self) -> str:
        return self.uri

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Dataset):
            return self.uri == other.uri
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.uri)

    def __repr__(self) -> str:
        return f"Dataset(uri={self.uri!r}, extra={self.extra!r})"

    @property
    def normalized_uri(self) -> str | None:
        """The URI as its scheme's normaliser gives it; None without one (Airflow's)."""
        scheme = urllib.parse.urlsplit(self.uri).scheme.lower()
        normalizer = _NORMALIZERS.get(scheme) if scheme else None
        if normalizer is None:
            return None
        return urllib.parse.urlunsplit(normalizer(urllib.parse.urlsplit(self.uri)))

    def as_expression(self) -> Any:
        return self.uri

    def evaluate(self, statuses: Mapping[str, bool]) -> bool:
        return bool(statuses.get(self.uri, False))

    def iter_datasets(self) -> Iterator[tuple[str, Dataset]]:
        yield self.uri, self

    def iter_dataset_aliases(self) -> Iterator[DatasetAlias]:
        return iter(())


class _DatasetBooleanCondition(BaseDataset):
    _key: str = ""

    def __init__(self, *objects: BaseDataset) -> None:
        if not all(isinstance(o, BaseDataset) for o in objects):
            raise TypeError("expect dataset expressions in condition")
        self.objects: list[BaseDataset] = list(objects)

    def _aggregate(self, values: Iterable[bool]) -> bool:
        raise NotImplementedError

    def evaluate(self, statuses: Mapping[str, bool]) -> bool:
        return self._aggregate(o.evaluate(statuses) for o in self.objects)

    def iter_datasets(self) -> Iterator[tuple[str, Dataset]]:
        seen: set[str] = set()
        for o in self.objects:
            for uri, dataset in o.iter_datasets():
                if uri not in seen:
                    seen.add(uri)
                    yield uri, dataset

    def iter_dataset_aliases(self) -> Iterator[DatasetAlias]:
        for o in self.objects:
            yield from o.iter_dataset_aliases()

    def as_expression(self) -> Any:
        return {self._key: [o.as_expression() for o in self.objects]}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _DatasetBooleanCondition)
        return self.objects == other.objects

    def __hash__(self) -> int:
        return hash((type(self), tuple(map(hash, self.objects))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(str, self.objects))})"


class DatasetAny(_DatasetBooleanCondition):
    """Holds when any of its datasets (or conditions) does: ``a | b``."""

    _key = "any"

    def _aggregate(self, values: Iterable[bool]) -> bool:
        return any(values)

    def __or__(self, other: object) -> BaseDataset:
        if not isinstance(other, BaseDataset):
            return NotImplemented
        return DatasetAny(*self.objects, other)  # X | Y | Z, not (X | Y) | Z, as Airflow


class DatasetAll(_DatasetBooleanCondition):
    """Holds when all of its datasets (or conditions) do: ``a & b``, ``schedule=[a, b]``."""

    _key = "all"

    def _aggregate(self, values: Iterable[bool]) -> bool:
        return all(values)

    def __and__(self, other: object) -> BaseDataset:
        if not isinstance(other, BaseDataset):
            return NotImplemented
        return DatasetAll(*self.objects, other)


def extract_event_key(value: str | Dataset | DatasetAlias) -> str:
    """The key of an inlet or outlet event: an alias's name, a dataset's URI, or a string
    sanitized as a URI (Airflow's ``extract_event_key``)."""
    if isinstance(value, DatasetAlias):
        return value.name
    if isinstance(value, Dataset):
        return value.uri
    return sanitize_uri(str(value))


# --------------------------------------------------------------------------- expressions


def expression_uris(expression: Any) -> list[str]:
    """The URIs a stored expression names, in order, each once."""
    out: list[str] = []
    _walk(expression, out, [])
    return out


def expression_aliases(expression: Any) -> list[str]:
    """The alias names a stored expression names, in order, each once."""
    out: list[str] = []
    _walk(expression, [], out)
    return out


def _walk(expression: Any, uris: list[str], aliases: list[str]) -> None:
    if isinstance(expression, str):
        if expression not in uris:
            uris.append(expression)
    elif isinstance(expression, Mapping):
        if "alias" in expression:
            name = str(expression["alias"])
            if name not in aliases:
                aliases.append(name)
        for key in ("all", "any"):
            for sub in expression.get(key) or ():
                _walk(sub, uris, aliases)


# --------------------------------------------------------------------------- serialized form


def encode_condition(condition: BaseDataset) -> dict[str, Any]:
    """The serialized DAG's form of a condition (Airflow's ``encode_dataset_condition``)."""
    if isinstance(condition, Dataset):
        return {"__type": "dataset", "uri": condition.uri, "extra": condition.extra}
    if isinstance(condition, DatasetAlias):
        return {"__type": "dataset_alias", "name": condition.name}
    if isinstance(condition, DatasetAll):
        return {"__type": "dataset_all",
                "objects": [encode_condition(o) for o in condition.objects]}
    if isinstance(condition, DatasetAny):
        return {"__type": "dataset_any",
                "objects": [encode_condition(o) for o in condition.objects]}
    raise TypeError(f"cannot serialize dataset condition {condition!r}")


def decode_condition(data: Mapping[str, Any]) -> BaseDataset:
    """The condition :func:`encode_condition` wrote."""
    kind = data.get("__type")
    if kind == "dataset":
        return Dataset._stored(str(data["uri"]), data.get("extra"))
    if kind == "dataset_alias":
        return DatasetAlias(str(data["name"]))
    if kind == "dataset_all":
        return DatasetAll(*(decode_condition(o) for o in data["objects"]))
    if kind == "dataset_any":
        return DatasetAny(*(decode_condition(o) for o in data["objects"]))
    raise ValueError(f"not a serialized dataset condition: {data!r}")
