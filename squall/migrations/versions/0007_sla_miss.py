"""The sla_miss table: tasks that did not succeed within their sla.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 05:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    """The storage type of ``UtcDateTime``: ``timestamptz`` on PostgreSQL."""
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sla_miss",
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("execution_date", _utc(), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("deadline", _utc(), nullable=False),
        sa.Column("timestamp", _utc(), nullable=False),
        sa.Column("email_sent", sa.Boolean(), nullable=False),
        sa.Column("notification_sent", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("task_id", "dag_id", "execution_date", name=op.f("pk_sla_miss")),
    )
    op.create_index(op.f("ix_sla_miss_dag_id_notification_sent"), "sla_miss",
                    ["dag_id", "notification_sent"])


def downgrade() -> None:
    op.drop_index(op.f("ix_sla_miss_dag_id_notification_sent"), table_name="sla_miss")
    op.drop_table("sla_miss")
