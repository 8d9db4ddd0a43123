"""The web UI's audit log page (``/audit``) in a real headless Chromium: the actions taken
through the API show newest first, with their owner and source; the filters (DAG, event,
owner, date range) narrow the table and stay in the page's URL; pages of 25; the grid's
"Audit log" link opens the DAG's own log. A screenshot of the page is saved under
``$SQUALL_TEST_ARTIFACTS`` (or the test's tmp_path), as docs/screenshots/audit-log.png."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from squall.common.db import session_scope
from squall.runs import audit
from tests.browser.conftest import DAG_ID, Ui
from tests.browser.test_ui import login, screenshot, wait

pytestmark = [pytest.mark.browser, pytest.mark.postgres,
              pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]

#: entries written from the command line three days ago (owner cli:alice)
OLD = 27
OLD_DAY = (datetime.now(UTC) - timedelta(days=3)).replace(hour=12, minute=0, second=0,
                                                          microsecond=0)


def _seed_old(ui: Ui) -> None:
    """``OLD`` entries of ``DAG_ID``, a minute apart, the newest a clear."""
    kinds = [
        (audit.CLEAR, "transform", {"cleared": 1, "only_failed": True}),
        (audit.MARK_SUCCESS, "load", {"changed": 1, "cleared_downstream": 0}),
        (audit.BACKFILL, None, {"backfill_id": 3, "runs": 7, "from_date": "2024-02-01"}),
        (audit.PAUSED, None, None),
        (audit.MARK_FAILED, "extract", {"changed": 1, "cleared_downstream": 0}),
        (audit.UNPAUSED, None, None),
    ]
    with session_scope(ui.factory) as session:
        for n in range(OLD):
            event, task_id, extra = kinds[n % len(kinds)]
            row = audit.record_event(session, event, owner="cli:alice", dag_id=DAG_ID,
                                     run_id=ui.failed_run if task_id else None,
                                     task_id=task_id, source="cli", extra=extra)
            row.dttm = OLD_DAY - timedelta(minutes=n)


def _rows(browser: WebDriver) -> list[list[str]]:
    """The table's rows: the text of each cell but the first (when)."""
    return [[" ".join(td.text.split()) for td in tr.find_elements(By.TAG_NAME, "td")[1:]]
            for tr in browser.find_elements(By.CSS_SELECTOR, "#audit-rows tr[data-event-log-id]")]


def _shows(browser: WebDriver, count: int, info: str) -> bool:
    """The table has ``count`` rows and the pager says ``info`` (``-`` for its en dash)."""
    try:
        return (len(_rows(browser)) == count
                and browser.find_element(By.ID, "page-info").text.replace("\N{EN DASH}", "-")
                == info)
    except StaleElementReferenceException:  # the table was being redrawn
        return False


def _set(browser: WebDriver, field_id: str, value: str) -> None:
    field = browser.find_element(By.ID, field_id)
    browser.execute_script("arguments[0].value = arguments[1];", field, value)


def test_the_audit_page_lists_filters_and_pages_the_actions(
        ui: Ui, browser: WebDriver, artifacts: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _seed_old(ui)
    api = ui.api
    assert api.patch("/api/v1/dags/ui_reports", user="op",
                     json={"is_paused": False}).status_code == 200
    assert api.post(f"/api/v1/dags/{DAG_ID}/dagRuns", user="op",
                    json={"dag_run_id": "by_hand", "conf": {"rows": 42}}).status_code == 200
    assert api.post(f"/api/v1/dags/{DAG_ID}/clearTaskInstances", user="admin", json={
        "dag_run_id": ui.failed_run, "task_ids": ["transform"], "dry_run": False,
        "include_downstream": True}).status_code == 200

    login(browser, ui, "viewer")  # reading the log needs only the viewer role
    browser.find_element(By.LINK_TEXT, "Audit log").click()
    wait(browser, "the first page", lambda d: _shows(d, 25, f"1-25 of {OLD + 3}"))
    rows = _rows(browser)
    # newest first: the clear, the trigger, the unpause; then the command line's
    assert [r[0] for r in rows[:4]] == ["clear", "trigger", "unpaused", "clear"]
    assert rows[1][:2] == ["trigger", DAG_ID] and rows[1][2] == "by_hand"
    assert rows[1][4] == "op api" and rows[1][5] == 'conf={"rows":42}'
    # (two tasks cleared, transform and load downstream: no one task id)
    assert rows[0][3] == "" and "include_downstream=true" in rows[0][5]
    assert 'task_ids=["transform"]' in rows[0][5] and "cleared=2" in rows[0][5]
    assert rows[3][4] == "cli:alice cli"
    browser.execute_script("document.activeElement.blur()")
    shot = screenshot(browser, artifacts, "audit-log.png", capsys)
    assert shot.stat().st_size > 10_000

    browser.find_element(By.ID, "page-next").click()
    wait(browser, "the second page", lambda d: _shows(d, OLD + 3 - 25, f"26-{OLD + 3} of "
                                                                       f"{OLD + 3}"))
    assert browser.find_element(By.ID, "page-next").get_attribute("disabled") is not None

    # a DAG: only its entries, and the URL keeps the filter
    _set(browser, "f-dag", "ui_reports")
    browser.find_element(By.CSS_SELECTOR, "#audit-filters button[type=submit]").click()
    wait(browser, "ui_reports' entries", lambda d: _shows(d, 1, "1-1 of 1"))
    assert _rows(browser)[0][:2] == ["unpaused", "ui_reports"]
    assert "dag_id=ui_reports" in browser.current_url

    # an event (choosing it filters at once), with the DAG filter reset
    browser.find_element(By.ID, "f-reset").click()
    wait(browser, "every entry", lambda d: _shows(d, 25, f"1-25 of {OLD + 3}"))
    Select(browser.find_element(By.ID, "f-event")).select_by_value("trigger")
    wait(browser, "the triggers", lambda d: _shows(d, 1, "1-1 of 1"))

    # an owner, and a date range: three days ago is the command line's day only
    browser.find_element(By.ID, "f-reset").click()
    _set(browser, "f-owner", "op")
    browser.find_element(By.CSS_SELECTOR, "#audit-filters button[type=submit]").click()
    wait(browser, "op's entries", lambda d: _shows(d, 2, "1-2 of 2"))
    browser.find_element(By.ID, "f-reset").click()
    day = browser.execute_script(
        "const d = new Date(arguments[0]); return `${d.getFullYear()}-"
        "${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;",
        OLD_DAY.isoformat())
    _set(browser, "f-from", day)
    _set(browser, "f-to", day)
    browser.find_element(By.CSS_SELECTOR, "#audit-filters button[type=submit]").click()
    wait(browser, "that day's entries", lambda d: _shows(d, 25, f"1-25 of {OLD}"))
    assert {r[4] for r in _rows(browser)} == {"cli:alice cli"}

    # the grid's link: the DAG's own log, its filter filled in
    browser.get(f"{ui.url}/dags/{DAG_ID}/grid")
    wait(browser, "the grid's audit link", lambda d: d.find_elements(By.ID, "dag-audit"))
    browser.find_element(By.ID, "dag-audit").click()
    wait(browser, f"{DAG_ID}'s entries", lambda d: _shows(d, 25, f"1-25 of {OLD + 2}"))
    assert browser.find_element(By.ID, "f-dag").get_attribute("value") == DAG_ID
