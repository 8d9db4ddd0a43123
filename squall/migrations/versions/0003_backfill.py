"""The backfill table, and dag_run.backfill_id (the backfill that created a run).

Written by hand like 0001 (explicit constraint and index names, ``DateTime(timezone=True)``
for ``UtcDateTime``). ``backfill_id`` has no foreign key, so that SQLite needs no table
rebuild to add it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    """The storage type of ``UtcDateTime``: ``timestamptz`` on PostgreSQL."""
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "backfill",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("from_date", _utc(), nullable=False),
        sa.Column("to_date", _utc(), nullable=False),
        sa.Column("run_backwards", sa.Boolean(), nullable=False),
        sa.Column("max_active_runs", sa.Integer(), nullable=False),
        sa.Column("conf", sa.JSON(), nullable=True),
        sa.Column("options", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("total_runs", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("completed_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backfill")),
    )
    op.create_index(op.f("ix_backfill_state"), "backfill", ["state"])
    op.create_index(op.f("ix_backfill_dag_id"), "backfill", ["dag_id"])
    op.add_column("dag_run", sa.Column("backfill_id", sa.Integer(), nullable=True))
    op.create_index(op.f("ix_dag_run_backfill_id"), "dag_run", ["backfill_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_dag_run_backfill_id"), table_name="dag_run")
    with op.batch_alter_table("dag_run") as batch:
        batch.drop_column("backfill_id")
    op.drop_index(op.f("ix_backfill_dag_id"), table_name="backfill")
    op.drop_index(op.f("ix_backfill_state"), table_name="backfill")
    op.drop_table("backfill")
