"""What the scheduler keeps on a backfill while it drives it: why it ended
(``reason``: the deadlock report), since when it has made no progress
(``stalled_since``) and since when it has been at its ``max_active_runs``
(``limit_reached_at``, for ``--delay-on-limit``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    """The storage type of ``UtcDateTime``: ``timestamptz`` on PostgreSQL."""
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("backfill") as batch:
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("stalled_since", _utc(), nullable=True))
        batch.add_column(sa.Column("limit_reached_at", _utc(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backfill") as batch:
        batch.drop_column("limit_reached_at")
        batch.drop_column("stalled_since")
        batch.drop_column("reason")
