"""The grid marks setup and teardown tasks (issue 24 item 2), as Airflow 2.7+'s grid draws
an arrow up beside a setup's name and down beside a teardown's (``TaskName.tsx``): each
row of a setup / teardown has its marker, a work task none, and the task panel says the
task's kind. A screenshot of the grid is saved under ``$SQUALL_TEST_ARTIFACTS``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import update

from squall.common.db import session_scope
from squall.common.models import TaskInstance
from squall.common.state import DagRunState, DagRunType
from squall.runs.run_creation import create_dag_run
from squall.sdk.dag import DAG
from tests.browser.conftest import DAY, Ui
from tests.browser.test_ui import login, screenshot, wait
from tests.support.scheduling import Noop, sync_dags

pytestmark = [pytest.mark.browser, pytest.mark.postgres,
              pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]

ST_DAG = "ui_setup_teardown"


def _setup_teardown_dag() -> DAG:
    with DAG(ST_DAG, schedule=None, start_date=DAY) as dag:
        create = Noop(task_id="create_cluster")
        work = Noop(task_id="work")
        delete = Noop(task_id="delete_cluster")
        create >> work >> delete.as_teardown(setups=create)
    return dag


def test_grid_marks_setup_and_teardown_tasks(ui: Ui, browser: WebDriver, artifacts: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    dag = _setup_teardown_dag()
    sync_dags(ui.factory, dag)
    with session_scope(ui.factory) as session:
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL, logical_date=DAY,
                             data_interval=None, state=DagRunState.FAILED)
        run_id = run.run_id
    with session_scope(ui.factory) as session:
        for task_id, state in (("create_cluster", "success"), ("work", "failed"),
                               ("delete_cluster", "success")):
            session.execute(update(TaskInstance).where(
                TaskInstance.dag_id == ST_DAG, TaskInstance.task_id == task_id).values(
                state=state, try_number=1, start_date=DAY, end_date=DAY + timedelta(seconds=3)))

    login(browser, ui, "op")
    browser.get(f"{ui.url}/dags/{ST_DAG}/grid")
    wait(browser, "the grid's task rows",
         lambda d: len(d.find_elements(By.CSS_SELECTOR, "table.grid th.task")) == 3)

    rows = {}
    for head in browser.find_elements(By.CSS_SELECTOR, "table.grid th.task"):
        marker = head.find_elements(By.CSS_SELECTOR, ".st-marker")
        rows[head.get_attribute("title")] = (
            head.text, marker[0].text if marker else None,
            marker[0].get_attribute("class") if marker else None)
    assert rows == {
        "create_cluster (setup task)": ("↑ setupcreate_cluster", "↑ setup",
                                        "st-marker st-setup"),
        "work": ("work", None, None),
        "delete_cluster (teardown task)": ("↓ teardowndelete_cluster", "↓ teardown",
                                           "st-marker st-teardown")}
    screenshot(browser, artifacts, "grid-setup-teardown.png", capsys)

    browser.find_element(
        By.CSS_SELECTOR,
        f'td.cell[data-task-id="delete_cluster"][data-run-id="{run_id}"]').click()
    wait(browser, "the teardown's panel",
         lambda d: "teardown task" in d.find_element(By.ID, "ti-facts").text)
    assert browser.find_element(By.ID, "ti-title").text == "delete_cluster"
    assert browser.find_element(By.ID, "opt-recursive").is_selected()  # Airflow's default
