"""A consumer DAG's dataset condition over its queued datasets (squall.runs.dataset_conditions).

Every expected value below was checked against Airflow 2.10.5's ``BaseDataset.evaluate``
(``airflow/datasets/__init__.py``: ``Dataset.evaluate``, ``DatasetAll`` / ``DatasetAny`` with
``all`` / ``any``, ``_DatasetAliasCondition`` as the ``any`` of the alias's resolved
datasets) in /work/ref/airflow-venv, on the expressions its ``as_expression`` gives.
"""

from __future__ import annotations

from typing import Any

import pytest

from squall.common.errors import DatasetExpressionError
from squall.runs.dataset_conditions import condition_holds, iter_aliases

A, B, C, X = "s3://a/", "s3://b/", "s3://c/", "s3://x/"


@pytest.mark.parametrize(("expression", "queued", "holds"), [
    # schedule=Dataset(a): the URI itself
    (A, {A}, True),
    (A, {B}, False),
    (A, set(), False),
    # schedule=[a, b]: {"all": [a, b]}
    ({"all": [A, B]}, {A}, False),
    ({"all": [A, B]}, {A, B}, True),
    ({"all": [A, B]}, {A, B, C}, True),
    # (a & b) | c
    ({"any": [{"all": [A, B]}, C]}, {A}, False),
    ({"any": [{"all": [A, B]}, C]}, {A, B}, True),
    ({"any": [{"all": [A, B]}, C]}, {C}, True),
    ({"any": [{"all": [A, B]}, C]}, set(), False),
    # a & (b | c)
    ({"all": [A, {"any": [B, C]}]}, {A}, False),
    ({"all": [A, {"any": [B, C]}]}, {A, C}, True),
    ({"all": [A, {"any": [B, C]}]}, {B, C}, False),
    # Python's all / any: DatasetAll() holds, DatasetAny() does not
    ({"all": []}, set(), True),
    ({"any": []}, {A}, False),
])
def test_expressions(expression: Any, queued: set[str], holds: bool) -> None:
    assert condition_holds(expression, queued) is holds


def test_an_alias_holds_when_a_dataset_it_resolved_to_is_queued() -> None:
    aliases = {"al": {X}}
    expression = {"all": [{"alias": "al"}, A]}
    assert condition_holds(expression, {X}, aliases) is False
    assert condition_holds(expression, {A, X}, aliases) is True
    assert condition_holds(expression, {A}, aliases) is False
    assert condition_holds({"alias": "al"}, {X}, aliases) is True
    assert condition_holds({"any": [{"alias": "al"}, B]}, {B}, aliases) is True


def test_an_alias_resolved_to_nothing_never_holds() -> None:
    assert condition_holds({"alias": "al"}, {A, X}) is False
    assert condition_holds({"alias": "al"}, {A, X}, {"other": {A}}) is False
    assert condition_holds({"any": [{"alias": "al"}]}, {A}, {}) is False


def test_an_alias_in_the_mapping_form() -> None:
    # the form later Airflow versions serialize ({"alias": {"name": ..., "group": ...}})
    assert condition_holds({"alias": {"name": "al", "group": "g"}}, {X}, {"al": {X}}) is True


@pytest.mark.parametrize("bad", [
    None, 3, ["s3://a/"], {"all": "s3://a/"}, {"none": [A]}, {"all": [A], "any": [B]},
    {"alias": 3}, {"all": [A, {"bogus": []}]},
])
def test_anything_else_is_refused(bad: Any) -> None:
    with pytest.raises(DatasetExpressionError):
        condition_holds(bad, {A, B})


def test_iter_aliases_finds_nested_ones() -> None:
    expression = {"any": [{"alias": "one"}, {"all": [A, {"alias": {"name": "two"}}]}, B]}
    assert sorted(iter_aliases(expression)) == ["one", "two"]
    assert list(iter_aliases(A)) == []
