"""The grid page's timing views and header in a real headless Chromium (issue 26): run bars
as tall as each run's duration with the run type marked (backfill, manual), a run's Gantt
chart, a task's duration chart in its panel, the time zone switch, the wide unwrapped log
panel, an unknown DAG's message, and a pause switch that means the same on both pages.
Plus the shape of the ``/ui/api`` data behind them (over HTTP).

Screenshots are saved under ``$SQUALL_TEST_ARTIFACTS`` (or the test's tmp_path)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select
from sqlalchemy import select, update

from squall.common.db import session_scope
from squall.common.models import DagRun, TaskInstance, TaskInstanceKey
from squall.execution.runner import task_log_path
from tests.browser.conftest import DAG_ID, Ui
from tests.browser.test_ui import cell, cell_state, login, screenshot, wait
from tests.browser.test_ui_mapped import MAPPED_DAG, seed_mapped
from tests.support.api import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.postgres,
              pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]

T0 = datetime(2024, 3, 5, 12, 0, tzinfo=UTC)
#: each run's duration (oldest first) and type
RUN_SECONDS = (60, 180, 600)
RUN_TYPES = ("backfill", "manual", "scheduled")
OVERFLOWS = "return arguments[0].scrollWidth > arguments[0].clientWidth;"
LONG_LINE = "x" * 30 + " a log line far wider than the panel " + "y" * 600


def _timed_runs(ui: Ui) -> list[str]:
    """Give the three runs durations and types, and the newest run's task instances
    queued / start / end times (transform ran twice, the longest)."""
    with session_scope(ui.factory) as session:
        runs = list(session.scalars(select(DagRun.run_id).where(DagRun.dag_id == DAG_ID)
                                    .order_by(DagRun.logical_date)))
        for run_id, seconds, run_type in zip(runs, RUN_SECONDS, RUN_TYPES, strict=True):
            session.execute(update(DagRun).where(DagRun.run_id == run_id).values(
                run_type=run_type, start_date=T0, end_date=T0 + timedelta(seconds=seconds)))
        for task_id, queued, start, end, tries in (("extract", 0, 2, 12, 1),
                                                   ("transform", 13, 15, 315, 2),
                                                   ("report", 3, 5, 20, 1)):
            session.execute(update(TaskInstance).where(
                TaskInstance.run_id == ui.failed_run, TaskInstance.task_id == task_id).values(
                queued_dttm=T0 + timedelta(seconds=queued),
                start_date=T0 + timedelta(seconds=start), end_date=T0 + timedelta(seconds=end),
                duration=float(end - start), try_number=tries))
        session.execute(update(TaskInstance).where(  # upstream failed: never queued nor run
            TaskInstance.run_id == ui.failed_run, TaskInstance.task_id == "load").values(
            queued_dttm=None, start_date=None, end_date=None, duration=None))
    return runs


def _bar(browser: WebDriver, run_id: str) -> tuple[float, str, list[str]]:
    """A run bar's height, its header's tooltip and the run type icons in it."""
    bar = browser.find_element(By.CSS_SELECTOR, f'.run-bar[data-run-id="{run_id}"]')
    icons = [i.get_attribute("data-run-type") or "" for i in
             bar.find_elements(By.CSS_SELECTOR, "svg.run-type")]
    head = bar.find_element(By.XPATH, "..")
    return bar.size["height"], head.get_attribute("title") or "", icons


def _row_text(browser: WebDriver) -> str:
    """The DAG's row on the list (read in the page: the list redraws its rows)."""
    return str(browser.execute_script(
        "return document.querySelector(arguments[0])?.innerText || '';",
        f'tr[data-dag-id="{DAG_ID}"]'))


