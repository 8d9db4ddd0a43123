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
            if isinstance(item, EdgeModifier):
                item.set_downstream(self)
            else:
                _connect(item.leaves, self.roots)

    def set_downstream(self, other: Dependable) -> None:
        for item in _flatten(other):
            if isinstance(item, EdgeModifier):
                item.set_upstream(self)
            else:
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


def _connect(upstream: list[BaseOperator], downstream: list[BaseOperator],
             label: str | None = None) -> None:
    for up in upstream:
        for down in downstream:
            up.add_downstream_edge(down)
            if label is not None and up.dag is not None:
                up.dag.set_edge_info(up.task_id, down.task_id, {"label": label})


class EdgeModifier(DependencyMixin):
    """``a >> Label("when ok") >> b``: an edge that carries information (Airflow 2's
    ``airflow.utils.edgemodifier.EdgeModifier``). It is no task: it connects what stands
    before it to what stands after it, and records ``{"label": ...}`` on each of those task
    edges in the DAG's ``edge_info`` (serialized, so the API and UI can show it).

    As Airflow 2.10's ``EdgeModifier``: when the nodes on its two sides are not all in one
    task group, the side given first stands for its task groups (a task in a group becomes
    the group: its leaves upstream, its roots downstream) and the side given second for
    itself, so ``g1.a >> Label("x") >> g2.d`` makes every leaf of ``g1`` upstream of
    ``g2.d`` (``_convert_streams_to_task_groups``, airflow/utils/edgemodifier.py).
    """

    def __init__(self, label: str | None = None) -> None:
        self.label = label
        self._upstream: list[DependencyMixin] = []
        self._downstream: list[DependencyMixin] = []

    @property
    def roots(self) -> list[BaseOperator]:
        return [task for node in self._downstream for task in node.roots]

    @property
    def leaves(self) -> list[BaseOperator]:
        return [task for node in self._upstream for task in node.leaves]

    def set_upstream(self, other: Dependable) -> None:
        new = _label_nodes(other)
        self._upstream.extend(new)
        self._convert_streams()
        for down in self._downstream:
            for node in new:
                _connect(node.leaves, down.roots, self.label)

    def set_downstream(self, other: Dependable) -> None:
        new = _label_nodes(other)
        self._downstream.extend(new)
        self._convert_streams()
        for up in self._upstream:
            for node in new:
                _connect(up.leaves, node.roots, self.label)

    def _convert_streams(self) -> None:
        if not (self._upstream and self._downstream):
            return
        if len({_group_key(node) for node in [*self._upstream, *self._downstream]}) != 1:
            self._upstream = [_as_group(node) for node in self._upstream]
            self._downstream = [_as_group(node) for node in self._downstream]

    def __repr__(self) -> str:
        return f"<EdgeModifier {self.label!r}>"


def _task_of(node: DependencyMixin) -> BaseOperator | None:
    from squall.sdk.operators.base import BaseOperator

    task = getattr(node, "operator", node)  # an XComArg stands for its operator
    return task if isinstance(task, BaseOperator) else None


def _group_key(node: DependencyMixin) -> str | None:
    """The id of the task group a node is in (or is), "" for the DAG's root group."""
    task = _task_of(node)
    if task is None:
        return getattr(node, "group_id", None) or ""
    group = task.task_group
    return "" if group is None or group.is_root else group.group_id


def _as_group(node: DependencyMixin) -> DependencyMixin:
    task = _task_of(node)
    if task is not None and task.task_group is not None and not task.task_group.is_root:
        return task.task_group
    return node


def Label(label: str) -> EdgeModifier:  # noqa: N802 - Airflow's name
    """An :class:`EdgeModifier` that puts a human-readable label on the edge."""
    return EdgeModifier(label=label)


def _label_nodes(other: Any) -> list[DependencyMixin]:
    nodes = _flatten(other)
    for node in nodes:
        if isinstance(node, EdgeModifier):
            raise DagDefinitionError("an edge label cannot follow another edge label")
    return nodes


def chain(*tasks: Dependable) -> None:
    """``chain(a, [b, c], [d, e], f)``: a >> [b, c]; b >> d and c >> e (two adjacent lists
    must have equal length and are connected pairwise); [d, e] >> f. Tasks, task groups,
    XComArgs and edge labels may stand anywhere (Airflow 2's
    ``airflow.models.baseoperator.chain``)."""
    for left, right in itertools.pairwise(tasks):
        if isinstance(left, DependencyMixin):
            left.set_downstream(right)
        elif isinstance(right, DependencyMixin):
            right.set_upstream(left)
        else:
            lefts, rights = _flatten(left), _flatten(right)
            if len(lefts) != len(rights):
                raise DagDefinitionError(
                    f"chain: adjacent lists must have the same length, got {len(lefts)} "
                    f"and {len(rights)}"
                )
            for a, b in zip(lefts, rights, strict=True):
                a.set_downstream(b)


def chain_linear(*elements: Dependable) -> None:
    """``chain_linear(a, [b, c], [d, e], f)``: every element of each list upstream of every
    element of the next (a >> [b, c]; b >> [d, e]; c >> [d, e]; [d, e] >> f), as Airflow
    2.7's ``chain_linear``. Edge labels are refused, as in Airflow, and so is a call that
    sets no dependency (one element: ``chain_linear(*tasks)`` was probably meant)."""
    connected = False
    previous: list[DependencyMixin] | None = None
    for element in elements:
        current = _flatten(element)
        if any(isinstance(node, EdgeModifier) for node in current):
            raise DagDefinitionError("chain_linear: edge labels are not supported")
        if previous is not None:
            for up in previous:
                up.set_downstream(current)
                connected = True
        previous = current
    if not connected:
        raise DagDefinitionError(
            "chain_linear: no dependencies were set; did you forget to expand with `*`?"
        )


def cross_downstream(from_tasks: Sequence[DependencyMixin],
                     to_tasks: Dependable) -> None:
    """Every task of ``from_tasks`` upstream of every task of ``to_tasks`` (each may be a task
    group or an XComArg too)."""
    for task in from_tasks:
        task.set_downstream(to_tasks)
