"""The variables, connections, DAG details and code pages in a real headless Chromium: an op
adds, edits (a secret kept when its field is left as shown) and deletes a variable and a
connection through the dialogs, with a confirmation before each delete; sensitive values
show as ``***`` and passwords never reach the page; a viewer sees the lists with no edit
controls; a DAG's Details and Code tabs show its definition and its file.

Screenshots: ui-variables.png, ui-connection-edit.png, ui-connections.png,
ui-variables-viewer.png, ui-dag-details.png, ui-dag-code.png."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from squall.common.db import session_scope
from squall.secrets import connection_store, variables
from squall.secrets.fernet import FernetCodec
from tests.browser.config_dag import DETAILS_DAG, SOURCE, add_details_dag
from tests.browser.conftest import Ui
from tests.browser.test_ui import login, screenshot, wait
from tests.browser.test_ui_actions import call

pytestmark = [pytest.mark.browser, pytest.mark.postgres,
              pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]


def fill(browser: WebDriver, field_id: str, text: str) -> None:
    field = browser.find_element(By.ID, field_id)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)  # as a user does: the page hears an input event
    if text:
        field.send_keys(text)


def rows(browser: WebDriver, tbody: str) -> dict[str, str]:
    """The rows of a list by their first cell's text: the row's text."""
    found: dict[str, str] = browser.execute_script(  # one read: the list re-renders
        "const out = {};"
        "for (const tr of document.querySelectorAll(`#${arguments[0]} tr`)) {"
        "  const cells = tr.querySelectorAll('td');"
        "  if (cells.length > 1) out[cells[0].innerText] = tr.innerText; }"
        "return out;", tbody)
    return found


def row_button(browser: WebDriver, tbody: str, name: str, kind: str) -> None:
    browser.find_element(By.CSS_SELECTOR,
                         f'#{tbody} button.{kind}[data-name="{name}"]').click()


def confirm_delete(browser: WebDriver, what: str) -> None:
    wait(browser, "the confirmation", lambda d: d.find_element(By.ID, "confirm-dialog")
         .is_displayed())
    assert what in browser.find_element(By.ID, "confirm-title").text
    browser.find_element(By.ID, "confirm-ok").click()


def stored_variable(ui: Ui, key: str) -> str | None:
    with session_scope(ui.factory) as session:
        record = variables.read_variable(session, FernetCodec(""), key)
    return None if record is None else record.value


def test_op_adds_edits_and_deletes_variables(ui: Ui, browser: WebDriver, artifacts: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    call(ui, "POST", "/ui/api/variables", body={"key": "region", "value": "eu-west-1",
                                                "description": "where jobs run"})
    login(browser, ui, "op")
    browser.get(ui.url + "/variables")
    wait(browser, "the variables list", lambda d: "region" in rows(d, "var-rows"))

    browser.find_element(By.ID, "var-add").click()
    fill(browser, "var-key", "db_password")
    fill(browser, "var-value", "hunter2")
    fill(browser, "var-description", "the warehouse's password")
    browser.find_element(By.ID, "var-save").click()
    wait(browser, "the new variable", lambda d: "db_password" in rows(d, "var-rows"))
    listed = rows(browser, "var-rows")
    assert "***" in listed["db_password"] and "hunter2" not in browser.page_source
    assert "eu-west-1" in listed["region"]
    screenshot(browser, artifacts, "ui-variables.png", capsys)

    # edit the secret one: the form shows ***, left as is it keeps the value
    row_button(browser, "var-rows", "db_password", "edit")
    wait(browser, "the edit dialog", lambda d: d.find_element(By.ID, "var-dialog").is_displayed())
    assert browser.find_element(By.ID, "var-value").get_attribute("value") == "***"
    assert browser.find_element(By.ID, "var-key").get_attribute("readonly") is not None
    fill(browser, "var-description", "rotated monthly")
    browser.find_element(By.ID, "var-save").click()
    wait(browser, "the new description",
         lambda d: "rotated monthly" in rows(d, "var-rows").get("db_password", ""))
    assert stored_variable(ui, "db_password") == "hunter2"

    row_button(browser, "var-rows", "region", "edit")
    wait(browser, "the edit dialog", lambda d: d.find_element(By.ID, "var-dialog").is_displayed())
    fill(browser, "var-value", "us-east-2")
    browser.find_element(By.ID, "var-save").click()
    wait(browser, "the new value", lambda d: "us-east-2" in rows(d, "var-rows")["region"])

    # a bad key is refused by the server, and said so in the dialog
    browser.find_element(By.ID, "var-add").click()
    fill(browser, "var-key", "region")
    fill(browser, "var-value", "x")
    browser.find_element(By.ID, "var-save").click()
    wait(browser, "the error",
         lambda d: "already exists" in d.find_element(By.ID, "var-error").text)
    browser.find_element(By.ID, "var-cancel").click()

    fill(browser, "var-search", "rotated")
    wait(browser, "the search", lambda d: list(rows(d, "var-rows")) == ["db_password"])
    fill(browser, "var-search", "")
    wait(browser, "both rows", lambda d: len(rows(d, "var-rows")) == 2)

    row_button(browser, "var-rows", "region", "delete")
    confirm_delete(browser, "variable region")
    wait(browser, "the row to go", lambda d: "region" not in rows(d, "var-rows"))
    assert stored_variable(ui, "region") is None


def test_op_adds_edits_and_deletes_a_connection(ui: Ui, browser: WebDriver, artifacts: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    call(ui, "POST", "/ui/api/connections", body={
        "connection_id": "slack_alerts", "conn_type": "http", "host": "hooks.slack.com",
        "password": "xoxb-never-shown", "description": "alerts channel"})
    login(browser, ui, "op")
    browser.get(ui.url + "/connections")
    wait(browser, "the connections list", lambda d: "slack_alerts" in rows(d, "conn-rows"))

    browser.find_element(By.ID, "conn-add").click()
    for field, text in (("conn-id", "warehouse"), ("conn-type", "postgres"),
                        ("conn-host", "db.internal"), ("conn-port", "5432"),
                        ("conn-login", "etl"), ("conn-password", "s3cr3t-pw"),
                        ("conn-schema", "dw"),
                        ("conn-extra", '{"api_key": "k-123", "sslmode": "require"}')):
        fill(browser, field, text)
    browser.find_element(By.ID, "conn-save").click()
    wait(browser, "the new connection", lambda d: "warehouse" in rows(d, "conn-rows"))
    assert "db.internal" in rows(browser, "conn-rows")["warehouse"]

    row_button(browser, "conn-rows", "warehouse", "edit")
    wait(browser, "the edit dialog",
         lambda d: d.find_element(By.ID, "conn-dialog").is_displayed())
    assert browser.find_element(By.ID, "conn-password").get_attribute("value") == ""
    extra = json.loads(browser.find_element(By.ID, "conn-extra").get_attribute("value") or "")
    assert extra == {"api_key": "***", "sslmode": "require"}
    for secret in ("s3cr3t-pw", "k-123", "xoxb-never-shown"):
        assert secret not in browser.page_source
    fill(browser, "conn-host", "db2.internal")
    screenshot(browser, artifacts, "ui-connection-edit.png", capsys)
    browser.find_element(By.ID, "conn-save").click()
    wait(browser, "the new host", lambda d: "db2.internal" in rows(d, "conn-rows")["warehouse"])
    with session_scope(ui.factory) as session:
        stored = connection_store.read_connection(session, FernetCodec(""), "warehouse")
    assert stored is not None and stored.password == "s3cr3t-pw"
    assert json.loads(stored.extra or "") == {"api_key": "k-123", "sslmode": "require"}
    screenshot(browser, artifacts, "ui-connections.png", capsys)

    row_button(browser, "conn-rows", "slack_alerts", "delete")
    confirm_delete(browser, "connection slack_alerts")
    wait(browser, "the row to go", lambda d: "slack_alerts" not in rows(d, "conn-rows"))
    with session_scope(ui.factory) as session:
        assert connection_store.read_connection(session, FernetCodec(""), "slack_alerts") \
            is None


def test_a_viewer_sees_masked_lists_without_edit_controls(
        ui: Ui, browser: WebDriver, artifacts: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    call(ui, "POST", "/ui/api/variables", body={"key": "api_token", "value": "tok-123"})
    call(ui, "POST", "/ui/api/variables", body={"key": "batch_size", "value": "500"})
    call(ui, "POST", "/ui/api/connections", body={"connection_id": "warehouse",
                                                  "conn_type": "postgres", "password": "pw"})
    login(browser, ui, "viewer")
    browser.find_element(By.LINK_TEXT, "Variables").click()
    wait(browser, "the variables list", lambda d: len(rows(d, "var-rows")) == 2)
    listed = rows(browser, "var-rows")
    assert "***" in listed["api_token"] and "500" in listed["batch_size"]
    assert "tok-123" not in browser.page_source
    assert not browser.find_elements(By.CSS_SELECTOR, "#var-add, #var-dialog, button.edit, "
                                                      "button.delete")
    screenshot(browser, artifacts, "ui-variables-viewer.png", capsys)
    browser.find_element(By.LINK_TEXT, "Connections").click()
    wait(browser, "the connections list", lambda d: "warehouse" in rows(d, "conn-rows"))
    assert not browser.find_elements(By.CSS_SELECTOR, "#conn-add, #conn-dialog, button.edit, "
                                                      "button.delete")


def test_dag_details_and_code_tabs(ui: Ui, browser: WebDriver, artifacts: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = add_details_dag(ui.factory, tmp_path)
    login(browser, ui, "viewer")
    wait(browser, "the DAG in the list", lambda d: d.find_elements(
        By.CSS_SELECTOR, f'tr[data-dag-id="{DETAILS_DAG}"] a.details-link'))
    browser.find_element(By.CSS_SELECTOR,
                         f'tr[data-dag-id="{DETAILS_DAG}"] a.details-link').click()
    wait(browser, "the details", lambda d: d.find_elements(By.CSS_SELECTOR,
                                                           'tr[data-fact="schedule"]'))

    def fact(key: str) -> str:
        return str(browser.find_element(By.CSS_SELECTOR, f'tr[data-fact="{key}"] td').text)

    assert fact("schedule") == "0 6 * * 1-5"
    assert fact("timetable") not in ("", "—")
    assert fact("owners") == "data-team" and fact("tags") == "load, nightly"
    assert (fact("catchup"), fact("max-runs"), fact("max-tasks")) == ("no", "2", "5")
    assert fact("paused") == "no" and fact("fileloc") == str(path)
    assert fact("start-date").startswith("2024-03-0")  # in the browser's timezone
    params = browser.find_element(By.ID, "dag-params").text
    assert "batch" in params and "500" in params and "Rows per batch" in params
    assert "warehouse" in params
    doc = browser.find_element(By.ID, "dag-doc")
    assert "<script>window.__docRan = 1</script>" in doc.text  # shown as text, not run
    assert browser.execute_script("return window.__docRan === undefined;")
    tab = browser.find_element(By.CSS_SELECTOR, "#dag-tabs a.active")
    assert tab.text == "Details"
    screenshot(browser, artifacts, "ui-dag-details.png", capsys)

    browser.find_element(By.LINK_TEXT, "Code").click()
    wait(browser, "the code", lambda d: d.find_elements(By.CSS_SELECTOR, "#dag-code tr"))
    lines = browser.find_elements(By.CSS_SELECTOR, "#dag-code tr")
    assert len(lines) == len(SOURCE.splitlines())
    assert [c.text for c in lines[4].find_elements(By.TAG_NAME, "td")] == [
        "5", "    pass  # the marker line: <b>not bold</b>"]
    assert str(path) in browser.find_element(By.ID, "code-file").text
    screenshot(browser, artifacts, "ui-dag-code.png", capsys)

    browser.find_element(By.LINK_TEXT, "Grid").click()
    wait(browser, "the grid", lambda d: d.find_elements(By.CSS_SELECTOR, "table.grid th.task"))
    browser.get(ui.url + "/dags/no_such_dag/details")
    assert "DAG not found" in browser.find_element(By.ID, "not-found").text
