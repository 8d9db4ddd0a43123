"""The trigger dialog's form built from a DAG's params (Airflow 2.6+'s trigger form), in a real
headless Chromium: one field per param typed by its schema (number, checkbox, select, JSON
textarea, text), titles, descriptions and defaults shown; the fields fill the conf JSON; a
value the schema refuses is refused by the server with the error naming the param (its field
marked) and no run; a good one creates the run with that conf.

The screenshot of the form with the refused value is saved under ``$SQUALL_TEST_ARTIFACTS``
(or the test's tmp_path) and its path printed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select
from sqlalchemy import select

from squall.common.db import session_scope
from squall.common.models import DagRun
from squall.sdk.dag import DAG
from squall.sdk.params import Param
from tests.browser.conftest import Ui
from tests.browser.test_ui import login, screenshot, wait
from tests.support.scheduling import Noop, sync_dags

pytestmark = [pytest.mark.browser, pytest.mark.postgres,
              pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]

PARAMS_DAG = "ui_params"
DEFAULTS = {"count": 2, "flag": False, "mode": "slow", "tags": ["a", "b"], "note": "hi",
            "maybe": None}


def params_dag() -> DAG:
    with DAG(PARAMS_DAG, schedule=None, start_date=datetime(2024, 3, 1, tzinfo=UTC), params={
        "count": Param(2, type="integer", minimum=1, maximum=10, title="Row count",
                       description="How many rows to load"),
        "flag": Param(False, type="boolean", description="Dry run"),
        "mode": Param("slow", enum=["slow", "fast"], values_display={"fast": "Fast (risky)"},
                      section="Advanced"),
        "tags": Param(["a", "b"], type="array"),
        "note": "hi",
        "maybe": Param(None, type=["null", "integer"]),
    }) as dag:
        Noop(task_id="load")
    return dag


def _conf(browser: WebDriver) -> dict[str, object]:
    text = browser.find_element(By.ID, "trigger-conf").get_attribute("value") or "{}"
    parsed: dict[str, object] = json.loads(text)
    return parsed


def _set(browser: WebDriver, field_id: str, text: str) -> None:
    field = browser.find_element(By.ID, field_id)
    field.clear()
    field.send_keys(text)


def test_the_trigger_form_is_built_from_the_params_and_validated_by_the_server(
        ui: Ui, browser: WebDriver, artifacts: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    sync_dags(ui.factory, params_dag())
    login(browser, ui, "op")
    wait(browser, "the params DAG in the list", lambda d: d.find_elements(
        By.CSS_SELECTOR, f'tr[data-dag-id="{PARAMS_DAG}"] button.action'))
    browser.find_element(By.CSS_SELECTOR,
                         f'tr[data-dag-id="{PARAMS_DAG}"] button.action').click()
    wait(browser, "the params form", lambda d: d.find_element(
        By.ID, "trigger-params").get_attribute("data-ready") == "true")

    box = browser.find_element(By.ID, "trigger-params")
    assert box.is_displayed()
    count = browser.find_element(By.ID, "param-count")
    assert (count.get_attribute("type"), count.get_attribute("value"),
            count.get_attribute("min"), count.get_attribute("max")) == ("number", "2", "1", "10")
    assert "Row count" in box.text and "How many rows to load" in box.text
    flag = browser.find_element(By.ID, "param-flag")
    assert flag.get_attribute("type") == "checkbox" and not flag.is_selected()
    mode = Select(browser.find_element(By.ID, "param-mode"))
    assert [o.text for o in mode.options] == ["slow", "Fast (risky)"]
    assert browser.find_element(By.CSS_SELECTOR, "fieldset.param-section legend").text == (
        "Advanced")
    tags = browser.find_element(By.ID, "param-tags")
    assert tags.tag_name == "textarea" and json.loads(tags.get_attribute("value") or "") == [
        "a", "b"]
    assert browser.find_element(By.ID, "param-note").get_attribute("value") == "hi"
    assert _conf(browser) == DEFAULTS  # the fields fill the conf

    _set(browser, "param-count", "0")
    wait(browser, "the conf to follow the field", lambda d: _conf(d)["count"] == 0)
    browser.find_element(By.ID, "trigger-submit").click()
    error = "Invalid input for param count: 0 is less than the minimum of 1"
    wait(browser, "the server's refusal",  # novalidate: the server's check, not the browser's
         lambda d: d.find_element(By.ID, "trigger-error").text == error)
    row = browser.find_element(By.CSS_SELECTOR, '[data-param-row="count"]')
    assert "invalid" in (row.get_attribute("class") or "")
    screenshot(browser, artifacts, "ui-trigger-params.png", capsys)
    with session_scope(ui.factory) as session:
        assert session.scalars(select(DagRun).where(DagRun.dag_id == PARAMS_DAG)).all() == []

    _set(browser, "param-count", "5")
    flag.click()
    mode.select_by_visible_text("Fast (risky)")
    _set(browser, "param-maybe", "7")
    wait(browser, "the conf to follow the fields", lambda d: _conf(d) == {
        **DEFAULTS, "count": 5, "flag": True, "mode": "fast", "maybe": 7})
    browser.find_element(By.ID, "trigger-submit").click()
    wait(browser, "the dialog to close", lambda d: not d.find_element(
        By.ID, "trigger-dialog").is_displayed())
    with session_scope(ui.factory) as session:
        confs = session.scalars(select(DagRun.conf).where(DagRun.dag_id == PARAMS_DAG)).all()
    assert confs == [{**DEFAULTS, "count": 5, "flag": True, "mode": "fast", "maybe": 7}]
