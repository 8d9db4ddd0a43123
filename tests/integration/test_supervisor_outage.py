"""The LocalTaskJob supervisor's heartbeat during a database outage: the task is not killed,
the outage is logged once and counted once (``worker.outage``)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from squall.common.metrics import WORKER_OUTAGE
from squall.common.payload import TaskRunCommand
from squall.common.settings import Settings
from squall.worker.supervisor import LocalTaskJob


class RecordingMetrics:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def incr(self, name: str, count: int = 1) -> None:
        self.counts[name] += count

    def gauge(self, name: str, value: float) -> None:
        pass

    def timing(self, name: str, ms: float) -> None:
        pass


def test_heartbeat_during_an_outage_keeps_the_task(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)})
    engine = create_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'squall.db'}")
    command = TaskRunCommand(dag_id="d", task_id="t", run_id="r", try_number=1,
                             dag_file="DAGS_FOLDER/d.py", queue="default")
    metrics = RecordingMetrics()
    job = LocalTaskJob(command, settings=settings, engine=engine, celery_task_id="c",
                       worker_name="w", metrics=metrics)
    job.writes.job_id = 1  # as if the try had started
    with caplog.at_level(logging.DEBUG, logger="squall.worker.supervisor"):
        for _ in range(3):
            assert job.heartbeat() is None  # None: keep the task running
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "database unreachable" in errors[0]
    assert metrics.counts[WORKER_OUTAGE] == 1
    engine.dispose()
