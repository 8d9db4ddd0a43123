"""TaskGroup: a named group of tasks whose ids are prefixed and which acts as one end of ``>>``."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from squall.common.errors import DagDefinitionError
from squall.sdk.edges import DependencyMixin

if TYPE_CHECKING:
    from squall.sdk.dag import DAG
    from squall.sdk.operators.base import BaseOperator


class TaskGroupContext:
    _stack: list[TaskGroup] = []

    @classmethod
    def push(cls, group: TaskGroup) -> None:
        cls._stack.append(group)

    @classmethod
    def pop(cls) -> None:
        if cls._stack:
            cls._stack.pop()

    @classmethod
    def current(cls, dag: DAG) -> TaskGroup:
        for group in reversed(cls._stack):
            if group.dag is dag:
                return group
        return dag.task_group


class TaskGroup(DependencyMixin):
    """A group of tasks. ``TaskGroup("extract")`` prefixes its tasks' ids with ``extract.``."""

    def __init__(
        self,
        group_id: str | None,
        *,
        dag: DAG | None = None,
        parent_group: TaskGroup | None = None,
        prefix_group_id: bool = True,
        default_args: dict[str, Any] | None = None,
        tooltip: str = "",
        ui_color: str = "CornflowerBlue",
        ui_fgcolor: str = "#000",
        _root: bool = False,
    ) -> None:
        from squall.sdk.dag import DagContext

        self.tooltip = tooltip
        #: the group's colours in a graph view (Airflow's; kept and serialized for the UI)
        self.ui_color = ui_color
        self.ui_fgcolor = ui_fgcolor
        self.prefix_group_id = prefix_group_id
        self.default_args: dict[str, Any] = dict(default_args or {})
        self.children: dict[str, BaseOperator | TaskGroup] = {}
        if _root:
            assert dag is not None
            self.dag = dag
            self.group_id = None
            self.parent_group = None
            return
        if not group_id:
            raise DagDefinitionError("a TaskGroup needs a non-empty group_id")
        if parent_group is not None:
            dag = dag or parent_group.dag
        dag = dag or DagContext.current()
        if dag is None:
            raise DagDefinitionError(
                f"TaskGroup {group_id!r} was created outside a DAG: use `with DAG(...)` or dag="
            )
        self.dag = dag
        self.parent_group = parent_group or TaskGroupContext.current(dag)
        self._label = group_id
        self.group_id = self.parent_group.child_id(group_id)
        siblings = self.parent_group.children
        if self.group_id in siblings or self.group_id in dag.task_dict:
            raise DagDefinitionError(
                f"DAG {dag.dag_id}: group_id {self.group_id!r} is already used"
            )
        siblings[self.group_id] = self

    @classmethod
    def create_root(cls, dag: DAG) -> TaskGroup:
        return cls(None, dag=dag, _root=True)

    @property
    def is_root(self) -> bool:
        return self.group_id is None

    def child_id(self, label: str) -> str:
        if self.is_root or not self.prefix_group_id:
            # a group that does not prefix still passes its parent's prefix on
            if self.parent_group is not None and not self.is_root:
                return self.parent_group.child_id(label)
            return label
        return f"{self.group_id}.{label}"

    def add(self, task: BaseOperator) -> None:
        self.children[task.task_id] = task

    def iter_tasks(self) -> list[BaseOperator]:
        from squall.sdk.operators.base import BaseOperator

        out: list[BaseOperator] = []
        for child in self.children.values():
            if isinstance(child, BaseOperator):
                out.append(child)
            else:
                out.extend(child.iter_tasks())
        return out

    @property
    def roots(self) -> list[BaseOperator]:
        tasks = self.iter_tasks()
        ids = {t.task_id for t in tasks}
        return [t for t in tasks if not (t.upstream_task_ids & ids)]

    @property
    def leaves(self) -> list[BaseOperator]:
        tasks = self.iter_tasks()
        ids = {t.task_id for t in tasks}
        return [t for t in tasks if not (t.downstream_task_ids & ids)]

    def merged_default_args(self) -> dict[str, Any]:
        """Default args from the DAG, then each enclosing group, innermost last."""
        chain: list[TaskGroup] = []
        group: TaskGroup | None = self
        while group is not None:
            chain.append(group)
            group = group.parent_group
        merged = dict(self.dag.default_args)
        for g in reversed(chain):
            merged.update(g.default_args)
        return merged

    def __enter__(self) -> TaskGroup:
        TaskGroupContext.push(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        TaskGroupContext.pop()

    def __repr__(self) -> str:
        return f"<TaskGroup {self.group_id}>"


def task_group(group_id: str | None = None, **group_kwargs: Any) -> Any:
    """``@task_group``: the decorated function's tasks are created inside a new group."""
    import functools

    def decorator(func: Any) -> Any:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with TaskGroup(group_id or func.__name__, **group_kwargs) as group:
                result = func(*args, **kwargs)
            return result if result is not None else group

        return wrapper

    if callable(group_id):
        func, group_id = group_id, None
        return decorator(func)
    return decorator
