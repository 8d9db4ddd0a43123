"""The ``trigger`` table: the waits of deferred task instances, run by triggerers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from squall.common.models.base import Base, UtcDateTime, utcnow


class Trigger(Base):
    """One deferred wait: ``classpath`` names a ``BaseTrigger`` subclass and ``kwargs`` its
    serialized arguments. A triggerer holds it (``triggerer_id``, its ``job`` id) while
    ``lease_expires_at`` is in the future; a row with no live lease is free to take."""

    __tablename__ = "trigger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    classpath: Mapped[str] = mapped_column(String(1000), nullable=False)
    kwargs: Mapped[str] = mapped_column(Text, nullable=False)
    created_date: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)
    triggerer_id: Mapped[int | None] = mapped_column(Integer, index=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    def __repr__(self) -> str:
        return f"<Trigger {self.id} {self.classpath} triggerer={self.triggerer_id}>"
