"""BaseBranchOperator: a task that chooses which of its direct downstream tasks run."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from squall.sdk.operators.base import Context
from squall.sdk.operators.python import SkipMixin

log = logging.getLogger(__name__)

__all__ = ["BaseBranchOperator"]


class BaseBranchOperator(SkipMixin):
    """Airflow 2's ``BaseBranchOperator``: subclasses implement :meth:`choose_branch`,
    returning the task id(s) (or task group ids) to follow; every other direct downstream
    task is skipped. The choice is the task's return value (XCom)."""

    def choose_branch(self, context: Context) -> str | Iterable[str] | None:
        raise NotImplementedError(f"{type(self).__name__} does not implement choose_branch()")

    def execute(self, context: Context) -> Any:
        branches = self.choose_branch(context)
        self.skip_all_except(context, branches)
        return branches
