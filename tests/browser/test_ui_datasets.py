"""Datasets in the web UI, in a real headless Chromium (Selenium) on PostgreSQL: the datasets
page (linked from the nav) shows each dataset with its producers (dag.task) and consumers
(DAGs, the ones it is queued for marked), and its recent events with their source run,
extra and the runs they created; a consumer DAG's grid shows what its schedule waits for,
each dataset queued or waiting, and both pages turn without a reload when an event comes
in through the REST API. The dataset rows are written as the DAG processor and the
scheduler write them (tests/support/datasets.py).

Screenshots of the datasets page and of a consumer's grid are saved under
``$SQUALL_TEST_ARTIFACTS`` (or the test's tmp_path) and their paths printed."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from tests.browser.conftest import Ui
from tests.browser.test_ui import login, screenshot, wait
from tests.support.datasets import CLEAN, RAW, REPORT, UNUSED, build_world

pytestmark = [pytest.mark.browser, pytest.mark.postgres,
              pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]


def card(browser: WebDriver, uri: str) -> WebElement:
    return browser.find_element(By.CSS_SELECTOR, f'section.dataset[data-uri="{uri}"]')


def texts(parent: WebElement, selector: str) -> list[str]:
    return [e.text for e in parent.find_elements(By.CSS_SELECTOR, selector)]


def leaf(browser: WebDriver, uri: str) -> WebElement:
    return browser.find_element(By.CSS_SELECTOR, f'#waiting-for li.wait-leaf[data-uri="{uri}"]')


def test_datasets_page_and_what_a_consumer_waits_for(
        ui: Ui, browser: WebDriver, artifacts: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    world = build_world(ui.factory)
    login(browser, ui, "viewer")
    browser.find_element(By.LINK_TEXT, "Datasets").click()
    wait(browser, "the dataset cards", lambda d: len(d.find_elements(
        By.CSS_SELECTOR, "section.dataset")) == 3)
    # an orphaned dataset (no DAG file names it any more) is hidden unless asked for, as
    # Airflow 2.10's datasets view hides it (www/views.py datasets_summary)
    assert [c.get_attribute("data-uri") for c in browser.find_elements(
        By.CSS_SELECTOR, "section.dataset")] == sorted([RAW, CLEAN, REPORT])
    browser.find_element(By.ID, "show-orphaned").click()
    wait(browser, "the orphaned dataset", lambda d: len(d.find_elements(
        By.CSS_SELECTOR, "section.dataset")) == 4)
    assert "orphaned" in card(browser, UNUSED).find_element(By.CSS_SELECTOR,
                                                            ".orphaned-badge").text

    raw = card(browser, RAW)
    assert texts(raw, "li.producer") == ["ingest.extract"]
    assert texts(raw, "li.consumer a") == ["report_all", "report_any"]
    assert texts(raw, ".queued-badge") == []  # report_all's run took RAW's event
    [raw_event] = raw.find_elements(By.CSS_SELECTOR, "tr.event")
    assert raw_event.get_attribute("data-event-id") == str(world.raw_event)
    assert "ingest.extract in run manual__1" in raw_event.text
    assert '{"rows":10}' in raw_event.text
    assert f"report_all / {world.run_id}" in raw_event.text
    clean = card(browser, CLEAN)
    # by_alias consumes CLEAN through the alias its event resolved; both are queued
    assert texts(clean, "li.consumer a") == ["by_alias", "report_all"]
    assert len(clean.find_elements(By.CSS_SELECTOR, ".queued-badge")) == 2
    assert "alias lake-clean" in clean.text
    assert '{"format":"parquet"}' in clean.text
    assert "No events yet." in card(browser, REPORT).text
    unused = card(browser, UNUSED)
    assert texts(unused, "li.producer") == [] and "none" in unused.text
    screenshot(browser, artifacts, "ui-datasets.png", capsys)

    search = browser.find_element(By.ID, "dataset-filter")
    search.send_keys("clean")
    wait(browser, "the filter", lambda d: len(d.find_elements(
        By.CSS_SELECTOR, "section.dataset")) == 1)
    assert browser.find_element(By.ID, "dataset-count").text == "1 of 4"
    browser.find_element(By.ID, "show-orphaned").click()

    # a consumer's grid: RAW & CLEAN, CLEAN queued, RAW awaited
    card(browser, CLEAN).find_element(By.LINK_TEXT, "report_all").click()
    wait(browser, "what report_all waits for", lambda d: d.find_element(
        By.ID, "waiting-for").is_displayed())
    box = browser.find_element(By.ID, "waiting-for")
    assert box.find_element(By.CSS_SELECTOR, "li.wait-node").get_attribute(
        "data-kind") == "all"
    assert leaf(browser, CLEAN).get_attribute("data-queued") == "true"
    assert "queued" in leaf(browser, CLEAN).text
    assert leaf(browser, RAW).get_attribute("data-queued") == "false"
    assert "waiting" in leaf(browser, RAW).text
    assert box.get_attribute("data-satisfied") == "false"
    assert "a run starts when the condition holds" in box.text

    # an event from outside queues RAW: the grid turns without a reload
    made = ui.api.post("/api/v1/datasets/events", user="op",
                       json={"dataset_uri": RAW, "extra": {"batch": 8}})
    assert made.status_code == 200, made.text
    # (one look-up per poll: the box is redrawn when what it shows changes)
    wait(browser, "RAW to be queued", lambda d: d.find_elements(
        By.CSS_SELECTOR, f'#waiting-for li.wait-leaf[data-uri="{RAW}"][data-queued="true"]'))
    wait(browser, "the condition to hold", lambda d: d.find_element(
        By.ID, "waiting-for").get_attribute("data-satisfied") == "true")
    assert "a run is due" in browser.find_element(By.ID, "waiting-summary").text
    screenshot(browser, artifacts, "ui-dataset-consumer-grid.png", capsys)

    # an alias: what it resolved to
    browser.get(f"{ui.url}/dags/by_alias/grid")
    wait(browser, "what by_alias waits for", lambda d: d.find_elements(
        By.CSS_SELECTOR, '#waiting-for li.wait-node[data-alias="lake-clean"]'))
    assert leaf(browser, CLEAN).get_attribute("data-queued") == "true"
    # a DAG with no dataset schedule shows nothing of the kind
    browser.get(f"{ui.url}/dags/ui_etl/grid")
    wait(browser, "the grid", lambda d: d.find_elements(By.CSS_SELECTOR, "td.cell"))
    assert not browser.find_element(By.ID, "waiting-for").is_displayed()

    # the datasets page has the new event, from the REST API, and RAW queued for report_all
    browser.get(f"{ui.url}/datasets")
    wait(browser, "the external event", lambda d: len(d.find_elements(
        By.CSS_SELECTOR, f'section.dataset[data-uri="{RAW}"] tr.event')) == 2)
    newest = card(browser, RAW).find_elements(By.CSS_SELECTOR, "tr.event")[0]
    assert "external (REST API)" in newest.text and '"batch":8' in newest.text
    assert texts(card(browser, RAW), ".queued-badge") == ["queued"]
