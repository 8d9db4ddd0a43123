"""Runs in the web UI, in a real headless Chromium: the grid's run panel (a run's header
opens it) with its actions, clear only failed / clear existing tasks / mark success / mark
failed, each previewed and confirmed, the database and the page changing; the runs list
(``/dagruns``) with each filter in the URL, its pages, and a bulk action on selected rows;
a viewer sees no run actions.

Screenshots (``ui-run-panel.png``, ``ui-run-clear-preview.png``, ``ui-runs-list.png``,
``ui-runs-bulk-preview.png``) go where ``tests/browser/test_ui.py``'s do."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select
from sqlalchemy import update

from squall.common.db import session_scope
from squall.common.models import DagRun
from tests.browser.conftest import DAG_ID, DAY, Ui
from tests.browser.test_ui import cell_state, login, screenshot, wait
from tests.browser.test_ui_runs_api import REPORTS, add_runs, run_state

pytestmark = [pytest.mark.browser, pytest.mark.postgres,
              pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]

FIRST = "scheduled__2024-03-01T00:00:00+00:00"
SECOND = "scheduled__2024-03-02T00:00:00+00:00"
TASKS = ("extract", "transform", "load", "report")


def open_grid(browser: WebDriver, ui: Ui) -> None:
    browser.get(f"{ui.url}/dags/{DAG_ID}/grid")
    wait(browser, "the grid", lambda d: cell_state(d, "transform", ui.failed_run) == "failed")


def open_run(browser: WebDriver, run_id: str, state: str) -> None:
    browser.find_element(By.CSS_SELECTOR, f'.run-bar[data-run-id="{run_id}"]').click()
    wait(browser, f"the panel of run {run_id}", lambda d: d.find_element(
        By.ID, "run-title").text == run_id and d.find_element(
        By.ID, "run-panel").get_attribute("data-state") == state)


def preview(browser: WebDriver, button: str) -> list[tuple[str, str, str]]:
    """Click ``button``; the confirmation's rows: (task, state now, state after)."""
    browser.find_element(By.ID, button).click()
    wait(browser, "the preview", lambda d: d.find_element(By.ID, "run-confirm").get_attribute(
        "open") is not None)
    found = []
    for row in browser.find_elements(By.CSS_SELECTOR, "#run-confirm-tis tbody tr"):
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        found.append((cells[-4], cells[-2], cells[-1]))  # [DAG, run,] task, index, now, after
    return found


def confirm(browser: WebDriver) -> None:
    browser.find_element(By.ID, "run-confirm-ok").click()
    wait(browser, "the dialog to close", lambda d: d.find_element(
        By.ID, "run-confirm").get_attribute("open") is None)


