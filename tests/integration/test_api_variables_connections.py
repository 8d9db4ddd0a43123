"""The variables, connections and SLA misses endpoints through a real uvicorn on PostgreSQL
(every answer checked against the served OpenAPI document): Airflow 2's shapes, the roles
(viewer reads, op writes), masked secrets (a sensitive variable's value, a connection's
extra; never a password), encryption at rest, and what squall variables / connections see."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from squall.common.db import SessionFactory, session_scope
from squall.common.models import ConnectionModel, DagModel, SlaMiss, VariableModel
from squall.common.settings import Settings
from squall.secrets import connection_store, variables
from squall.secrets.fernet import FernetCodec, generate_fernet_key
from tests.support.api import Api, serve

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgres"],
                                                           indirect=True)]

KEY = generate_fernet_key()


@pytest.fixture
def api(tmp_path: Path, session_factory: SessionFactory) -> Iterator[Api]:
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)}, overrides={
        "api": {"page_size": 2, "maximum_page_limit": 5}, "core": {"fernet_key": KEY}})
    with serve(settings, session_factory) as client:
        yield client


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def test_variables_crud_pages_and_masking(api: Api, session_factory: SessionFactory) -> None:
    assert _ok(api.get("/api/v1/variables")) == {"variables": [], "total_entries": 0}
    created = _ok(api.post("/api/v1/variables", user="op",
                           json={"key": "region", "value": "eu-west-1",
                                 "description": "where"}))
    assert created == {"key": "region", "value": "eu-west-1", "description": "where"}
    _ok(api.post("/api/v1/variables", user="op",
                 json={"key": "db_password", "value": "hunter2"}))
    _ok(api.post("/api/v1/variables", user="op", json={"key": "config", "value": '{"a": 1}'}))

    # the sensitive one is masked everywhere the API shows it
    assert _ok(api.get("/api/v1/variables/db_password"))["value"] == "***"
    page = _ok(api.get("/api/v1/variables", params={"order_by": "key"}))
    assert page["total_entries"] == 3
    assert [v["key"] for v in page["variables"]] == ["config", "db_password"]  # page_size 2
    assert page["variables"][1]["value"] == "***"
    rest = _ok(api.get("/api/v1/variables", params={"order_by": "-key", "offset": 2}))
    assert [v["key"] for v in rest["variables"]] == ["config"]
    assert "hunter2" not in api.get("/api/v1/variables", params={"limit": 5}).text

    # stored encrypted; read back by squall's own code as given
    with session_scope(session_factory) as session:
        row = session.scalars(select(VariableModel).where(
            VariableModel.key == "db_password")).one()
        assert row.is_encrypted and "hunter2" not in (row.val or "")
        record = variables.read_variable(session, FernetCodec(KEY), "db_password")
        assert record is not None and record.value == "hunter2"

    conflict = api.post("/api/v1/variables", user="op", json={"key": "region", "value": "x"})
    assert conflict.status_code == 409 and "already exists" in conflict.json()["detail"]
    assert api.post("/api/v1/variables", user="op", json={"key": "k"}).status_code == 400
    bad = api.post("/api/v1/variables", user="op", json={"key": "k", "value": "v", "x": 1})
    assert bad.status_code == 400 and "unknown field(s): x" in bad.json()["detail"]
    assert api.post("/api/v1/variables", user="op",
                    json={"key": "k", "value": 3}).status_code == 400

    # patch: the whole variable, or the fields of update_mask
    patched = _ok(api.patch("/api/v1/variables/region", user="op",
                            json={"key": "region", "value": "us-east-1"}))
    assert patched == {"key": "region", "value": "us-east-1", "description": "where"}
    patched = _ok(api.patch("/api/v1/variables/region", user="op",
                            params={"update_mask": "description"},
                            json={"description": "the region", "value": "ignored"}))
    assert patched == {"key": "region", "value": "us-east-1", "description": "the region"}
    # a sensitive variable sent back as read keeps its value
    shown = _ok(api.get("/api/v1/variables/db_password"))
    _ok(api.patch("/api/v1/variables/db_password", user="op",
                  json={**shown, "description": "the db"}))
    with session_scope(session_factory) as session:
        record = variables.read_variable(session, FernetCodec(KEY), "db_password")
        assert record is not None and (record.value, record.description) == ("hunter2",
                                                                             "the db")
    renamed = api.patch("/api/v1/variables/region", user="op", json={"key": "r", "value": "x"})
    assert renamed.status_code == 400 and "cannot be renamed" in renamed.json()["detail"]
    assert api.patch("/api/v1/variables/nope", user="op",
                     json={"key": "nope", "value": "x"}).status_code == 404

    # roles: a viewer reads but may not write; an op may
    denied = api.post("/api/v1/variables", user="viewer", json={"key": "v", "value": "1"})
    assert denied.status_code == 403
    assert api.delete("/api/v1/variables/region", user="viewer").status_code == 403
    assert api.delete("/api/v1/variables/region", user="op").status_code == 204
    missing = api.get("/api/v1/variables/region", user="viewer")
    assert missing.status_code == 404 and "region" in missing.json()["detail"]
    assert api.delete("/api/v1/variables/region", user="op").status_code == 404


def test_connections_crud_never_answer_the_password(api: Api,
                                                    session_factory: SessionFactory) -> None:
    body = {"connection_id": "warehouse", "conn_type": "postgres", "host": "db.internal",
            "login": "etl", "password": "s3cret!", "schema": "dwh", "port": 5432,
            "description": "the warehouse",
            "extra": json.dumps({"sslmode": "require", "api_key": "k-123",
                                 "nested": {"token": "t-456"}})}
    created = _ok(api.post("/api/v1/connections", user="op", json=body))
    assert "password" not in created
    assert created["connection_id"] == "warehouse" and created["schema"] == "dwh"
    assert json.loads(created["extra"]) == {"sslmode": "require", "api_key": "***",
                                            "nested": {"token": "***"}}
    got = api.get("/api/v1/connections/warehouse", user="viewer")
    for secret in ("s3cret!", "k-123", "t-456"):
        assert secret not in got.text
    assert _ok(got)["port"] == 5432

    _ok(api.post("/api/v1/connections", user="op",
                 json={"connection_id": "http_default", "conn_type": "http"}))
    _ok(api.post("/api/v1/connections", user="op",
                 json={"connection_id": "aws", "conn_type": "aws"}))
    listed = _ok(api.get("/api/v1/connections", params={"order_by": "connection_id"}))
    assert listed["total_entries"] == 3
    assert [c["connection_id"] for c in listed["connections"]] == ["aws", "http_default"]
    assert all("password" not in c and "extra" not in c for c in listed["connections"])

    # stored encrypted, usable by tasks as given
    with session_scope(session_factory) as session:
        row = session.scalars(select(ConnectionModel).where(
            ConnectionModel.conn_id == "warehouse")).one()
        assert row.is_encrypted and "s3cret!" not in (row.password or "")
        conn = connection_store.read_connection(session, FernetCodec(KEY), "warehouse")
        assert conn is not None and conn.password == "s3cret!"

    # patch with update_mask keeps the rest, the password included
    patched = _ok(api.patch("/api/v1/connections/warehouse", user="op",
                            params={"update_mask": "host,port"},
                            json={"host": "db2.internal", "port": 6432}))
    assert (patched["host"], patched["port"], patched["login"]) == ("db2.internal", 6432, "etl")
    # a whole body without a password keeps the old one
    whole = {k: v for k, v in body.items() if k != "password"}
    _ok(api.patch("/api/v1/connections/warehouse", user="op", json={**whole, "host": "db3"}))
    with session_scope(session_factory) as session:
        conn = connection_store.read_connection(session, FernetCodec(KEY), "warehouse")
        assert conn is not None and (conn.host, conn.password) == ("db3", "s3cret!")

    # the extra sent back as read (masked): the secrets are kept, the change is made
    shown = json.loads(_ok(api.get("/api/v1/connections/warehouse"))["extra"])
    shown["sslmode"] = "disable"
    _ok(api.patch("/api/v1/connections/warehouse", user="op",
                  params={"update_mask": "extra"}, json={"extra": json.dumps(shown)}))
    with session_scope(session_factory) as session:
        conn = connection_store.read_connection(session, FernetCodec(KEY), "warehouse")
        assert conn is not None and conn.extra_dejson == {
            "sslmode": "disable", "api_key": "k-123", "nested": {"token": "t-456"}}

    assert api.post("/api/v1/connections", user="op", json=body).status_code == 409
    for bad_body, fragment in (({"connection_id": "x"}, "missing required field(s): conn_type"),
                               ({"connection_id": "bad id!?", "conn_type": "http"}, "conn_id"),
                               ({"connection_id": "x", "conn_type": "http", "extra": "[1]"},
                                "JSON object"),
                               ({"connection_id": "x", "conn_type": "http", "port": "p"},
                                "port")):
        bad = api.post("/api/v1/connections", user="op", json=bad_body)
        assert bad.status_code == 400 and fragment in bad.json()["detail"], bad.text
    masked = api.patch("/api/v1/connections/warehouse", user="op",
                       params={"update_mask": "connection_id"}, json={"connection_id": "y"})
    assert masked.status_code == 400

    assert api.post("/api/v1/connections", user="viewer",
                    json={"connection_id": "v", "conn_type": "http"}).status_code == 403
    assert api.delete("/api/v1/connections/aws", user="viewer").status_code == 403
    assert api.delete("/api/v1/connections/aws", user="op").status_code == 204
    assert api.get("/api/v1/connections/aws").status_code == 404
    assert api.delete("/api/v1/connections/aws", user="op").status_code == 404


def test_sla_misses_of_a_dag(api: Api, session_factory: SessionFactory) -> None:
    day = datetime(2024, 1, 1, tzinfo=UTC)
    with session_scope(session_factory) as session:
        for dag_id in ("a", "b"):
            session.add(DagModel(dag_id=dag_id, fileloc=f"/dags/{dag_id}.py"))
        session.flush()
        for n, (dag_id, task_id) in enumerate((("a", "t1"), ("a", "t2"), ("a", "t1"),
                                               ("b", "t"))):
            when = day + timedelta(hours=n)
            session.add(SlaMiss(dag_id=dag_id, task_id=task_id, execution_date=when,
                                run_id=f"scheduled__{when.isoformat()}",
                                deadline=when + timedelta(hours=1, minutes=5),
                                timestamp=when + timedelta(hours=2), email_sent=n == 0,
                                notification_sent=True, description="late"))
    page = _ok(api.get("/api/v1/dags/a/slaMisses", user="viewer"))
    assert page["total_entries"] == 3
    assert [(m["task_id"], m["execution_date"]) for m in page["sla_misses"]] == [
        ("t1", (day + timedelta(hours=2)).isoformat()),
        ("t2", (day + timedelta(hours=1)).isoformat())]  # latest first, page_size 2
    first = _ok(api.get("/api/v1/dags/a/slaMisses", params={"order_by": "execution_date",
                                                             "limit": 1}))["sla_misses"][0]
    assert first == {"dag_id": "a", "task_id": "t1", "run_id": f"scheduled__{day.isoformat()}",
                     "execution_date": day.isoformat(),
                     "deadline": (day + timedelta(hours=1, minutes=5)).isoformat(),
                     "timestamp": (day + timedelta(hours=2)).isoformat(),
                     "notification_sent": True, "email_sent": True, "description": "late"}
    assert _ok(api.get("/api/v1/dags/~/slaMisses", params={"limit": 5}))["total_entries"] == 4
    assert _ok(api.get("/api/v1/dags/b/slaMisses"))["sla_misses"][0]["task_id"] == "t"
    assert api.get("/api/v1/dags/nope/slaMisses").status_code == 404
    assert api.get("/api/v1/dags/a/slaMisses", params={"order_by": "x"}).status_code == 400
    assert api.get("/api/v1/dags/a/slaMisses", user=None).status_code == 401
