"""audit log: Airflow 2's ``log`` table, read by the REST API's ``eventLogs`` and the web
UI's audit log page.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 01:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    """The storage type of ``UtcDateTime``: ``timestamptz`` on PostgreSQL."""
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dttm", _utc(), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=True),
        sa.Column("task_id", sa.String(250), nullable=True),
        sa.Column("map_index", sa.Integer(), nullable=True),
        sa.Column("event", sa.String(60), nullable=False),
        sa.Column("execution_date", _utc(), nullable=True),
        sa.Column("run_id", sa.String(250), nullable=True),
        sa.Column("owner", sa.String(500), nullable=True),
        sa.Column("owner_display_name", sa.String(500), nullable=True),
        sa.Column("extra", sa.Text(), nullable=True),
        sa.Column("try_number", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log")),
    )
    op.create_index("ix_log_dttm", "log", ["dttm"])
    op.create_index("ix_log_dag_id_event", "log", ["dag_id", "event"])
    op.create_index("ix_log_event", "log", ["event"])


def downgrade() -> None:
    op.drop_table("log")
