"""Initial schema and the default pool.

The default pool gets ``config.attributes["default_pool_slots"]`` slots (``[core]
default_pool_task_slot_count``, handed over by ``squall.common.dbops``), 128 without it.

Tables: dag, dag_run, task_instance, task_reschedule, xcom, job, slot_pool, import_error,
serialized_dag.

Written by hand so that it does not change when the models do: every constraint and index
is named explicitly (the names follow ``squall.common.models.base.NAMING_CONVENTION``) and
timestamps are plain ``DateTime(timezone=True)`` (the storage type of ``UtcDateTime``).

Revision ID: 0001
Revises:
Create Date: 2024-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_POOL = "default_pool"
DEFAULT_POOL_SLOTS = 128
DEFAULT_POOL_DESCRIPTION = "Default pool"


def _utc() -> sa.DateTime:
    """The storage type of ``UtcDateTime``: ``timestamptz`` on PostgreSQL."""
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dag",
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("is_paused", sa.Boolean(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("fileloc", sa.String(2000), nullable=False),
        sa.Column("owners", sa.String(2000), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=True),
        sa.Column("schedule", sa.String(1000), nullable=True),
        sa.Column("timetable_description", sa.String(1000), nullable=True),
        sa.Column("max_active_runs", sa.Integer(), nullable=True),
        sa.Column("max_active_tasks", sa.Integer(), nullable=False),
        sa.Column("has_import_errors", sa.Boolean(), nullable=False),
        sa.Column("last_parsed_time", _utc(), nullable=True),
        sa.Column("next_dagrun", _utc(), nullable=True),
        sa.Column("next_dagrun_data_interval_start", _utc(), nullable=True),
        sa.Column("next_dagrun_data_interval_end", _utc(), nullable=True),
        sa.Column("next_dagrun_create_after", _utc(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("dag_id", name=op.f("pk_dag")),
    )
    op.create_index(
        op.f("ix_dag_next_dagrun_create_after"), "dag", ["next_dagrun_create_after"]
    )

    op.create_table(
        "import_error",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("filename", sa.String(2000), nullable=False),
        sa.Column("stacktrace", sa.Text(), nullable=False),
        sa.Column("timestamp", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_error")),
    )

    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_type", sa.String(30), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("hostname", sa.String(500), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("dag_id", sa.String(250), nullable=True),
        sa.Column("start_date", _utc(), nullable=True),
        sa.Column("end_date", _utc(), nullable=True),
        sa.Column("latest_heartbeat", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job")),
    )
    op.create_index(
        op.f("ix_job_type_state_heartbeat"), "job", ["job_type", "state", "latest_heartbeat"]
    )

    op.create_table(
        "slot_pool",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pool", sa.String(256), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slot_pool")),
        sa.UniqueConstraint("pool", name=op.f("uq_slot_pool_pool")),
    )

    op.create_table(
        "dag_run",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("run_type", sa.String(50), nullable=False),
        sa.Column("logical_date", _utc(), nullable=False),
        sa.Column("data_interval_start", _utc(), nullable=True),
        sa.Column("data_interval_end", _utc(), nullable=True),
        sa.Column("state", sa.String(50), nullable=False),
        sa.Column("conf", sa.JSON(), nullable=True),
        sa.Column("external_trigger", sa.Boolean(), nullable=False),
        sa.Column("queued_at", _utc(), nullable=True),
        sa.Column("start_date", _utc(), nullable=True),
        sa.Column("end_date", _utc(), nullable=True),
        sa.Column("last_scheduling_decision", _utc(), nullable=True),
        sa.Column("updated_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dag_run")),
        sa.ForeignKeyConstraint(
            ["dag_id"], ["dag.dag_id"], name=op.f("fk_dag_run_dag_id_dag"), ondelete="CASCADE"
        ),
        sa.UniqueConstraint("dag_id", "run_id", name=op.f("uq_dag_run_dag_id_run_id")),
        sa.UniqueConstraint(
            "dag_id", "logical_date", name=op.f("uq_dag_run_dag_id_logical_date")
        ),
    )
    op.create_index(op.f("ix_dag_run_state"), "dag_run", ["state"])

    op.create_table(
        "task_instance",
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("max_tries", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("hostname", sa.String(1000), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("pool", sa.String(256), nullable=False),
        sa.Column("pool_slots", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(256), nullable=False),
        sa.Column("priority_weight", sa.Integer(), nullable=False),
        sa.Column("operator", sa.String(1000), nullable=True),
        sa.Column("queued_dttm", _utc(), nullable=True),
        sa.Column("start_date", _utc(), nullable=True),
        sa.Column("end_date", _utc(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("external_executor_id", sa.String(250), nullable=True),
        sa.Column("queued_by_job_id", sa.Integer(), nullable=True),
        sa.Column("next_retry_at", _utc(), nullable=True),
        sa.Column("executor_config", sa.JSON(), nullable=True),
        sa.Column("state_reason", sa.String(2000), nullable=True),
        sa.Column("updated_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("dag_id", "task_id", "run_id", name=op.f("pk_task_instance")),
        sa.ForeignKeyConstraint(
            ["dag_id", "run_id"],
            ["dag_run.dag_id", "dag_run.run_id"],
            name=op.f("fk_task_instance_dag_id_dag_run"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        op.f("ix_task_instance_dag_run_state"), "task_instance", ["dag_id", "run_id", "state"]
    )
    op.create_index(
        op.f("ix_task_instance_external_executor_id"), "task_instance", ["external_executor_id"]
    )
    op.create_index(op.f("ix_task_instance_job_id"), "task_instance", ["job_id"])
    op.create_index(op.f("ix_task_instance_state_pool"), "task_instance", ["state", "pool"])

    op.create_table(
        "xcom",
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("timestamp", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("dag_id", "run_id", "task_id", "key", name=op.f("pk_xcom")),
        sa.ForeignKeyConstraint(
            ["dag_id", "run_id"],
            ["dag_run.dag_id", "dag_run.run_id"],
            name=op.f("fk_xcom_dag_id_dag_run"),
            ondelete="CASCADE",
        ),
    )

    op.create_table(
        "task_reschedule",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("start_date", _utc(), nullable=False),
        sa.Column("end_date", _utc(), nullable=False),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("reschedule_date", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_reschedule")),
        sa.ForeignKeyConstraint(
            ["dag_id", "task_id", "run_id"],
            ["task_instance.dag_id", "task_instance.task_id", "task_instance.run_id"],
            name=op.f("fk_task_reschedule_dag_id_task_instance"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        op.f("ix_task_reschedule_ti"),
        "task_reschedule",
        ["dag_id", "task_id", "run_id", "try_number"],
    )

    op.create_table(
        "serialized_dag",
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("fileloc", sa.String(2000), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("dag_hash", sa.String(64), nullable=False),
        sa.Column("last_updated", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("dag_id", name=op.f("pk_serialized_dag")),
    )

    slot_pool = sa.table(
        "slot_pool",
        sa.column("pool", sa.String),
        sa.column("slots", sa.Integer),
        sa.column("description", sa.Text),
    )
    slots = int(context.config.attributes.get("default_pool_slots", DEFAULT_POOL_SLOTS))
    op.bulk_insert(
        slot_pool,
        [{"pool": DEFAULT_POOL, "slots": slots,
          "description": DEFAULT_POOL_DESCRIPTION}],
    )


def downgrade() -> None:
    op.drop_table("serialized_dag")
    op.drop_index(op.f("ix_task_reschedule_ti"), table_name="task_reschedule")
    op.drop_table("task_reschedule")
    op.drop_table("xcom")
    op.drop_index(op.f("ix_task_instance_state_pool"), table_name="task_instance")
    op.drop_index(op.f("ix_task_instance_job_id"), table_name="task_instance")
    op.drop_index(op.f("ix_task_instance_external_executor_id"), table_name="task_instance")
    op.drop_index(op.f("ix_task_instance_dag_run_state"), table_name="task_instance")
    op.drop_table("task_instance")
    op.drop_index(op.f("ix_dag_run_state"), table_name="dag_run")
    op.drop_table("dag_run")
    op.drop_table("slot_pool")
    op.drop_index(op.f("ix_job_type_state_heartbeat"), table_name="job")
    op.drop_table("job")
    op.drop_table("import_error")
    op.drop_index(op.f("ix_dag_next_dagrun_create_after"), table_name="dag")
    op.drop_table("dag")
