"""A mapped task in the web UI, in a real headless Chromium (Selenium) on PostgreSQL: the
grid shows it as one row whose cell holds the number of its instances and a summary of their
states, coloured by the state that matters most (Airflow 2.10's grid:
``airflow.www.utils.priority``, where running comes before success); its panel lists the
instances (map index, state, try, duration) and one of them opens with its own log; the
panel marks that one instance only, and the cell turns without a reload. The mapped rows
(map_index 0..4) are written directly.

Screenshots of the panel listing the instances and of one instance with its log are saved
under ``$SQUALL_TEST_ARTIFACTS`` (or the test's tmp_path) and their paths printed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import delete, select

from squall.common.db import session_scope
from squall.common.models import TaskInstance, TaskInstanceKey
from squall.common.state import DagRunState, DagRunType
from squall.execution.runner import task_log_path
from squall.runs.run_creation import create_dag_run
from squall.sdk.dag import DAG
from tests.browser.conftest import DAY, Ui
from tests.browser.test_ui import cell, login, screenshot, wait
from tests.support.scheduling import Noop, sync_dags

pytestmark = [pytest.mark.browser, pytest.mark.postgres,
              pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]

MAPPED_DAG = "ui_mapped"
FAN = ["success", "success", "running", "success", "running"]
LOG_LINE = "instance 3 of fan processed its file (this line is in its own log)"


def seed_mapped(ui: Ui) -> str:
    """``ui_mapped`` (start >> fan) with one running run whose ``fan`` has five mapped
    instances in the states of FAN; instance 3 left a log. Returns the run id."""
    with DAG(MAPPED_DAG, schedule=None, start_date=DAY) as dag:
        Noop(task_id="start") >> Noop(task_id="fan")
    now = datetime.now(UTC)
    sync_dags(ui.factory, dag, now=now)
    with session_scope(ui.factory) as session:
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL, logical_date=DAY,
                             data_interval=None, state=DagRunState.RUNNING, now=now)
        run_id = run.run_id
        session.execute(delete(TaskInstance).where(TaskInstance.run_id == run_id,
                                                   TaskInstance.task_id == "fan"))
        start = session.get_one(TaskInstance, (MAPPED_DAG, "start", run_id, -1))
        start.state, start.try_number = "success", 1
        for index, state in enumerate(FAN):
            done = state == "success"
            session.add(TaskInstance(
                dag_id=MAPPED_DAG, task_id="fan", run_id=run_id, map_index=index,
                state=state, try_number=1, operator="Noop",
                start_date=now - timedelta(seconds=30),
                end_date=now - timedelta(seconds=30 - 4 - index) if done else None,
                duration=4.0 + index if done else None))
    path = task_log_path(ui.log_folder, TaskInstanceKey(MAPPED_DAG, "fan", run_id, 3), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"[2024-03-01 00:00:01] INFO - starting\n{LOG_LINE}\n")
    return run_id


def fan_states(ui: Ui, run_id: str) -> list[str]:
    with session_scope(ui.factory) as session:
        return list(session.scalars(select(TaskInstance.state).where(
            TaskInstance.run_id == run_id, TaskInstance.task_id == "fan")
            .order_by(TaskInstance.map_index)))


def test_a_mapped_task_shows_its_instances_and_each_opens_its_log(
        ui: Ui, browser: WebDriver, artifacts: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    run_id = seed_mapped(ui)
    login(browser, ui, "op")
    browser.get(f"{ui.url}/dags/{MAPPED_DAG}/grid")
    wait(browser, "the mapped cell", lambda d: d.find_elements(
        By.CSS_SELECTOR, f'td.cell.mapped[data-task-id="fan"][data-run-id="{run_id}"]'))
    fan = cell(browser, "fan", run_id)
    assert fan.text == "5"
    assert fan.get_attribute("data-mapped") == "5 mapped: 3 success, 2 running"
    assert fan.get_attribute("data-state") == "running"  # running outranks success
    assert "state-running" in (fan.get_attribute("class") or "")
    assert cell(browser, "start", run_id).text == ""  # an unmapped task shows no count
    assert "[ ]" in browser.find_element(By.XPATH, '//th[starts-with(., "fan")]').text

    fan.click()
    wait(browser, "the list of instances", lambda d: len(d.find_elements(
        By.CSS_SELECTOR, "#ti-instances tr.instance")) == 5)
    assert browser.find_element(By.ID, "ti-title").text == "fan [5]"
    assert not browser.find_element(By.ID, "ti-log-section").is_displayed()
    rows = browser.find_elements(By.CSS_SELECTOR, "#ti-instances tr.instance")
    assert [r.get_attribute("data-state") for r in rows] == FAN
    assert rows[3].find_elements(By.TAG_NAME, "td")[0].text == "3"
    assert rows[3].find_elements(By.TAG_NAME, "td")[3].text.startswith("7")  # 7.0 s
    screenshot(browser, artifacts, "ui-mapped-list.png", capsys)

    rows[3].click()
    wait(browser, "instance 3's log",
         lambda d: LOG_LINE in d.find_element(By.ID, "ti-log").text)
    assert browser.find_element(By.ID, "ti-title").text == "fan [3]"
    assert "3 (of 5)" in browser.find_element(By.ID, "ti-facts").text
    assert browser.find_element(By.ID, "ti-back").is_displayed()
    screenshot(browser, artifacts, "ui-mapped-instance.png", capsys)

    # the panel's actions act on the instance shown, not on the whole mapped task
    browser.find_element(By.ID, "ti-mark-failed").click()
    wait(browser, "instance 3 marked failed", lambda d: fan_states(ui, run_id)[3] == "failed")
    assert fan_states(ui, run_id) == ["success", "success", "running", "failed", "running"]
    # the grid repaints without a reload: failed now matters most
    wait(browser, "the mapped cell to turn failed",
         lambda d: cell(d, "fan", run_id).get_attribute("data-state") == "failed")
    assert cell(browser, "fan", run_id).get_attribute("data-mapped") == (
        "5 mapped: 2 running, 2 success, 1 failed")

    browser.find_element(By.ID, "ti-back").click()
    wait(browser, "the list again", lambda d: d.find_element(
        By.ID, "ti-instances").is_displayed())