def test_run_bars_show_durations_and_run_types_and_the_zone_switch_applies(
        ui: Ui, browser: WebDriver, artifacts: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    runs = _timed_runs(ui)
    login(browser, ui, "op")
    # the pause switch is on for an active DAG on the list, as on the grid (Airflow's)
    active = browser.find_element(By.CSS_SELECTOR, f'input.pause-switch[data-dag-id="{DAG_ID}"]')
    paused = browser.find_element(By.CSS_SELECTOR, 'input.pause-switch[data-dag-id="ui_reports"]')
    assert active.is_selected() and not paused.is_selected()
    assert active.get_attribute("title") == "Pause/Unpause DAG"
    for dag_id, on in (("ui_reports", False), (DAG_ID, True)):
        browser.get(f"{ui.url}/dags/{dag_id}/grid")
        wait(browser, f"{dag_id}'s grid", lambda d: d.find_elements(By.CSS_SELECTOR, "tr.runs"))
        toggle = browser.find_element(By.ID, "pause-toggle")
        wait(browser, "the switch to follow the DAG",
             lambda d, t=toggle, o=on: t.is_selected() == o)
        assert "Pause/Unpause DAG" in (toggle.find_element(By.XPATH, "..").get_attribute("title")
                                       or "")

    wait(browser, "the bars' heights", lambda d: _bar(d, runs[2])[0] > _bar(d, runs[1])[0])
    (short, _, short_icons), (middle, _, manual_icons), (longest, tip, plain_icons) = (
        _bar(browser, r) for r in runs)
    # as tall as the run's duration relative to the longest (with a floor for a short one)
    assert short < middle < longest, (short, middle, longest)
    assert abs(middle / longest - RUN_SECONDS[1] / RUN_SECONDS[2]) < 0.05, (middle, longest)
    assert "duration 10m 0s" in tip and "Scheduled run" in tip, tip
    assert "started 2024-03-05 12:00:00 UTC" in tip and "ended 2024-03-05 12:10:00 UTC" in tip
    assert (short_icons, manual_icons, plain_icons) == (["backfill"], ["manual"], [])
    assert "Backfill run" in _bar(browser, runs[0])[1]
    cell(browser, "extract", runs[0]).click()
    wait(browser, "the run type in the panel",
         lambda d: "Backfill" in d.find_element(By.ID, "ti-facts").text)
    screenshot(browser, artifacts, "grid-durations.png", capsys)

    # the time zone switch: UTC by default; the browser's zone when picked, remembered
    schedule = browser.find_element(By.ID, "dag-schedule")
    assert "next run 2024-03-04 00:00:00 UTC" in schedule.text, schedule.text
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kolkata"})
    try:
        browser.refresh()
        wait(browser, "the grid", lambda d: d.find_elements(By.CSS_SELECTOR, ".run-bar"))
        zone = Select(browser.find_element(By.ID, "tz-select"))
        assert zone.first_selected_option.text == "UTC"
        zone.select_by_value("local")
        wait(browser, "times in the browser's zone", lambda d: (
            "next run 2024-03-04 05:30:00 GMT+5:30" in d.find_element(By.ID, "dag-schedule").text))
        assert "started 2024-03-05 17:30:00 GMT+5:30" in _bar(browser, runs[2])[1]
        cell(browser, "extract", runs[2]).click()
        wait(browser, "the panel's times in the zone",
             lambda d: "2024-03-05 17:30:02 GMT+5:30" in d.find_element(By.ID, "ti-facts").text)
        screenshot(browser, artifacts, "grid-timezone.png", capsys)
        browser.get(ui.url + "/")
        wait(browser, "the list's next run in the zone",
             lambda d: "2024-03-04 05:30:00 GMT+5:30" in _row_text(d))
        Select(browser.find_element(By.ID, "tz-select")).select_by_value("UTC")
        wait(browser, "the list back in UTC", lambda d: "2024-03-04 00:00:00 UTC" in _row_text(d))
    finally:
        browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": ""})


def test_gantt_duration_chart_and_a_wide_unwrapped_log(
        ui: Ui, browser: WebDriver, artifacts: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    runs = _timed_runs(ui)
    path = task_log_path(ui.log_folder, TaskInstanceKey(DAG_ID, "transform", ui.failed_run), 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"[2024-03-05 12:00:15] INFO - try 2\n{LONG_LINE}\n")
    login(browser, ui, "viewer")
    browser.get(f"{ui.url}/dags/{DAG_ID}/grid")
    wait(browser, "the grid", lambda d: cell_state(d, "transform", ui.failed_run) == "failed")

    browser.find_element(By.ID, "tab-gantt").click()
    wait(browser, "the Gantt bars",
         lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gantt .gantt-bar")) == 3)
    assert browser.find_element(By.ID, "gantt").get_attribute("data-run-id") == ui.failed_run
    bars = {b.get_attribute("data-task-id"): b for b in
            browser.find_elements(By.CSS_SELECTOR, "#gantt .gantt-bar")}
    assert set(bars) == {"extract", "transform", "report"}  # load never started
    assert bars["transform"].get_attribute("data-state") == "failed"
    widths = {t: float(b.get_attribute("width") or 0) for t, b in bars.items()}
    assert widths["transform"] > 10 * widths["extract"], widths  # 300 s against 10 s
    xs = {t: float(b.get_attribute("x") or 0) for t, b in bars.items()}
    assert xs["extract"] < xs["report"] < xs["transform"], xs  # by start time
    assert len(browser.find_elements(By.CSS_SELECTOR, "#gantt .gantt-queued")) == 3
    assert "try 2" in browser.find_element(By.ID, "gantt").text
    assert not browser.find_element(By.ID, "grid").is_displayed()
    screenshot(browser, artifacts, "grid-gantt.png", capsys)
    # another run from the list: the scheduled/backfill ones have no timed task instances
    Select(browser.find_element(By.ID, "gantt-run")).select_by_value(runs[0])
    wait(browser, "the other run's chart", lambda d: d.find_element(
        By.ID, "gantt").get_attribute("data-run-id") == runs[0])

    # a Gantt row opens the task's panel: its duration over the last runs, and its log
    Select(browser.find_element(By.ID, "gantt-run")).select_by_value(ui.failed_run)
    wait(browser, "the run's chart again", lambda d: d.find_element(
        By.ID, "gantt").get_attribute("data-run-id") == ui.failed_run)
    browser.find_element(
        By.CSS_SELECTOR, '#gantt .gantt-row[data-task-id="transform"] .gantt-bar').click()
    wait(browser, "the duration chart", lambda d: len(d.find_elements(
        By.CSS_SELECTOR, "#ti-duration-chart .duration-bar")) == 3)
    seconds = [b.get_attribute("data-seconds") for b in
               browser.find_elements(By.CSS_SELECTOR, "#ti-duration-chart .duration-bar")]
    assert seconds == ["7", "7", "300"], seconds
    heights = [float(r.get_attribute("height") or 0) for r in
               browser.find_elements(By.CSS_SELECTOR, "#ti-duration-chart .duration-ran")]
    assert heights[2] > 20 * heights[0], heights
    current = browser.find_element(By.CSS_SELECTOR, "#ti-duration-chart .duration-bar.current")
    assert current.get_attribute("data-run-id") == ui.failed_run

    log = browser.find_element(By.ID, "ti-log")
    wait(browser, "try 2's log", lambda d: "a log line far wider" in log.text)
    panel = browser.find_element(By.ID, "ti-panel")
    assert panel.size["width"] >= 600, panel.size  # half of the page, not 460 px
    assert log.value_of_css_property("white-space") == "pre"
    assert browser.execute_script(OVERFLOWS, log)
    browser.execute_script("arguments[0].scrollIntoView({block: 'end'});", log)
    screenshot(browser, artifacts, "grid-task-panel.png", capsys)
    browser.find_element(By.ID, "log-wrap").click()
    assert log.value_of_css_property("white-space") == "pre-wrap"
    assert not browser.execute_script(OVERFLOWS, log)
    browser.find_element(By.ID, "panel-wide").click()
    wait(browser, "the full-width panel", lambda d: panel.size["width"] > 1200)
    assert not browser.find_element(By.ID, "gantt-view").is_displayed()


def test_an_unknown_dag_says_so(ui: Ui, browser: WebDriver) -> None:
    login(browser, ui, "viewer")
    browser.get(f"{ui.url}/dags/no_such_dag/grid")
    wait(browser, "the not-found message",
         lambda d: d.find_element(By.ID, "grid-missing").is_displayed())
    assert "DAG no_such_dag not found" in browser.find_element(By.ID, "grid-missing").text
    assert "Loading" not in browser.find_element(By.ID, "grid").text


def test_the_timing_data_s_shape_and_404s(ui: Ui) -> None:
    runs = _timed_runs(ui)
    with httpx.Client(base_url=ui.url, timeout=30, auth=("viewer", PASSWORD)) as client:
        grid = client.get(f"/ui/api/dags/{DAG_ID}/grid").json()
        assert [r["run_type"] for r in grid["runs"]] == list(RUN_TYPES)
        assert grid["runs"][2]["end_date"] == (T0 + timedelta(seconds=600)).isoformat()
        gantt = client.get(f"/ui/api/dags/{DAG_ID}/runs/{ui.failed_run}/gantt")
        assert gantt.status_code == 200
        body = gantt.json()
        assert body["run_type"] == "scheduled" and body["state"] == "failed"
        assert [t["task_id"] for t in body["task_instances"]] == [
            "extract", "transform", "load", "report"]
        transform = body["task_instances"][1]
        assert transform == {
            "task_id": "transform", "map_index": -1, "state": "failed", "try_number": 2,
            "queued_dttm": (T0 + timedelta(seconds=13)).isoformat(),
            "start_date": (T0 + timedelta(seconds=15)).isoformat(),
            "end_date": (T0 + timedelta(seconds=315)).isoformat(), "duration": 300.0}
        durations = client.get(f"/ui/api/dags/{DAG_ID}/tasks/transform/durations",
                               params={"runs": 2})
        assert durations.status_code == 200
        got = durations.json()["runs"]
        assert [r["run_id"] for r in got] == runs[1:]
        assert got[1]["duration"] == 300.0 and got[1]["queued_duration"] == 2.0
        assert got[1]["state"] == "failed" and got[1]["try_number"] == 2
        assert got[0]["run_type"] == "manual" and got[0]["duration"] == 7.0
        ti = client.get(f"/ui/api/dags/{DAG_ID}/runs/{runs[0]}/tasks/extract").json()
        assert ti["run_type"] == "backfill"
        for url in ("/ui/api/dags/no_such_dag/grid",
                    f"/ui/api/dags/no_such_dag/runs/{ui.failed_run}/gantt",
                    f"/ui/api/dags/{DAG_ID}/runs/no_such_run/gantt",
                    "/ui/api/dags/no_such_dag/tasks/transform/durations",
                    f"/ui/api/dags/{DAG_ID}/tasks/no_such_task/durations"):
            missing = client.get(url)
            assert missing.status_code == 404, url
            assert "not found" in missing.json()["detail"], url
        page = client.get(f"/dags/{DAG_ID}/grid")
        assert 'data-default-tz="UTC"' in page.text and 'id="tz-select"' in page.text



def test_a_mapped_task_s_durations_span_its_instances(ui: Ui) -> None:
    run_id = seed_mapped(ui)
    url = f"/ui/api/dags/{MAPPED_DAG}/tasks/fan/durations"
    with httpx.Client(base_url=ui.url, timeout=30, auth=("viewer", PASSWORD)) as client:
        gantt = client.get(f"/ui/api/dags/{MAPPED_DAG}/runs/{run_id}/gantt").json()
        assert [(t["task_id"], t["map_index"]) for t in gantt["task_instances"]] == [
            ("start", -1)] + [("fan", i) for i in range(5)]
        running = client.get(url).json()["runs"]
        # two instances still run: the task is running (Airflow's priority), not ended
        assert [(r["state"], r["count"], r["end_date"], r["duration"]) for r in running] == [
            ("running", 5, None, None)]
        with session_scope(ui.factory) as session:
            first = session.get_one(TaskInstance, (MAPPED_DAG, "fan", run_id, 0))
            assert first.start_date is not None
            session.execute(update(TaskInstance).where(
                TaskInstance.run_id == run_id, TaskInstance.task_id == "fan").values(
                state="success", end_date=first.start_date + timedelta(seconds=5)))
            session.execute(update(TaskInstance).where(
                TaskInstance.run_id == run_id, TaskInstance.task_id == "fan",
                TaskInstance.map_index == 4).values(
                end_date=first.start_date + timedelta(seconds=42)))
        done = client.get(url).json()["runs"]
        # from the first instance's start to the last one's end
        assert [(r["state"], r["duration"]) for r in done] == [("success", 42.0)]
