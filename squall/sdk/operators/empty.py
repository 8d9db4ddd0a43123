"""EmptyOperator: a task that does nothing (a join point, a placeholder)."""

from __future__ import annotations

from typing import Any

from squall.sdk.operators.base import BaseOperator, Context


class EmptyOperator(BaseOperator):
    """Does nothing. The scheduler still runs it like any other task (its trigger rule
    decides whether it succeeds or is skipped)."""

    ui_color = "#e8f7e4"

    def execute(self, context: Context) -> Any:
        return None
