"""The ``dag_file`` table: how the last parse of each DAG file went."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from squall.common.models.base import Base, UtcDateTime


class DagFile(Base):
    """One row per DAG file a parse answered for (as Airflow's ``dags report`` shows them).

    Written by :func:`~squall.dag_processing.sync.sync_to_db` from the parse's
    :class:`~squall.dag_processing.dagbag.FileStat`; a file the parse was told no longer
    exists loses its row. ``squall dags report`` reads it.
    """

    __tablename__ = "dag_file"

    #: the file's absolute path (as ``dag.fileloc``)
    fileloc: Mapped[str] = mapped_column(String(2000), primary_key=True)
    #: when the file was last parsed (also when its answer was unchanged)
    last_parsed_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    #: seconds the last parse took to import the file and serialize its DAGs
    last_duration: Mapped[float] = mapped_column(Float, nullable=False)
    #: the DAGs the file defines, in definition order
    dag_ids: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    #: tasks over those DAGs
    task_count: Mapped[int] = mapped_column(Integer, nullable=False)
    has_import_error: Mapped[bool] = mapped_column(Boolean, nullable=False)
    #: digest of the file's last answer (:attr:`FileStat.fingerprint`)
    fingerprint: Mapped[str] = mapped_column(String(100), nullable=False)

    def __repr__(self) -> str:
        return (f"<DagFile {self.fileloc} {self.last_duration:.3f}s dags={len(self.dag_ids)} "
                f"error={self.has_import_error}>")
