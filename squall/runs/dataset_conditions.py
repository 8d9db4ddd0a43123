"""Whether a consumer DAG's dataset condition holds over the datasets queued for it.

A DAG's condition is stored (``dag.dataset_expression``) in Airflow 2.10's serialized form
(``BaseDataset.as_expression``): a dataset's URI string, ``{"all": [...]}``,
``{"any": [...]}``, or ``{"alias": name}``; ``schedule=[a, b]`` is ``{"all": ["a", "b"]}``.

The semantics are Airflow's (``airflow/datasets/__init__.py``, ``evaluate``): a dataset
holds when it is queued; ``all`` / ``any`` are Python's ``all`` / ``any`` over their members
(so an empty ``all`` holds and an empty ``any`` does not); an alias is the ``any`` of the
datasets it has resolved to (``_DatasetAliasCondition``): it holds when one of those is
queued, and never while it has resolved to none.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

from squall.common.errors import DatasetExpressionError


def condition_holds(expression: Any, queued: Collection[str],
                    aliases: Mapping[str, Collection[str]] | None = None) -> bool:
    """Whether ``expression`` holds when the datasets whose URIs are in ``queued`` changed.

    ``aliases``: each alias name's resolved dataset URIs (table ``dataset_alias_dataset``);
    an alias missing from it has resolved to none. Raises :class:`DatasetExpressionError`
    for anything that is not an expression.
    """
    resolved = aliases or {}
    if isinstance(expression, str):
        return expression in queued
    if isinstance(expression, dict) and len(expression) == 1:
        ((kind, members),) = expression.items()
        if kind in ("all", "any") and isinstance(members, list):
            results = (condition_holds(m, queued, resolved) for m in members)
            return all(results) if kind == "all" else any(results)
        if kind == "alias":
            return any(uri in queued for uri in resolved.get(alias_name(members), ()))
    raise DatasetExpressionError(f"not a dataset expression: {expression!r}")


def alias_name(value: Any) -> str:
    """The name in an ``{"alias": ...}`` expression: a string (Airflow 2.10), or a mapping
    with a ``name`` (the form later versions serialize)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return str(value["name"])
    raise DatasetExpressionError(f"not a dataset alias: {value!r}")


def iter_aliases(expression: Any) -> Iterator[str]:
    """The alias names an expression names (anything malformed is left for
    :func:`condition_holds` to report)."""
    if isinstance(expression, dict):
        for kind, members in expression.items():
            if kind == "alias":
                try:
                    yield alias_name(members)
                except DatasetExpressionError:
                    continue
            elif isinstance(members, list):
                for member in members:
                    yield from iter_aliases(member)
