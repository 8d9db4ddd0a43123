"""datasets: data-aware scheduling (Airflow 2.4-2.10's dataset tables).

``dataset`` (one row per URI), ``dataset_alias`` and its link to datasets, the references from
a DAG's schedule and from a task's outlets, ``dataset_event`` (one row per recorded change),
``dataset_dag_run_queue`` (a consumer DAG's events not yet taken by a run) and
``dagrun_dataset_event`` (the events a run was created from). ``dag`` gets the schedule's
dataset expression.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 22:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    """The storage type of ``UtcDateTime``: ``timestamptz`` on PostgreSQL."""
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dataset",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uri", sa.String(3000), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("is_orphaned", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset")),
        sa.UniqueConstraint("uri", name=op.f("uq_dataset_uri")),
    )
    op.create_table(
        "dataset_alias",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(3000), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_alias")),
        sa.UniqueConstraint("name", name=op.f("uq_dataset_alias_name")),
    )
    op.create_table(
        "dataset_alias_dataset",
        sa.Column("alias_id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["alias_id"], ["dataset_alias.id"], ondelete="CASCADE",
                                name=op.f("fk_dataset_alias_dataset_alias_id_dataset_alias")),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"], ondelete="CASCADE",
                                name=op.f("fk_dataset_alias_dataset_dataset_id_dataset")),
        sa.PrimaryKeyConstraint("alias_id", "dataset_id", name=op.f("pk_dataset_alias_dataset")),
    )
    op.create_table(
        "dag_schedule_dataset_reference",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["dataset.id"], ondelete="CASCADE",
            name=op.f("fk_dag_schedule_dataset_reference_dataset_id_dataset")),
        sa.ForeignKeyConstraint(
            ["dag_id"], ["dag.dag_id"], ondelete="CASCADE",
            name=op.f("fk_dag_schedule_dataset_reference_dag_id_dag")),
        sa.PrimaryKeyConstraint("dataset_id", "dag_id",
                                name=op.f("pk_dag_schedule_dataset_reference")),
    )
    op.create_index(op.f("ix_dag_schedule_dataset_reference_dag_id"),
                    "dag_schedule_dataset_reference", ["dag_id"])
    op.create_table(
        "dag_schedule_dataset_alias_reference",
        sa.Column("alias_id", sa.Integer(), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["alias_id"], ["dataset_alias.id"], ondelete="CASCADE",
            name=op.f("fk_dag_schedule_dataset_alias_reference_alias_id_dataset_alias")),
        sa.ForeignKeyConstraint(
            ["dag_id"], ["dag.dag_id"], ondelete="CASCADE",
            name=op.f("fk_dag_schedule_dataset_alias_reference_dag_id_dag")),
        sa.PrimaryKeyConstraint("alias_id", "dag_id",
                                name=op.f("pk_dag_schedule_dataset_alias_reference")),
    )
    op.create_table(
        "task_outlet_dataset_reference",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["dataset.id"], ondelete="CASCADE",
            name=op.f("fk_task_outlet_dataset_reference_dataset_id_dataset")),
        sa.ForeignKeyConstraint(
            ["dag_id"], ["dag.dag_id"], ondelete="CASCADE",
            name=op.f("fk_task_outlet_dataset_reference_dag_id_dag")),
        sa.PrimaryKeyConstraint("dataset_id", "dag_id", "task_id",
                                name=op.f("pk_task_outlet_dataset_reference")),
    )
    op.create_table(
        "dataset_event",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.Column("source_dag_id", sa.String(250), nullable=True),
        sa.Column("source_task_id", sa.String(250), nullable=True),
        sa.Column("source_run_id", sa.String(250), nullable=True),
        sa.Column("source_map_index", sa.Integer(), nullable=True, server_default="-1"),
        sa.Column("source_try_number", sa.Integer(), nullable=True),
        sa.Column("source_alias_names", sa.JSON(), nullable=True),
        sa.Column("timestamp", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_event")),
    )
    op.create_index(op.f("ix_dataset_event_dataset_id_timestamp"), "dataset_event",
                    ["dataset_id", "timestamp"])
    # One event per dataset per successful try: a retried outcome write cannot add a second.
    op.create_index(op.f("ix_dataset_event_source_try"), "dataset_event",
                    ["dataset_id", "source_dag_id", "source_task_id", "source_run_id",
                     "source_map_index", "source_try_number"], unique=True)
    op.create_table(
        "dataset_dag_run_queue",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("target_dag_id", sa.String(250), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["dataset.id"], ondelete="CASCADE",
            name=op.f("fk_dataset_dag_run_queue_dataset_id_dataset")),
        sa.ForeignKeyConstraint(
            ["target_dag_id"], ["dag.dag_id"], ondelete="CASCADE",
            name=op.f("fk_dataset_dag_run_queue_target_dag_id_dag")),
        sa.PrimaryKeyConstraint("dataset_id", "target_dag_id",
                                name=op.f("pk_dataset_dag_run_queue")),
    )
    op.create_table(
        "dagrun_dataset_event",
        sa.Column("dag_run_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["dag_run_id"], ["dag_run.id"], ondelete="CASCADE",
                                name=op.f("fk_dagrun_dataset_event_dag_run_id_dag_run")),
        sa.ForeignKeyConstraint(["event_id"], ["dataset_event.id"], ondelete="CASCADE",
                                name=op.f("fk_dagrun_dataset_event_event_id_dataset_event")),
        sa.PrimaryKeyConstraint("dag_run_id", "event_id", name=op.f("pk_dagrun_dataset_event")),
    )
    op.create_index(op.f("ix_dagrun_dataset_event_event_id"), "dagrun_dataset_event",
                    ["event_id"])
    with op.batch_alter_table("dag") as batch:
        batch.add_column(sa.Column("dataset_expression", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dag") as batch:
        batch.drop_column("dataset_expression")
    for table in ("dagrun_dataset_event", "dataset_dag_run_queue", "dataset_event",
                  "task_outlet_dataset_reference", "dag_schedule_dataset_alias_reference",
                  "dag_schedule_dataset_reference", "dataset_alias_dataset", "dataset_alias",
                  "dataset"):
        op.drop_table(table)