def test_the_run_panel_clears_only_the_failed_tasks_after_a_preview(
        ui: Ui, browser: WebDriver, artifacts: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    with session_scope(ui.factory) as session:
        session.execute(update(DagRun).where(DagRun.run_id == ui.failed_run).values(
            conf={"source": "s3://raw/2024-03-03/", "rows": 1200},
            data_interval_start=DAY + timedelta(days=2),
            data_interval_end=DAY + timedelta(days=3)))
    login(browser, ui, "op")
    open_grid(browser, ui)
    open_run(browser, ui.failed_run, "failed")
    facts = browser.find_element(By.ID, "run-facts").text
    for shown in ("scheduled", "2024-03-03", "Duration",
                  "1 failed, 2 success, 1 upstream_failed"):
        assert shown in facts, facts
    assert re.search(r"Data interval\s+2024-03-03 00:00:00\D* → 2024-03-04 00:00:00", facts), facts
    assert json.loads(browser.find_element(By.ID, "run-conf").text) == {
        "source": "s3://raw/2024-03-03/", "rows": 1200}
    assert "run-selected" in (browser.find_element(
        By.CSS_SELECTOR, f'.run-bar[data-run-id="{ui.failed_run}"]').find_element(
        By.XPATH, "..").get_attribute("class") or "")
    screenshot(browser, artifacts, "ui-run-panel.png", capsys)

    assert preview(browser, "run-clear-failed") == [
        ("load", "upstream_failed", "none"), ("transform", "failed", "none")]
    summary = browser.find_element(By.ID, "run-confirm-summary").text
    assert "2 task instances would change; 1 run would become queued" in summary
    assert ui.ti_state("transform", ui.failed_run) == "failed"  # not before the confirmation
    screenshot(browser, artifacts, "ui-run-clear-preview.png", capsys)
    confirm(browser)
    wait(browser, "the cleared cells", lambda d: [cell_state(d, t, ui.failed_run)
                                                  for t in TASKS] == [
        "success", "none", "none", "success"])
    assert [ui.ti_state(t, ui.failed_run) for t in TASKS] == ["success", "none", "none",
                                                              "success"]
    assert run_state(ui, DAG_ID, ui.failed_run) == "queued"
    wait(browser, "the panel to show the run queued", lambda d: d.find_element(
        By.ID, "run-panel").get_attribute("data-state") == "queued")


def test_the_run_panel_clears_every_task_or_is_cancelled(ui: Ui, browser: WebDriver) -> None:
    login(browser, ui, "op")
    open_grid(browser, ui)
    open_run(browser, FIRST, "success")
    assert preview(browser, "run-clear") == [(t, "success", "none") for t in sorted(TASKS)]
    browser.find_element(By.ID, "run-confirm-cancel").click()
    assert ui.ti_state("extract", FIRST) == "success"  # cancelled: nothing changed
    preview(browser, "run-clear")
    confirm(browser)
    wait(browser, "every cell of the run cleared",
         lambda d: [cell_state(d, t, FIRST) for t in TASKS] == ["none"] * 4)
    assert [ui.ti_state(t, FIRST) for t in TASKS] == ["none"] * 4
    assert run_state(ui, DAG_ID, FIRST) == "queued"


def test_the_run_panel_marks_a_run_success_and_another_failed(ui: Ui,
                                                             browser: WebDriver) -> None:
    login(browser, ui, "op")
    open_grid(browser, ui)
    open_run(browser, ui.failed_run, "failed")
    assert preview(browser, "run-mark-success") == [
        ("load", "upstream_failed", "success"), ("transform", "failed", "success")]
    confirm(browser)
    wait(browser, "the marked cells", lambda d: [cell_state(d, t, ui.failed_run)
                                                 for t in TASKS] == ["success"] * 4)
    wait(browser, "the run's bar", lambda d: "state-success" in (d.find_element(
        By.CSS_SELECTOR, f'.run-bar[data-run-id="{ui.failed_run}"]').get_attribute(
        "class") or ""))
    assert run_state(ui, DAG_ID, ui.failed_run) == "success"

    open_run(browser, SECOND, "success")
    assert preview(browser, "run-mark-failed") == []  # finished task instances stay
    assert "1 run would become failed" in browser.find_element(
        By.ID, "run-confirm-summary").text
    confirm(browser)
    wait(browser, "the panel to show the run failed", lambda d: d.find_element(
        By.ID, "run-panel").get_attribute("data-state") == "failed")
    assert run_state(ui, DAG_ID, SECOND) == "failed"
    # a task's cell opens its panel in place of the run's
    browser.find_element(By.CSS_SELECTOR, f'td.cell[data-task-id="load"][data-run-id="{SECOND}"]'
                         ).click()
    wait(browser, "the task panel", lambda d: d.find_element(By.ID, "ti-panel").is_displayed()
         and not d.find_element(By.ID, "run-panel").is_displayed())


def rows(browser: WebDriver) -> list[str]:
    return [r.get_attribute("data-run-id") or ""
            for r in browser.find_elements(By.CSS_SELECTOR, "#runs-rows tr.run-row")]


def filter_by(browser: WebDriver, **fields: str) -> None:
    """Set the filter form's fields (the others emptied) and apply it."""
    for name in ("dag_id", "state", "run_type", "logical_date_gte", "logical_date_lte"):
        field = browser.find_element(By.ID, f"f-{name}")
        if field.tag_name == "select":
            Select(field).select_by_value(fields.get(name, ""))
        else:
            field.clear()
            field.send_keys(fields.get(name, ""))
    browser.find_element(By.ID, "runs-filter").click()
    wait(browser, "the filters in the URL", lambda d: {
        k: v[0] for k, v in parse_qs(urlparse(d.current_url).query).items()} == fields)


def test_the_runs_list_filters_by_each_field_and_pages(
        ui: Ui, browser: WebDriver, artifacts: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    manual, backfill = add_runs(ui)
    login(browser, ui, "op")
    browser.find_element(By.LINK_TEXT, "Runs").click()
    everything = [manual, backfill, ui.failed_run, SECOND, FIRST]
    wait(browser, "every run, newest first", lambda d: rows(d) == everything)
    assert "5 runs" in browser.find_element(By.ID, "runs-count").text
    screenshot(browser, artifacts, "ui-runs-list.png", capsys)

    filter_by(browser, state="failed")
    wait(browser, "the failed run", lambda d: rows(d) == [ui.failed_run])
    wait(browser, "the DAG options", lambda d: len(d.find_elements(
        By.CSS_SELECTOR, "#f-dag_id option")) == 3)
    filter_by(browser, dag_id=REPORTS)
    wait(browser, "the other DAG's run", lambda d: rows(d) == [manual])
    filter_by(browser, run_type="backfill")
    wait(browser, "the backfill run", lambda d: rows(d) == [backfill])
    filter_by(browser, logical_date_gte="2024-03-02", logical_date_lte="2024-03-03T00:00")
    wait(browser, "the runs of the range", lambda d: rows(d) == [ui.failed_run, SECOND])
    assert browser.find_element(By.ID, "f-logical_date_gte").get_attribute(
        "value") == "2024-03-02"  # the form shows the URL's filters
    filter_by(browser, logical_date_gte="yesterday")
    wait(browser, "the bad filter named", lambda d: "logical_date_gte 'yesterday' is not an "
         "ISO 8601" in d.find_element(By.ID, "runs-error").text)
    assert rows(browser) == []

    browser.get(f"{ui.url}/dagruns?dag_id={DAG_ID}&limit=2")  # a shared link
    wait(browser, "the first page", lambda d: rows(d) == [backfill, ui.failed_run])
    browser.find_element(By.ID, "runs-next").click()
    wait(browser, "the second page", lambda d: rows(d) == [SECOND, FIRST])
    assert "3\u20134 of 4 · page 2 of 2" in browser.find_element(By.ID, "runs-range").text
    browser.find_element(By.CSS_SELECTOR, f'tr[data-run-id="{SECOND}"] a.run-link').click()
    wait(browser, "the grid with the run's panel open", lambda d: d.find_elements(
        By.ID, "run-title") and d.find_element(By.ID, "run-title").text == SECOND)


def test_a_bulk_action_from_the_runs_list(ui: Ui, browser: WebDriver, artifacts: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    login(browser, ui, "op")
    browser.get(f"{ui.url}/dagruns?dag_id={DAG_ID}")
    wait(browser, "the runs", lambda d: rows(d) == [ui.failed_run, SECOND, FIRST])
    bulk = browser.find_element(By.ID, "bulk-mark-failed")
    assert not bulk.is_enabled()
    for run_id in (SECOND, FIRST):
        browser.find_element(By.CSS_SELECTOR, f'tr[data-run-id="{run_id}"] input.run-check'
                             ).click()
    assert browser.find_element(By.ID, "runs-selected").text == "2 selected"
    assert preview(browser, "bulk-mark-failed") == []
    assert "2 runs would become failed" in browser.find_element(
        By.ID, "run-confirm-summary").text
    browser.find_element(By.ID, "run-confirm-cancel").click()
    rows_now = preview(browser, "bulk-clear")
    assert len(rows_now) == 8 and {r[2] for r in rows_now} == {"none"}
    assert "Clear 2 runs?" in browser.find_element(By.ID, "run-confirm-title").text
    screenshot(browser, artifacts, "ui-runs-bulk-preview.png", capsys)
    confirm(browser)
    wait(browser, "both runs queued", lambda d: [r.get_attribute("data-state") for r in
                                                 d.find_elements(By.CSS_SELECTOR,
                                                                 "#runs-rows tr.run-row")]
         == ["failed", "queued", "queued"])
    assert [run_state(ui, DAG_ID, r) for r in (SECOND, FIRST)] == ["queued", "queued"]
    assert ui.ti_state("report", FIRST) == "none"
    assert browser.find_element(By.ID, "runs-selected").text == "0 selected"


def test_a_viewer_sees_no_run_actions(ui: Ui, browser: WebDriver) -> None:
    login(browser, ui, "viewer")
    open_grid(browser, ui)
    open_run(browser, ui.failed_run, "failed")
    assert not browser.find_elements(By.ID, "run-actions")
    assert not browser.find_elements(By.ID, "run-confirm")
    browser.get(f"{ui.url}/dagruns")
    wait(browser, "the runs", lambda d: len(rows(d)) == 3)
    assert not browser.find_elements(By.CSS_SELECTOR, "input.run-check, #runs-bulk, #runs-all")
