"""The variables, connections, DAG details and code endpoints of the web UI (``/ui/api``)
without a browser: their shapes, masking (no password, no sensitive value or extra ever
answered), bad input as 400 problems with clear messages, roles (a viewer reads and is
refused changes), CSRF, and the audit entries every change writes (never with a secret)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from squall.common.db import session_scope
from squall.common.models import AuditLog, ConnectionModel
from squall.secrets import connection_store, variables
from squall.secrets.fernet import FernetCodec
from tests.browser.config_dag import DETAILS_DAG, DOC_MD, SOURCE, add_details_dag
from tests.browser.conftest import Ui
from tests.support.api import PASSWORD, basic

pytestmark = [pytest.mark.browser, pytest.mark.postgres,
              pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]

SECRETS = ("hunter2", "s3cr3t-pw", "tok-123")


def call(ui: Ui, method: str, path: str, user: str = "op",
         body: Any = None) -> httpx.Response:
    return ui.api.client.request(method, path, json=body, headers=basic(user))


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def audit_rows(ui: Ui) -> list[tuple[str, str | None, dict[str, Any]]]:
    with session_scope(ui.factory) as session:
        rows = session.execute(select(AuditLog.event, AuditLog.owner, AuditLog.extra)
                               .order_by(AuditLog.id)).all()
    return [(e, o, json.loads(x) if x else {}) for e, o, x in rows]


def test_variables_list_create_edit_delete_masked_and_audited(ui: Ui) -> None:
    assert ok(call(ui, "GET", "/ui/api/variables", user="viewer")) == {
        "variables": [], "total_entries": 0, "may_edit": False}
    made = ok(call(ui, "POST", "/ui/api/variables",
                   body={"key": "db_password", "value": "hunter2", "description": "main db"}))
    assert made == {"key": "db_password", "value": "***", "description": "main db"}
    ok(call(ui, "POST", "/ui/api/variables", body={"key": "region", "value": "eu-west-1"}))
    listing = ok(call(ui, "GET", "/ui/api/variables", user="viewer"))
    assert listing["variables"] == [
        {"key": "db_password", "value": "***", "description": "main db", "is_encrypted": False},
        {"key": "region", "value": "eu-west-1", "description": None, "is_encrypted": False}]
    assert ok(call(ui, "GET", "/ui/api/variables?search=MAIN"))["total_entries"] == 1
    assert ok(call(ui, "GET", "/ui/api/variables?search=nothing"))["variables"] == []
    assert ok(call(ui, "GET", "/ui/api/variables"))["may_edit"] is True

    # the edit form sends back *** for the secret: the stored value stays
    ok(call(ui, "PATCH", "/ui/api/variables/db_password",
            body={"value": "***", "description": "primary db"}))
    ok(call(ui, "PATCH", "/ui/api/variables/region", body={"value": "us-east-2"}))
    got = ok(call(ui, "GET", "/api/v1/variables/region"))
    assert got["value"] == "us-east-2"

    with session_scope(ui.factory) as session:
        secret = variables.read_variable(session, FernetCodec(""), "db_password")
    assert secret is not None and secret.value == "hunter2"
    assert secret.description == "primary db"
    assert call(ui, "DELETE", "/ui/api/variables/region").json() == {"deleted": "region"}
    assert call(ui, "DELETE", "/ui/api/variables/region").status_code == 404

    rows = audit_rows(ui)
    assert [(e, o, x) for e, o, x in rows] == [
        ("variable.edit", "op", {"source": "ui", "key": "db_password"}),
        ("variable.edit", "op", {"source": "ui", "key": "region"}),
        ("variable.edit", "op", {"source": "ui", "key": "db_password"}),
        ("variable.edit", "op", {"source": "ui", "key": "region"}),
        ("variable.delete", "op", {"source": "ui", "key": "region"})]
    assert not any(s in json.dumps(rows) for s in SECRETS)


def test_variable_input_errors_are_clear(ui: Ui) -> None:
    ok(call(ui, "POST", "/ui/api/variables", body={"key": "k", "value": "v"}))
    for body, status, says in (
            ({"value": "v"}, 400, "missing required field(s): key"),
            ({"key": "", "value": "v"}, 400, "a non-empty string is needed"),
            ({"key": "x", "value": 3}, 400, "value must be a string"),
            ({"key": "x", "value": "v", "colour": "red"}, 400, "unknown field(s): colour"),
            ({"key": "k", "value": "v"}, 409, "Variable k already exists"),
            ([1, 2], 400, "Input should be a valid dictionary")):
        refused = call(ui, "POST", "/ui/api/variables", body=body)
        assert refused.status_code == status, (body, refused.text)
        assert says in refused.text
    renamed = call(ui, "PATCH", "/ui/api/variables/k", body={"key": "other", "value": "v"})
    assert renamed.status_code == 400 and "cannot be renamed" in renamed.json()["detail"]
    assert call(ui, "PATCH", "/ui/api/variables/nope", body={"value": "v"}).status_code == 404
    assert [e for e, _, _ in audit_rows(ui)] == ["variable.edit"]  # refusals leave no entry


def test_connections_never_send_a_password_and_keep_it_on_edit(ui: Ui) -> None:
    extra = json.dumps({"token": "tok-123", "region": "eu"})
    made = ok(call(ui, "POST", "/ui/api/connections", body={
        "connection_id": "warehouse", "conn_type": "postgres", "host": "db.internal",
        "port": 5432, "login": "etl", "password": "s3cr3t-pw", "schema": "dw",
        "extra": extra}))
    assert "password" not in made and json.loads(made["extra"]) == {"token": "***",
                                                                    "region": "eu"}
    listing = ok(call(ui, "GET", "/ui/api/connections", user="viewer"))
    assert listing["may_edit"] is False
    (row,) = listing["connections"]
    assert row == {"connection_id": "warehouse", "conn_type": "postgres", "description": None,
                   "host": "db.internal", "login": "etl", "schema": "dw", "port": 5432,
                   "extra": json.dumps({"token": "***", "region": "eu"}),
                   "has_password": True}
    assert not any(s in json.dumps(listing) for s in SECRETS)
    assert ok(call(ui, "GET", "/ui/api/connections?search=DB.INT"))["total_entries"] == 1
    assert ok(call(ui, "GET", "/ui/api/connections?search=mysql"))["total_entries"] == 0

    # the edit form sends what it showed, an empty password and the masked extra back
    ok(call(ui, "PATCH", "/ui/api/connections/warehouse", body={
        **{k: row[k] for k in ("connection_id", "conn_type", "login", "schema", "extra")},
        "host": "db2.internal", "port": 6432, "password": "", "description": "moved"}))
    with session_scope(ui.factory) as session:
        stored = connection_store.read_connection(session, FernetCodec(""), "warehouse")
    assert stored is not None and stored.password == "s3cr3t-pw"
    assert json.loads(stored.extra or "{}") == {"token": "tok-123", "region": "eu"}
    assert (stored.host, stored.port, stored.description) == ("db2.internal", 6432, "moved")
    ok(call(ui, "PATCH", "/ui/api/connections/warehouse", body={
        "conn_type": "postgres", "password": "new-pw"}))
    with session_scope(ui.factory) as session:
        stored = connection_store.read_connection(session, FernetCodec(""), "warehouse")
    assert stored is not None and stored.password == "new-pw" and stored.host is None

    for body, status, says in (
            ({"conn_type": "http"}, 400, "missing required field(s): connection_id"),
            ({"connection_id": "bad;id", "conn_type": "http"}, 400, "conn_id"),
            ({"connection_id": "c", "conn_type": "http", "port": "abc"}, 400, "port"),
            ({"connection_id": "c", "conn_type": "http", "extra": "{not json"}, 400, "extra"),
            ({"connection_id": "warehouse", "conn_type": "http"}, 409, "already exist"),
            ("text", 400, "Input should be a valid dictionary")):
        refused = call(ui, "POST", "/ui/api/connections", body=body)
        assert refused.status_code == status, (body, refused.text)
        assert says in refused.text
    assert call(ui, "DELETE", "/ui/api/connections/warehouse").json() == {"deleted": "warehouse"}
    assert call(ui, "DELETE", "/ui/api/connections/warehouse").status_code == 404
    with session_scope(ui.factory) as session:
        assert session.scalar(select(ConnectionModel.id)) is None

    rows = audit_rows(ui)
    assert [(e, o, x) for e, o, x in rows] == [
        ("connection.edit", "op", {"source": "ui", "conn_id": "warehouse"}),
        ("connection.edit", "op", {"source": "ui", "conn_id": "warehouse"}),
        ("connection.edit", "op", {"source": "ui", "conn_id": "warehouse"}),
        ("connection.delete", "op", {"source": "ui", "conn_id": "warehouse"})]
    assert not any(s in json.dumps(rows) for s in (*SECRETS, "new-pw"))


def test_a_viewer_is_refused_every_change(ui: Ui) -> None:
    ok(call(ui, "POST", "/ui/api/variables", body={"key": "k", "value": "v"}))
    ok(call(ui, "POST", "/ui/api/connections", body={"connection_id": "c", "conn_type": "http"}))
    for method, path, body in (
            ("POST", "/ui/api/variables", {"key": "x", "value": "v"}),
            ("PATCH", "/ui/api/variables/k", {"value": "changed"}),
            ("DELETE", "/ui/api/variables/k", None),
            ("POST", "/ui/api/connections", {"connection_id": "x", "conn_type": "http"}),
            ("PATCH", "/ui/api/connections/c", {"conn_type": "ftp"}),
            ("DELETE", "/ui/api/connections/c", None)):
        refused = call(ui, method, path, user="viewer", body=body)
        assert refused.status_code == 403, (method, path, refused.text)
    assert ok(call(ui, "GET", "/api/v1/variables/k"))["value"] == "v"
    assert ok(call(ui, "GET", "/api/v1/connections/c"))["conn_type"] == "http"
    assert len(audit_rows(ui)) == 2


def test_changes_made_with_the_session_cookie_need_the_csrf_token(ui: Ui) -> None:
    with httpx.Client(base_url=ui.url, timeout=30) as client:
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
        assert token
        client.post("/login", data={"username": "op", "password": PASSWORD,
                                    "csrf_token": token.group(1)})
        csrf = re.search(r'name="csrf-token" content="([0-9a-f]+)"',
                         client.get("/variables").text)
        assert csrf
        for method, path, body in (
                ("POST", "/ui/api/variables", {"key": "k", "value": "v"}),
                ("POST", "/ui/api/connections", {"connection_id": "c", "conn_type": "http"})):
            assert client.request(method, path, json=body).status_code == 403
            done = client.request(method, path, json=body,
                                  headers={"X-CSRF-Token": csrf.group(1)})
            assert done.status_code == 200, done.text
        assert client.delete("/ui/api/variables/k").status_code == 403
        assert client.delete("/ui/api/variables/k",
                             headers={"X-CSRF-Token": csrf.group(1)}).status_code == 200


def test_the_rest_api_audits_its_changes_too(ui: Ui) -> None:
    api = ui.api
    assert api.post("/api/v1/variables", user="op",
                    json={"key": "api_token", "value": "tok-123"}).status_code == 200
    assert api.patch("/api/v1/variables/api_token", user="op",
                     json={"key": "api_token", "value": "hunter2"}).status_code == 200
    assert api.delete("/api/v1/variables/api_token", user="op").status_code == 204
    assert api.post("/api/v1/connections", user="admin", json={
        "connection_id": "c", "conn_type": "http", "password": "s3cr3t-pw"}).status_code == 200
    assert api.patch("/api/v1/connections/c", user="op",
                     json={"conn_type": "https"}).status_code == 200
    assert api.delete("/api/v1/connections/c", user="op").status_code == 204
    rows = audit_rows(ui)
    assert rows == [
        ("variable.edit", "op", {"source": "api", "key": "api_token"}),
        ("variable.edit", "op", {"source": "api", "key": "api_token"}),
        ("variable.delete", "op", {"source": "api", "key": "api_token"}),
        ("connection.edit", "admin", {"source": "api", "conn_id": "c"}),
        ("connection.edit", "op", {"source": "api", "conn_id": "c"}),
        ("connection.delete", "op", {"source": "api", "conn_id": "c"})]
    assert not any(s in json.dumps(rows) for s in SECRETS)


def test_dag_details_and_code(ui: Ui, tmp_path: Path) -> None:
    path = add_details_dag(ui.factory, tmp_path)
    d = ok(call(ui, "GET", f"/ui/api/dags/{DETAILS_DAG}/details", user="viewer"))
    assert d["schedule"] == "0 6 * * 1-5"
    assert d["timetable_description"]
    assert d["owners"] == ["data-team"] and [t["name"] for t in d["tags"]] == ["load", "nightly"]
    assert (d["catchup"], d["max_active_runs"], d["max_active_tasks"]) == (False, 2, 5)
    assert d["doc_md"] == DOC_MD and d["description"] == "Loads the nightly export"
    assert d["fileloc"] == str(path) and d["start_date"].startswith("2024-03-01")
    assert d["param_list"] == [
        {"name": "batch", "default": 500, "description": "Rows per batch",
         "schema": {"type": "integer"}},
        {"name": "target", "default": "warehouse", "description": None, "schema": {}}]
    assert d["dataset_schedule"] is None and d["is_paused"] is False
    code = ok(call(ui, "GET", f"/ui/api/dags/{DETAILS_DAG}/code", user="viewer"))
    assert code == {"dag_id": DETAILS_DAG, "fileloc": str(path), "source": SOURCE,
                    "lines": len(SOURCE.splitlines())}
    assert call(ui, "GET", "/ui/api/dags/nope/details").status_code == 404
    assert call(ui, "GET", "/ui/api/dags/nope/code").status_code == 404
    path.unlink()
    gone = call(ui, "GET", f"/ui/api/dags/{DETAILS_DAG}/code")
    assert gone.status_code == 404 and "cannot be read by the API server" in gone.text
    page = ui.api.client.get("/dags/nope/details", headers=basic("viewer"))
    assert page.status_code == 404 and "DAG not found" in page.text
    page = ui.api.client.get(f"/dags/{DETAILS_DAG}/code", headers=basic("viewer"))
    assert page.status_code == 200 and 'href="/dags/ui_details/details"' in page.text
