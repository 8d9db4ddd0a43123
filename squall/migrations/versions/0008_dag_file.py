"""The dag_file table: how the last parse of each DAG file went (squall dags report).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    """The storage type of ``UtcDateTime``: ``timestamptz`` on PostgreSQL."""
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dag_file",
        sa.Column("fileloc", sa.String(2000), nullable=False),
        sa.Column("last_parsed_at", _utc(), nullable=False),
        sa.Column("last_duration", sa.Float(), nullable=False),
        sa.Column("dag_ids", sa.JSON(), nullable=False),
        sa.Column("task_count", sa.Integer(), nullable=False),
        sa.Column("has_import_error", sa.Boolean(), nullable=False),
        sa.Column("fingerprint", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("fileloc", name=op.f("pk_dag_file")),
    )


def downgrade() -> None:
    op.drop_table("dag_file")
