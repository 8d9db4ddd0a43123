"""The web UI in a real headless Chromium (Selenium), served by uvicorn on PostgreSQL: log
in, see the DAG list, open a DAG's grid with a failed task, open that task's panel and log,
clear it and watch its cell change colour without a page reload (the grid polls); a viewer
sees no actions; the UI's state-changing requests need the session's CSRF token.

Screenshots of the DAG list and the grid are saved under ``$SQUALL_TEST_ARTIFACTS`` (or
the test's tmp_path) and their paths printed."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select, update

from squall.common.db import session_scope
from squall.common.models import Backfill, DagModel, DagRun, TaskInstance, TaskInstanceKey
from squall.common.state import TaskInstanceState
from squall.execution.runner import task_log_path
from tests.browser.conftest import BIG_DAG, DAG_ID, DAY, LOG_LINE, WAIT, Ui, add_big_dag
from tests.support.api import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.postgres,
              pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]


def wait(browser: WebDriver, what: str, until: Callable[[WebDriver], object],
         timeout: float = WAIT) -> None:
    """Poll the page until ``until(browser)`` is truthy (a timeout names ``what``)."""
    WebDriverWait(browser, timeout, poll_frequency=0.1).until(
        until, message=f"timed out waiting for {what}")


def login(browser: WebDriver, ui: Ui, username: str) -> None:
    browser.get(ui.url + "/login")
    browser.delete_all_cookies()  # an earlier test's session (cookies ignore the port)
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
    assert "1 of 4" in facts  # retries=3: four tries, as Airflow counts them
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

    # trigger with a conf: a fourth column appears; then pause the DAG from the grid
    browser.find_element(By.ID, "trigger-button").click()
    conf = browser.find_element(By.ID, "trigger-conf")
    conf.send_keys("[1]")
    browser.find_element(By.ID, "trigger-submit").click()
    wait(browser, "the conf to be refused", lambda d: "must be a JSON object" in d.find_element(
        By.ID, "trigger-error").text)
    conf.clear()
    conf.send_keys('{"day": 4}')
    browser.find_element(By.ID, "trigger-submit").click()
    wait(browser, "the triggered run's column",
         lambda d: len(d.find_elements(By.CSS_SELECTOR, ".run-bar")) == 4)
    with session_scope(ui.factory) as session:
        confs = session.scalars(select(DagRun.conf).where(DagRun.run_type == "manual")).all()
    assert confs == [{"day": 4}]
    browser.find_element(By.ID, "pause-toggle").click()
    wait(browser, "the paused badge",
         lambda d: d.find_element(By.ID, "dag-paused").is_displayed())
    with session_scope(ui.factory) as session:
        dag = session.get(DagModel, DAG_ID)
        assert dag is not None and dag.is_paused
    assert browser.execute_script("return window.__noReload;") == "still the same page"


def test_a_viewer_sees_no_actions(ui: Ui, browser: WebDriver, artifacts: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    with session_scope(ui.factory) as session:
        # a deadlocked backfill that left the newest run unfinished
        backfill = Backfill(dag_id=DAG_ID, from_date=DAY, to_date=DAY + timedelta(days=4),
                            max_active_runs=2, state="failed", total_runs=5,
                            reason="deadlock: 1 task instance(s) can never run")
        session.add(backfill)
        session.flush()
        session.execute(update(DagRun).where(DagRun.dag_id == DAG_ID)
                        .values(backfill_id=backfill.id))
        session.execute(update(DagRun).where(DagRun.run_id == ui.failed_run)
                        .values(state="running"))
    login(browser, ui, "viewer")
    assert browser.find_elements(By.CSS_SELECTOR, ".action, input[type=checkbox]") == []
    assert "paused" in browser.find_element(
        By.CSS_SELECTOR, 'tr[data-dag-id="ui_reports"]').text
    browser.get(f"{ui.url}/dags/{DAG_ID}/grid")
    wait(browser, "the grid", lambda d: cell_state(d, "transform", ui.failed_run) == "failed")
    cell(browser, "transform", ui.failed_run).click()
    wait(browser, "the task's log", lambda d: LOG_LINE in d.find_element(By.ID, "ti-log").text)
    assert browser.find_elements(By.CSS_SELECTOR, ".action, #ti-actions, #trigger-button") == []
    # the run its backfill left says so, with the command that resumes it
    resume = "resume with: squall dags backfill ui_etl -s"
    note = browser.find_element(By.CSS_SELECTOR, "#ti-facts .run-note").text
    assert f"backfill {backfill.id} ended (deadlocked)" in note and resume in note, note
    assert len(browser.find_elements(By.CSS_SELECTOR, ".run-bar.orphaned")) == 1
    browser.get(ui.url + "/backfills")
    wait(browser, "the backfill's progress", lambda d: "2 of 5 runs finished" in d.find_element(
        By.ID, "backfill-rows").text)
    assert "left 1 run(s) unfinished; resume with:" in browser.find_element(
        By.ID, "backfill-rows").text
    screenshot(browser, artifacts, "ui-backfills.png", capsys)
    browser.get(ui.url + "/pools")
    wait(browser, "the pools", lambda d: "default_pool" in d.find_element(By.ID, "pool-rows").text)


def test_the_panel_tails_a_running_try_s_log(ui: Ui, browser: WebDriver) -> None:
    run_id = ui.failed_run
    with session_scope(ui.factory) as session:
        session.execute(update(TaskInstance).where(
            TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id,
            TaskInstance.task_id == "report").values(state="running", end_date=None,
                                                     duration=None))
    path = task_log_path(ui.log_folder, TaskInstanceKey(DAG_ID, "report", run_id), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("first line of a running try\n")
    login(browser, ui, "viewer")
    browser.get(f"{ui.url}/dags/{DAG_ID}/grid")
    wait(browser, "the running cell", lambda d: cell_state(d, "report", run_id) == "running")
    browser.execute_script("window.__noReload = 'still the same page';")
    cell(browser, "report", run_id).click()
    wait(browser, "the log", lambda d: "first line" in d.find_element(By.ID, "ti-log").text)
    with path.open("a") as handle:
        handle.write("second line, written while the panel is open\n")
    wait(browser, "the added line",
         lambda d: "second line" in d.find_element(By.ID, "ti-log").text)
    text = browser.find_element(By.ID, "ti-log").text
    assert text.count("first line") == 1, text
    assert browser.execute_script("return window.__noReload;") == "still the same page"


def test_the_grid_of_25_runs_by_200_tasks_shows_within_a_second(
        ui: Ui, browser: WebDriver, capsys: pytest.CaptureFixture[str]) -> None:
    add_big_dag(ui.factory, runs=25)
    login(browser, ui, "viewer")
    browser.get(f"{ui.url}/dags/{BIG_DAG}/grid")
    wait(browser, "the big grid", lambda d: d.execute_script(
        "return document.querySelectorAll('td.cell.state-none').length") == 25 * 200)
    # from the start of the navigation to the first paint of the grid, as the page saw it
    shown = browser.execute_script(
        "return performance.getEntriesByName('squall-grid-shown')[0].startTime;")
    with capsys.disabled():
        print(f"\nthe grid of 25 runs x 200 tasks showed {shown / 1000:.2f}s after navigating")
    assert shown < 1000, f"the grid took {shown / 1000:.2f}s to show"


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
