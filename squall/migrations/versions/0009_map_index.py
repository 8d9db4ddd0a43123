"""map_index: the task-instance key gains Airflow's map index (dynamic task mapping).

``task_instance``, ``xcom`` and ``task_reschedule`` get a ``map_index`` column, ``-1`` for every
existing row (a task that is not mapped), and it joins the primary keys and the foreign key
from ``task_reschedule``. Batch mode rebuilds the tables on SQLite.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 19:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FK = "fk_task_reschedule_dag_id_task_instance"


def _map_index() -> sa.Column[int]:
    return sa.Column("map_index", sa.Integer(), nullable=False, server_default="-1")


def upgrade() -> None:
    with op.batch_alter_table("task_reschedule") as batch:
        batch.drop_constraint(op.f(_FK), type_="foreignkey")
        batch.drop_index(op.f("ix_task_reschedule_ti"))
        batch.add_column(_map_index())
    with op.batch_alter_table("task_instance") as batch:
        batch.add_column(_map_index())
        batch.drop_constraint(op.f("pk_task_instance"), type_="primary")
        batch.create_primary_key(op.f("pk_task_instance"),
                                 ["dag_id", "task_id", "run_id", "map_index"])
    with op.batch_alter_table("task_reschedule") as batch:
        batch.create_foreign_key(
            op.f(_FK), "task_instance", ["dag_id", "task_id", "run_id", "map_index"],
            ["dag_id", "task_id", "run_id", "map_index"], ondelete="CASCADE")
        batch.create_index(op.f("ix_task_reschedule_ti"),
                           ["dag_id", "task_id", "run_id", "map_index", "try_number"])
    with op.batch_alter_table("xcom") as batch:
        batch.add_column(_map_index())
        batch.drop_constraint(op.f("pk_xcom"), type_="primary")
        batch.create_primary_key(op.f("pk_xcom"),
                                 ["dag_id", "run_id", "task_id", "map_index", "key"])


def downgrade() -> None:
    """Back to one task instance per task: the mapped instances (map_index >= 0) and their
    XComs and reschedules are deleted."""
    op.execute("DELETE FROM task_reschedule WHERE map_index >= 0")
    op.execute("DELETE FROM xcom WHERE map_index >= 0")
    op.execute("DELETE FROM task_instance WHERE map_index >= 0")
    with op.batch_alter_table("xcom") as batch:
        batch.drop_constraint(op.f("pk_xcom"), type_="primary")
        batch.create_primary_key(op.f("pk_xcom"), ["dag_id", "run_id", "task_id", "key"])
        batch.drop_column("map_index")
    with op.batch_alter_table("task_reschedule") as batch:
        batch.drop_constraint(op.f(_FK), type_="foreignkey")
        batch.drop_index(op.f("ix_task_reschedule_ti"))
        batch.drop_column("map_index")
    with op.batch_alter_table("task_instance") as batch:
        batch.drop_constraint(op.f("pk_task_instance"), type_="primary")
        batch.create_primary_key(op.f("pk_task_instance"), ["dag_id", "task_id", "run_id"])
        batch.drop_column("map_index")
    with op.batch_alter_table("task_reschedule") as batch:
        batch.create_foreign_key(
            op.f(_FK), "task_instance", ["dag_id", "task_id", "run_id"],
            ["dag_id", "task_id", "run_id"], ondelete="CASCADE")
        batch.create_index(op.f("ix_task_reschedule_ti"),
                           ["dag_id", "task_id", "run_id", "try_number"])
