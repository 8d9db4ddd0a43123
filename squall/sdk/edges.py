"""``>>`` / ``<<`` and friends, shared by operators, task groups and XComArgs."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Union

from squall.common.errors import DagDefinitionError

if TYPE_CHECKING:
    from squall.sdk.operators.base import BaseOperator

Dependable = Union["DependencyMixin", Sequence["DependencyMixin"]]


class DependencyMixin:
    """Something that can stand at either end of ``>>``.

    ``roots`` are the tasks an incoming edge attaches to, ``leaves`` the tasks an outgoing
    edge leaves from. For a single task both are the task itself; for a task group they are
    the group's first and last tasks.
    """

    @property
    def roots(self) -> list[BaseOperator]:
        raise NotImplementedError

    @property
    def leaves(self) -> list[BaseOperator]:
        raise NotImplementedError

    def set_upstream(self, other: Dependable) -> None:
        for item in _flatten(other):
            _connect(item.leaves, self.roots)

    def set_downstream(self, other: Dependable) -> None:
        for item in _flatten(other):
            _connect(self.leaves, item.roots)

    def __rshift__(self, other: Any) -> Any:
        self.set_downstream(other)
        return other

    def __lshift__(self, other: Any) -> Any:
        self.set_upstream(other)
        return other

    def __rrshift__(self, other: Any) -> DependencyMixin:
        # [a, b] >> self
        self.set_upstream(other)
        return self

    def __rlshift__(self, other: Any) -> DependencyMixin:
        # [a, b] << self
        self.set_downstream(other)
        return self


def _flatten(other: Any) -> list[DependencyMixin]:
    if isinstance(other, DependencyMixin):
        return [other]
    if isinstance(other, Iterable) and not isinstance(other, str | bytes):
        out: list[DependencyMixin] = []
        for item in other:
            out.extend(_flatten(item))
        return out
    raise DagDefinitionError(
        f"cannot set a dependency on {other!r}: expected a task, a task group or a list of them"
    )


def _connect(upstream: list[BaseOperator], downstream: list[BaseOperator]) -> None:
    for up in upstream:
        for down in downstream:
            up.add_downstream_edge(down)


def chain(*tasks: Dependable) -> None:
    """``chain(a, [b, c], d)``: a >> [b, c] >> d; two adjacent lists must have equal length
    and are connected pairwise."""
    for left, right in itertools.pairwise(tasks):
        left_is_list = not isinstance(left, DependencyMixin)
        right_is_list = not isinstance(right, DependencyMixin)
        if left_is_list and right_is_list:
            lefts, rights = _flatten(left), _flatten(right)
            if len(lefts) != len(rights):
                raise DagDefinitionError(
                    f"chain: adjacent lists must have the same length, got {len(lefts)} "
                    f"and {len(rights)}"
                )
            for a, b in zip(lefts, rights, strict=True):
                a.set_downstream(b)
        elif left_is_list:
            for a in _flatten(left):
                a.set_downstream(right)
        else:
            assert isinstance(left, DependencyMixin)
            left.set_downstream(right)


def cross_downstream(from_tasks: Sequence[DependencyMixin],
                     to_tasks: Dependable) -> None:
    """Every task of ``from_tasks`` upstream of every task of ``to_tasks``."""
    for task in from_tasks:
        task.set_downstream(to_tasks)
