"""Fixtures of the web UI's tests: a real headless Chromium driven by Selenium (Debian's
``chromium`` and ``chromium-driver``; ``.ci/run`` installs them when missing), the API and
UI served by uvicorn on PostgreSQL (tests/support/api.py) with a DAG whose newest run has
a failed task (rows set up directly), and a folder for screenshots.

Without Chromium the tests are skipped on a laptop and fail under ``CI`` (as a missing
service does, tests/conftest.py)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.models import DagModel, ImportError_, TaskInstance, TaskInstanceKey
from squall.common.settings import Settings
from squall.common.state import DagRunState, DagRunType
from squall.execution.runner import task_log_path
from squall.runs.run_creation import create_dag_run
from squall.sdk.dag import DAG
from tests.conftest import in_ci
from tests.support.api import Api, serve
from tests.support.scheduling import Noop, sync_dags

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")
#: how long a test waits for something to show in the page (seconds)
WAIT = 15

DAG_ID = "ui_etl"
DAY = datetime(2024, 3, 1, tzinfo=UTC)
LOG_LINE = "transform: cannot parse row 42 (this line is in the failed try's log)"


def make_dag(dag_id: str = DAG_ID) -> DAG:
    dag = DAG(dag_id, schedule="@daily", start_date=DAY, tags=["etl"])
    with dag:
        extract = Noop(task_id="extract")
        transform = Noop(task_id="transform", retries=3)  # 4 tries: the panel says "1 of 4"
        load = Noop(task_id="load")
        Noop(task_id="report")
        extract >> transform >> load
    return dag


BIG_DAG = "ui_big"


def add_big_dag(factory: SessionFactory, tasks: int = 200, runs: int = 30) -> None:
    """``ui_big``: ``tasks`` tasks in chains of ten, with ``runs`` daily runs."""
    dag = DAG(BIG_DAG, schedule="@daily", start_date=DAY)
    with dag:
        previous = None
        for n in range(tasks):
            task = Noop(task_id=f"step_{n:03d}")
            if previous is not None and n % 10:
                previous >> task
            previous = task
    sync_dags(factory, dag)
    with session_scope(factory) as session:
        for n in range(runs):
            create_dag_run(session, dag, run_type=DagRunType.SCHEDULED,
                           logical_date=DAY + timedelta(days=n), data_interval=None)


@dataclass
class Ui:
    url: str
    api: Api
    factory: SessionFactory
    failed_run: str
    log_folder: Path

    def ti_state(self, task_id: str, run_id: str) -> str:
        with session_scope(self.factory) as session:
            return str(session.scalar(select(TaskInstance.state).where(
                TaskInstance.dag_id == DAG_ID, TaskInstance.task_id == task_id,
                TaskInstance.run_id == run_id)))


def _set_states(factory: SessionFactory, run_id: str, states: dict[str, str],
                start: datetime) -> None:
    with session_scope(factory) as session:
        for task_id, state in states.items():
            finished = state in ("success", "failed", "upstream_failed")
            session.execute(update(TaskInstance).where(
                TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id,
                TaskInstance.task_id == task_id).values(
                state=state, try_number=1 if state != "upstream_failed" else 0,
                hostname=socket.gethostname() if state != "upstream_failed" else None,
                start_date=start if finished else None,
                end_date=start + timedelta(seconds=7) if finished else None,
                duration=7.0 if finished else None,
                state_reason="a task upstream failed" if state == "upstream_failed" else None))


@pytest.fixture
def ui(tmp_path: Path, session_factory: SessionFactory) -> Iterator[Ui]:
    """The UI served on PostgreSQL with three runs of ``ui_etl`` (two succeeded; the newest
    failed in ``transform``, whose try 1 left a log), a second DAG, paused, and an import
    error."""
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)})
    now = datetime.now(UTC)
    sync_dags(session_factory, make_dag(), make_dag("ui_reports"), now=now)
    runs = []
    with session_scope(session_factory) as session:
        for n in range(3):
            run = create_dag_run(session, make_dag(), run_type=DagRunType.SCHEDULED,
                                 logical_date=DAY + timedelta(days=n), data_interval=None,
                                 state=DagRunState.SUCCESS if n < 2 else DagRunState.FAILED,
                                 now=now)
            runs.append(run.run_id)
        session.execute(update(DagModel).where(DagModel.dag_id == "ui_reports")
                        .values(is_paused=True))
        session.execute(update(DagModel).where(DagModel.dag_id == DAG_ID)
                        .values(next_dagrun=DAY + timedelta(days=3)))
        session.add(ImportError_(filename="/dags/broken.py", timestamp=now,
                                 stacktrace="SyntaxError: invalid syntax (broken.py, line 3)"))
    for n, run_id in enumerate(runs):
        failed = n == 2
        _set_states(session_factory, run_id, {
            "extract": "success", "transform": "failed" if failed else "success",
            "load": "upstream_failed" if failed else "success", "report": "success"},
            now - timedelta(hours=3 - n))
    path = task_log_path(settings.log_folder, TaskInstanceKey(DAG_ID, "transform", runs[2]), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"[2024-03-03 00:00:01] INFO - starting\n{LOG_LINE}\n"
                    "[2024-03-03 00:00:07] ERROR - Task failed\n")
    with serve(settings, session_factory) as api:
        yield Ui(str(api.client.base_url).rstrip("/"), api, session_factory, runs[2],
                 settings.log_folder)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module's tests (cookies are cleared between them)."""
    missing = [str(p) for p in (CHROMEDRIVER, CHROMIUM) if not p.exists()]
    if missing:
        message = (f"{', '.join(missing)} not found: apt-get install -y chromium "
                   "chromium-driver")
        if in_ci():
            pytest.fail(f"{message}; CI is set, so this is an error, not a skip",
                        pytrace=False)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1440,900", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: ``$SQUALL_TEST_ARTIFACTS`` (made if needed), else tmp_path."""
    folder = Path(os.environ.get("SQUALL_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
