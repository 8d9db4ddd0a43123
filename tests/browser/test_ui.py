"""The web UI in a real headless Chromium (Selenium), served by uvicorn on PostgreSQL: log
in, see the DAG list, open a DAG's grid with a failed task, open that task's panel and log,
clear it and watch its cell change colour without a page reload (the grid polls); a viewer
sees no actions; the UI's state-changing requests need the session's CSRF token.

Screenshots of the DAG list and the grid are saved under ``$SQUALL_TEST_ARTIFACTS`` (or
the test's tmp_path) and their paths printed."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.models import DagModel, ImportError_, TaskInstance, TaskInstanceKey
from squall.common.settings import Settings
from squall.common.state import DagRunState, DagRunType, TaskInstanceState
from squall.execution.runner import task_log_path
from squall.scheduler.run_creation import create_dag_run
from squall.sdk.dag import DAG
from tests.browser.conftest import WAIT
from tests.support.api import PASSWORD, Api, serve
from tests.support.scheduling import Noop, sync_dags

pytestmark = [pytest.mark.browser, pytest.mark.postgres,
              pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]

DAG_ID = "ui_etl"
DAY = datetime(2024, 3, 1, tzinfo=UTC)
LOG_LINE = "transform: cannot parse row 42 (this line is in the failed try's log)"


def make_dag(dag_id: str = DAG_ID) -> DAG:
    dag = DAG(dag_id, schedule="@daily", start_date=DAY, tags=["etl"])
    with dag:
        extract = Noop(task_id="extract")
        transform = Noop(task_id="transform")
        load = Noop(task_id="load")
        Noop(task_id="report")
        extract >> transform >> load
    return dag


@dataclass
class Ui:
    url: str
    api: Api
    factory: SessionFactory
    failed_run: str

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
def ui(tmp_path: Path, session_factory: SessionFactory,
       browser: WebDriver) -> Iterator[Ui]:
    """Three runs of ``ui_etl`` (two succeeded; the newest failed in ``transform``, whose
    try 1 left a log), a second DAG, paused, and an import error; then the server."""
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
        url = str(api.client.base_url).rstrip("/")
        browser.get(url + "/login")
        browser.delete_all_cookies()
        yield Ui(url, api, session_factory, runs[2])


def wait(browser: WebDriver, what: str, until: Callable[[WebDriver], object],
         timeout: float = WAIT) -> None:
    """Poll the page until ``until(browser)`` is truthy (a timeout names ``what``)."""
    WebDriverWait(browser, timeout, poll_frequency=0.1).until(
        until, message=f"timed out waiting for {what}")


def login(browser: WebDriver, ui: Ui, username: str) -> None:
    browser.get(ui.url + "/login")
    browser.find_element(By.ID, "username").send_keys(username)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-submit").click()
    wait(browser, "the DAG list",
         lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-dag-id="{DAG_ID}"]'))


def cell(browser: WebDriver, task_id: str, run_id: str) -> WebElement:
    return browser.find_element(
        By.CSS_SELECTOR, f'td.cell[data-task-id="{task_id}"][data-run-id="{run_id}"]')


def cell_state(browser: WebDriver, task_id: str, run_id: str) -> str:
    found = browser.find_elements(
        By.CSS_SELECTOR, f'td.cell[data-task-id="{task_id}"][data-run-id="{run_id}"]')
    return found[0].get_attribute("data-state") or "" if found else ""


def screenshot(browser: WebDriver, folder: Path, name: str,
               capsys: pytest.CaptureFixture[str]) -> Path:
    path = folder / name
    assert browser.save_screenshot(str(path)), f"no screenshot saved at {path}"
    with capsys.disabled():
        print(f"\nscreenshot: {path}")
    return path


def test_op_clears_a_failed_task_and_the_grid_turns_without_a_reload(
        ui: Ui, browser: WebDriver, artifacts: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    login(browser, ui, "op")
    # the DAG list: both DAGs, the import error banner, the last runs as coloured dots
    banner = browser.find_element(By.ID, "import-errors")
    assert banner.is_displayed() and "1 DAG file failed to load" in banner.text
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-dag-id="{DAG_ID}"]')
    dots = row.find_elements(By.CSS_SELECTOR, ".dot")
    assert [d.get_attribute("class") for d in dots] == [
        "dot state-success", "dot state-success", "dot state-failed"]
    assert "@daily" in row.text and "2024-03-04" in row.text
    paused = browser.find_element(By.CSS_SELECTOR, 'input.pause-switch[data-dag-id="ui_reports"]')
    assert not paused.is_selected()  # the switch shows "active": off for a paused DAG
    screenshot(browser, artifacts, "ui-dag-list.png", capsys)

    row.find_element(By.CSS_SELECTOR, "a.dag-link").click()
    run_id = ui.failed_run
    wait(browser, "the failed task's cell",
         lambda d: cell_state(d, "transform", run_id) == "failed")
    assert "state-failed" in (cell(browser, "transform", run_id).get_attribute("class") or "")
    tasks = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "table.grid th.task")]
    assert tasks == ["extract", "transform", "load", "report"]  # upstream first
    browser.execute_script("window.__noReload = 'still the same page';")

    cell(browser, "transform", run_id).click()
    panel = browser.find_element(By.ID, "ti-panel")
    wait(browser, "the task's log", lambda d: LOG_LINE in d.find_element(By.ID, "ti-log").text)
    facts = browser.find_element(By.ID, "ti-facts").text
    assert "failed" in facts and socket.gethostname() in facts and "7s" in facts
    assert panel.is_displayed()
    screenshot(browser, artifacts, "ui-grid.png", capsys)

    browser.find_element(By.ID, "ti-clear").click()
    wait(browser, "the cleared cell to change colour",
         lambda d: cell_state(d, "transform", run_id) == "none")
    assert "state-failed" not in (cell(browser, "transform", run_id).get_attribute("class")
                                  or "")
    assert browser.execute_script("return window.__noReload;") == "still the same page"
    assert ui.ti_state("transform", run_id) == TaskInstanceState.NONE
    wait(browser, "the panel to show the new state",
         lambda d: "cleared by op" in d.find_element(By.ID, "ti-facts").text)


def test_a_viewer_sees_no_actions(ui: Ui, browser: WebDriver) -> None:
    login(browser, ui, "viewer")
    assert browser.find_elements(By.CSS_SELECTOR, ".action, input[type=checkbox]") == []
    assert "paused" in browser.find_element(
        By.CSS_SELECTOR, 'tr[data-dag-id="ui_reports"]').text
    browser.get(f"{ui.url}/dags/{DAG_ID}/grid")
    wait(browser, "the grid", lambda d: cell_state(d, "transform", ui.failed_run) == "failed")
    cell(browser, "transform", ui.failed_run).click()
    wait(browser, "the task's log", lambda d: LOG_LINE in d.find_element(By.ID, "ti-log").text)
    assert browser.find_elements(By.CSS_SELECTOR, ".action, #ti-actions, #trigger-button") == []
    for page, marker in (("/backfills", "backfill-rows"), ("/pools", "pool-rows")):
        browser.get(ui.url + page)
        wait(browser, f"the {page} page",
             lambda d, m=marker: "Loading" not in d.find_element(By.ID, m).text)
    assert "default_pool" in browser.find_element(By.ID, "pool-rows").text


def _login_token(client: httpx.Client) -> str:
    page = client.get("/login")
    assert page.status_code == 200
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
    assert found, page.text
    return found.group(1)


def test_state_changes_need_the_csrf_token(ui: Ui) -> None:
    with httpx.Client(base_url=ui.url, timeout=30) as client:
        # the login form itself: without its token (or its cookie) it is refused
        refused = client.post("/login", data={"username": "op", "password": PASSWORD})
        assert refused.status_code == 403 and "squall_session" not in client.cookies
        token = _login_token(client)
        wrong = client.post("/login", data={"username": "op", "password": "nope-nope",
                                            "csrf_token": token})
        assert wrong.status_code == 401 and "Wrong username or password" in wrong.text
        token = _login_token(client)
        done = client.post("/login", data={"username": "op", "password": PASSWORD,
                                           "csrf_token": token})
        assert done.status_code == 303 and done.headers["location"] == "/"
        cookie = done.headers["set-cookie"]
        assert "squall_session=" in cookie and "HttpOnly" in cookie
        assert "samesite=lax" in cookie.lower()
        csrf = re.search(r'name="csrf-token" content="([0-9a-f]+)"', client.get("/").text)
        assert csrf
        url = f"/ui/api/dags/{DAG_ID}/pause"
        missing = client.post(url, json={"is_paused": True})
        assert missing.status_code == 403 and "CSRF" in missing.json()["detail"]
        forged = client.post(url, json={"is_paused": True}, headers={"X-CSRF-Token": "0" * 64})
        assert forged.status_code == 403
        clear = client.post(f"/ui/api/dags/{DAG_ID}/runs/{ui.failed_run}/tasks/transform/clear",
                            json={})
        assert clear.status_code == 403
        assert ui.ti_state("transform", ui.failed_run) == "failed"
        ok = client.post(url, json={"is_paused": True}, headers={"X-CSRF-Token": csrf.group(1)})
        assert ok.status_code == 200 and ok.json()["is_paused"] is True
        assert client.post("/logout", data={}).status_code == 403  # the form's token too
        out = client.post("/logout", data={"csrf_token": csrf.group(1)})
        assert out.status_code == 303
    with httpx.Client(base_url=ui.url, timeout=30) as anonymous:
        assert anonymous.get("/").headers.get("location") == "/login"
        assert anonymous.get(f"/ui/api/dags/{DAG_ID}/grid").status_code == 401
