"""triggers: deferrable tasks (Airflow 2.2+'s ``trigger`` table and the DEFERRED columns).

``trigger`` holds one row per deferred wait: the trigger's class path and its serialized
arguments, and the triggerer that holds it (``triggerer_id``, a ``job`` id) until
``lease_expires_at``. ``task_instance`` gets the trigger it waits on, when the wait times out,
and the method and arguments it resumes with on a worker.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 22:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    """The storage type of ``UtcDateTime``: ``timestamptz`` on PostgreSQL."""
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "trigger",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("classpath", sa.String(1000), nullable=False),
        sa.Column("kwargs", sa.Text(), nullable=False),
        sa.Column("created_date", _utc(), nullable=False),
        sa.Column("triggerer_id", sa.Integer(), nullable=True),
        sa.Column("lease_expires_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trigger")),
    )
    op.create_index(op.f("ix_trigger_triggerer_id"), "trigger", ["triggerer_id"])
    with op.batch_alter_table("task_instance") as batch:
        batch.add_column(sa.Column("trigger_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("trigger_timeout", _utc(), nullable=True))
        batch.add_column(sa.Column("next_method", sa.String(1000), nullable=True))
        batch.add_column(sa.Column("next_kwargs", sa.JSON(), nullable=True))
        batch.create_index(op.f("ix_task_instance_trigger_id"), ["trigger_id"])


def downgrade() -> None:
    with op.batch_alter_table("task_instance") as batch:
        batch.drop_index(op.f("ix_task_instance_trigger_id"))
        batch.drop_column("next_kwargs")
        batch.drop_column("next_method")
        batch.drop_column("trigger_timeout")
        batch.drop_column("trigger_id")
    op.drop_table("trigger")
