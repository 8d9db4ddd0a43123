"""The pools, importErrors and backfills endpoints and Prometheus' /metrics, through a real
uvicorn on PostgreSQL (every answer checked against the served OpenAPI document), and
`squall standalone` serving the API with the admin it created."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from squall.common.db import SessionFactory, session_scope
from squall.common.models import (
    Backfill,
    DagModel,
    DagRun,
    ImportError_,
    Job,
    Pool,
    TaskInstance,
    utcnow,
)
from squall.common.settings import Settings
from squall.common.state import JobState
from squall.sdk.dag import DAG
from tests.support.api import Api, basic, serve
from tests.support.scheduling import Noop, sync_dags
from tests.support.services import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
START = datetime(2024, 1, 1, tzinfo=UTC)

@pytest.fixture
def api(tmp_path: Path, session_factory: SessionFactory) -> Iterator[Api]:
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)},
                             overrides={"api": {"page_size": 2, "maximum_page_limit": 5}})
    with serve(settings, session_factory) as client:
        yield client


def _run_with_tis(factory: SessionFactory, dag_id: str, states: dict[str, tuple[str, str, int]],
                  *, run_state: str = "running", when: datetime = START) -> None:
    """A run of ``dag_id`` with a task instance per ``task_id: (state, pool, slots)``."""
    with session_scope(factory) as session:
        if session.get(DagModel, dag_id) is None:
            session.add(DagModel(dag_id=dag_id, fileloc=f"/dags/{dag_id}.py"))
            session.flush()
        run_id = f"manual__{when.isoformat()}"
        session.add(DagRun(dag_id=dag_id, run_id=run_id, logical_date=when, state=run_state))
        session.flush()
        for task_id, (state, pool, slots) in states.items():
            session.add(TaskInstance(dag_id=dag_id, task_id=task_id, run_id=run_id,
                                     state=state, pool=pool, pool_slots=slots,
                                     queue="q_" + pool,
                                     queued_dttm=utcnow() - timedelta(seconds=90)
                                     if state == "queued" else None))


# --------------------------------------------------------------------------- pools


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.postgres
def test_pools_crud_roles_usage_and_pages(api: Api, session_factory: SessionFactory) -> None:
    # writes need admin
    for user in ("viewer", "op"):
        denied = api.post("/api/v1/pools", user=user, json={"name": "etl", "slots": 3})
        assert denied.status_code == 403 and "needs the admin role" in denied.text
    assert api.post("/api/v1/pools", user=None, json={"name": "x", "slots": 1}
                    ).status_code == 401
    created = api.post("/api/v1/pools", json={"name": "etl", "slots": 3,
                                              "description": "nightly"})
    assert created.status_code == 200, created.text
    assert created.json() == {
        "name": "etl", "slots": 3, "occupied_slots": 0, "running_slots": 0,
        "queued_slots": 0, "scheduled_slots": 0, "open_slots": 3, "deferred_slots": 0,
        "description": "nightly", "include_deferred": False}
    assert api.post("/api/v1/pools", json={"name": "big", "slots": -1}).status_code == 200
    duplicate = api.post("/api/v1/pools", json={"name": "etl", "slots": 1})
    assert duplicate.status_code == 409 and "already exists" in duplicate.json()["detail"]

    # usage, as `squall pools list` counts it, plus the scheduled slots
    _run_with_tis(session_factory, "d", {"a": ("running", "etl", 2), "b": ("queued", "etl", 1),
                                         "c": ("scheduled", "etl", 2),
                                         "e": ("success", "etl", 1),
                                         "f": ("running", "big", 4)})
    etl = api.get("/api/v1/pools/etl", user="viewer").json()
    assert (etl["running_slots"], etl["queued_slots"], etl["scheduled_slots"],
            etl["occupied_slots"], etl["open_slots"]) == (2, 1, 2, 3, 0)
    big = api.get("/api/v1/pools/big", user="viewer").json()
    assert big["open_slots"] == -1 and big["running_slots"] == 4
    assert api.get("/api/v1/pools/nope").status_code == 404

    # pages ([api] page_size 2) and order
    first = api.get("/api/v1/pools", user="viewer").json()
    assert first["total_entries"] == 3
    assert [p["name"] for p in first["pools"]] == ["default_pool", "etl"]
    by_name = api.get("/api/v1/pools?order_by=-name&limit=2&offset=1").json()
    assert [p["name"] for p in by_name["pools"]] == ["default_pool", "big"]
    assert api.get("/api/v1/pools?order_by=nope").status_code == 400
    assert api.get("/api/v1/pools?limit=9").status_code == 400

    # patch: with update_mask only the named fields; without, name and slots are needed
    patched = api.patch("/api/v1/pools/etl?update_mask=slots", json={"slots": 5,
                                                                     "description": "x"})
    assert patched.status_code == 200 and patched.json()["slots"] == 5
    assert patched.json()["description"] == "nightly" and patched.json()["open_slots"] == 2
    assert api.patch("/api/v1/pools/etl", user="op", json={"name": "etl", "slots": 1}
                     ).status_code == 403
    renamed = api.patch("/api/v1/pools/etl", json={"name": "etl2", "slots": 4,
                                                   "description": None})
    assert renamed.status_code == 200 and renamed.json()["description"] is None
    assert api.get("/api/v1/pools/etl").status_code == 404
    taken = api.patch("/api/v1/pools/etl2", json={"name": "big", "slots": 4})
    assert taken.status_code == 409
    for url, body, fragment in (
        ("/api/v1/pools/etl2", {"slots": 4}, "missing required field(s): name"),
        ("/api/v1/pools/etl2?update_mask=pool", {"slots": 4}, "pool cannot be changed"),
        ("/api/v1/pools/etl2?update_mask=slots", {"name": "y"}, "does not give"),
        ("/api/v1/pools/default_pool", {"name": "other", "slots": 4}, "cannot be changed"),
        ("/api/v1/pools/etl2?update_mask=slots", {"slots": -5}, "slots must be 0 or more"),
    ):
        bad = api.patch(url, json=body)
        assert bad.status_code == 400 and fragment in bad.json()["detail"], bad.text
    assert api.patch("/api/v1/pools/nope", json={"name": "nope", "slots": 1}
                     ).status_code == 404

    # delete
    assert api.delete("/api/v1/pools/big", user="op").status_code == 403
    assert api.delete("/api/v1/pools/big").status_code == 204
    assert api.delete("/api/v1/pools/big").status_code == 404
    kept = api.delete("/api/v1/pools/default_pool")
    assert kept.status_code == 400 and "default_pool cannot be deleted" in kept.text
    with session_scope(session_factory) as session:
        assert session.query(Pool).count() == 2


BAD_POOLS: list[tuple[Any, str]] = [
    ({"name": "p", "slots": "3"}, "slots must be an integer"),
    ({"name": "p", "slots": True}, "slots must be an integer"),
    ({"name": "p", "slots": -2}, "slots must be 0 or more"),
    ({"name": " p", "slots": 1}, "whitespace"),
    ({"name": "", "slots": 1}, "non-empty"),
    ({"name": "p"}, "missing required field(s): slots"),
    ({"name": "p", "slots": 1, "colour": "red"}, "unknown field(s): colour"),
    ({"name": "p", "slots": 1, "include_deferred": True}, "never hold a pool slot"),
    ({"name": "p", "slots": 1, "description": 7}, "description must be a string"),
    ([1, 2], "valid dictionary"),
]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.postgres
def test_bad_pools_and_bad_json_are_400s(api: Api) -> None:
    for body, fragment in BAD_POOLS:
        bad = api.post("/api/v1/pools", json=body)
        assert bad.status_code == 400, bad.text
        assert fragment in bad.json()["detail"], (body, bad.text)
    for method in ("POST", "PATCH"):
        url = "/api/v1/pools" + ("/default_pool" if method == "PATCH" else "")
        bad = api.request(method, url, content=b"{nope",
                          headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["title"] == "Bad Request"
    bad = api.post("/api/v1/backfills/1/cancel", user="op", content=b"[",
                   headers={"content-type": "application/json"})
    assert bad.status_code == 400


# --------------------------------------------------------------------------- importErrors


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.postgres
def test_import_errors(api: Api, session_factory: SessionFactory) -> None:
    with session_scope(session_factory) as session:
        for n in (1, 2, 3):
            session.add(ImportError_(filename=f"/dags/broken_{n}.py",
                                     stacktrace=f"SyntaxError {n}",
                                     timestamp=START + timedelta(minutes=n)))
    assert api.get("/api/v1/importErrors", user=None).status_code == 401
    first = api.get("/api/v1/importErrors", user="viewer").json()
    assert first["total_entries"] == 3 and len(first["import_errors"]) == 2
    one = first["import_errors"][0]
    assert one == {"import_error_id": one["import_error_id"],
                   "timestamp": (START + timedelta(minutes=1)).isoformat(),
                   "filename": "/dags/broken_1.py", "stack_trace": "SyntaxError 1"}
    newest = api.get("/api/v1/importErrors?order_by=-timestamp&limit=1").json()
    assert newest["import_errors"][0]["filename"] == "/dags/broken_3.py"
    got = api.get(f"/api/v1/importErrors/{one['import_error_id']}", user="viewer")
    assert got.json() == one
    missing = api.get("/api/v1/importErrors/999")
    assert missing.status_code == 404 and "999" in missing.json()["detail"]
    assert api.get("/api/v1/importErrors/abc").status_code == 400
    assert api.get("/api/v1/importErrors?order_by=stack").status_code == 400


# --------------------------------------------------------------------------- backfills


def _daily_dag() -> DAG:
    with DAG("bf", schedule="@daily", start_date=START, max_active_runs=2) as dag:
        Noop(task_id="a") >> Noop(task_id="b")
    return dag


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.postgres
def test_backfills_create_list_get_cancel(api: Api, session_factory: SessionFactory) -> None:
    sync_dags(session_factory, _daily_dag())
    body = {"dag_id": "bf", "from_date": "2024-01-01", "to_date": "2024-01-03T00:00:00+00:00",
            "dag_run_conf": {"k": 1}, "task_regex": "^a$"}
    assert api.post("/api/v1/backfills", user="viewer", json=body).status_code == 403
    created = api.post("/api/v1/backfills", user="op", json=body)
    assert created.status_code == 200, created.text
    made = created.json()
    assert made["planned_runs"] == [f"backfill__2024-01-0{n}T00:00:00+00:00" for n in (1, 2, 3)]
    assert (made["state"], made["total_runs"], made["max_active_runs"]) == ("queued", 3, 2)
    assert made["options"] == {"task_regex": "^a$"} and made["dag_run_conf"] == {"k": 1}
    assert made["runs_finished"] == 0 and made["runs_by_state"] == {}
    second = api.post("/api/v1/backfills", user="op",
                      json={"dag_id": "bf", "from_date": "2024-02-01",
                            "to_date": "2024-02-01", "run_backwards": True,
                            "max_active_runs": 1})
    assert second.status_code == 200, second.text

    for payload, status, fragment in (
        ({**body, "dag_id": "nope"}, 404, "nope"),
        ({**body, "from_date": "yesterday-ish"}, 400, "from_date"),
        ({**body, "from_date": "2024-01-05"}, 400, "is after the end"),
        ({**body, "task_regex": "zzz"}, 400, "matches no task"),
        ({**body, "task_regex": "("}, 400, "not a regular expression"),
        ({**body, "pool": "nope"}, 400, "pool 'nope' does not exist"),
        ({**body, "ignore_dependencies": True, "task_regex": None}, 400, "needs task_regex"),
        ({**body, "max_active_runs": 0}, 400, "max_active_runs"),
        ({**body, "colour": "red"}, 400, "colour"),
        ({"dag_id": "bf"}, 400, "from_date"),
    ):
        bad = api.post("/api/v1/backfills", user="op", json=payload)
        assert bad.status_code == status and fragment in bad.json()["detail"], bad.text

    listed = api.get("/api/v1/backfills?dag_id=bf", user="viewer").json()
    assert listed["total_entries"] == 2
    assert [b["id"] for b in listed["backfills"]] == [made["id"], second.json()["id"]]
    newest = api.get("/api/v1/backfills?order_by=-id&limit=1").json()
    assert newest["backfills"][0]["run_backwards"] is True
    assert api.get("/api/v1/backfills?dag_id=other").json()["total_entries"] == 0

    # a run the backfill created, one task instance failed: its progress shows it
    with session_scope(session_factory) as session:
        session.add(DagRun(dag_id="bf", run_id="backfill__x", logical_date=START,
                           state="running", backfill_id=made["id"], run_type="backfill"))
        session.flush()
        session.add(TaskInstance(dag_id="bf", task_id="a", run_id="backfill__x",
                                 state="running"))
        session.add(TaskInstance(dag_id="bf", task_id="b", run_id="backfill__x",
                                 state="scheduled"))
    shown = api.get(f"/api/v1/backfills/{made['id']}", user="viewer").json()
    assert shown["runs_by_state"] == {"running": 1}
    assert shown["task_instances_by_state"] == {"running": 1, "scheduled": 1}
    assert api.get("/api/v1/backfills/999").status_code == 404

    url = f"/api/v1/backfills/{made['id']}/cancel"
    assert api.post(url, user="viewer", json={}).status_code == 403
    done = api.post(url, user="op", json={"end_running": True})
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "cancelled" and done.json()["ended_runs"] == ["backfill__x"]
    assert done.json()["task_instances_by_state"] == {"failed": 1, "skipped": 1}
    assert done.json()["failed_runs"] == ["backfill__x"]
    again = api.post(url, user="op")
    assert again.status_code == 409 and "nothing to cancel" in again.json()["detail"]
    plain = api.post(f"/api/v1/backfills/{second.json()['id']}/cancel", user="op")
    assert plain.status_code == 200 and plain.json()["ended_runs"] == []
    assert api.post("/api/v1/backfills/999/cancel", user="op").status_code == 404
    assert api.post(url, user="op", json={"end_running": "maybe"}).status_code == 400
    with session_scope(session_factory) as session:
        assert {b.state for b in session.query(Backfill)} == {"cancelled"}

    # a run the cancelled backfill left unfinished says so, with the command that resumes
    # it, and a new backfill of its range takes it in
    left = "backfill__2024-02-01T00:00:00+00:00"
    with session_scope(session_factory) as session:
        session.add(DagRun(dag_id="bf", run_id=left, logical_date=START + timedelta(days=31),
                           state="running", backfill_id=second.json()["id"],
                           run_type="backfill"))
        session.flush()
        session.add(TaskInstance(dag_id="bf", task_id="a", run_id=left, state="none"))
    resume = ("squall dags backfill bf -s 2024-02-01T00:00:00+00:00 -e "
              "2024-02-01T00:00:00+00:00 -B --max-active-runs 1")
    ended = api.get(f"/api/v1/backfills/{second.json()['id']}").json()
    assert (ended["unfinished_runs"], ended["resume_command"]) == ([left], resume)
    assert ended["range_runs_by_state"] == {"running": 1}
    note = (f"backfill {second.json()['id']} ended (cancelled) with this run unfinished and "
            f"no backfill follows it; resume with: {resume}")
    def ui(path: str) -> Any:  # the UI's own endpoints, not in the OpenAPI document
        response = api.client.get(path, headers=basic("viewer"))
        assert response.status_code == 200, response.text
        return response.json()

    grid = ui("/ui/api/dags/bf/grid")
    assert [r["note"] for r in grid["runs"] if r["run_id"] == left] == [note]
    assert ui(f"/ui/api/dags/bf/runs/{left}/tasks/a")["run_note"] == note
    page = ui("/ui/api/backfills")["backfills"]
    assert [b["resume_command"] for b in page] == [resume, None]
    resumed = api.post("/api/v1/backfills", user="op",
                       json={"dag_id": "bf", "from_date": "2024-02-01",
                             "to_date": "2024-02-01"})
    assert resumed.status_code == 200, resumed.text
    assert (resumed.json()["taken_in"], resumed.json()["total_runs"]) == ([left], 1)
    assert api.get(f"/api/v1/backfills/{second.json()['id']}").json()[
        "resume_command"] is None

    # every date of the range already has a run: nothing to backfill
    with session_scope(session_factory) as session:
        session.add(DagRun(dag_id="bf", run_id="manual_m", logical_date=START + timedelta(
            days=40), state="success"))
    nothing = api.post("/api/v1/backfills", user="op",
                       json={"dag_id": "bf", "from_date": "2024-02-10",
                             "to_date": "2024-02-10"})
    assert nothing.status_code == 409, nothing.text


# --------------------------------------------------------------------------- /metrics


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.postgres
def test_metrics_are_scraped_without_credentials(api: Api,
                                                 session_factory: SessionFactory) -> None:
    first = api.client.get("/metrics")
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/plain")
    samples = _samples(first.text)
    assert samples[("squall_metadatabase_up", ())] == 1
    assert samples[("squall_oldest_queued_try_seconds", ())] == 0
    assert ("squall_scheduler_heartbeat_age_seconds", ()) not in samples

    with session_scope(session_factory) as session:
        session.add(Pool(pool="etl", slots=4))
        session.add(Pool(pool="big", slots=-1))
        session.add(Job(job_type="SchedulerJob", state=JobState.RUNNING.value,
                        latest_heartbeat=utcnow() - timedelta(seconds=30)))
    _run_with_tis(session_factory, "d", {"a": ("running", "etl", 2), "b": ("queued", "etl", 1),
                                         "c": ("scheduled", "etl", 1),
                                         "e": ("success", "big", 1)})
    _run_with_tis(session_factory, "d", {"a": ("queued", "etl", 1)}, run_state="success",
                  when=START + timedelta(days=1))
    samples = _samples(api.client.get("/metrics").text)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("squall_task_instances", state="queued", queue="q_etl") == 2
    assert value("squall_task_instances", state="running", queue="q_etl") == 1
    assert value("squall_task_instances", state="success", queue="q_big") == 1
    assert value("squall_queue_backlog", queue="q_etl") == 3
    assert value("squall_queue_backlog", queue="q_big") == 0
    assert value("squall_dag_runs", state="running") == 1
    assert value("squall_dag_runs", state="success") == 1
    assert value("squall_pool_slots", pool="etl", kind="total") == 4
    assert value("squall_pool_slots", pool="etl", kind="running") == 2
    assert value("squall_pool_slots", pool="etl", kind="queued") == 2
    assert value("squall_pool_slots", pool="etl", kind="open") == 0
    assert value("squall_pool_slots", pool="etl", kind="scheduled") == 1
    assert value("squall_pool_slots", pool="big", kind="total") == float("inf")
    assert value("squall_pool_slots", pool="default_pool", kind="open") == 128
    assert 29 <= value("squall_scheduler_heartbeat_age_seconds") < 60
    assert 89 <= value("squall_oldest_queued_try_seconds") < 120
    served = api.client.get("/api/v1/openapi.json").json()["paths"]["/metrics"]["get"]
    assert "text/plain" in served["responses"]["200"]["content"]
    # the documented names are the served ones
    doc = (REPO_ROOT / "docs" / "metrics.md").read_text()
    names = {s.name for f in text_string_to_metric_families(api.client.get("/metrics").text)
             for s in f.samples}
    assert names and all(f"`{n}`" in doc for n in names), names
# --------------------------------------------------------------------------- standalone


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_standalone_serves_the_api_with_the_admin_it_created(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    env.update({"SQUALL_HOME": str(home), "PYTHONPATH": str(REPO_ROOT),
                "SQUALL__API__PORT": str(port),
                "SQUALL__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port())})
    log_path = tmp_path / "standalone.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "squall", "standalone", "--no-examples"],
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_until(lambda: b"Press Ctrl-C" in log_path.read_bytes() or proc.poll() is not None,
                   60, message="standalone to start")
        assert proc.poll() is None, log_path.read_text()
        banner = log_path.read_text()
        assert f"http://127.0.0.1:{port}/" in banner, banner
        found = re.search(r"username: (\S+)\s+password: (\S+)", banner)
        assert found is not None, banner
        username, password = found.groups()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            health = client.get("/api/v1/health")
            assert health.status_code == 200
            assert health.json()["metadatabase"] == {"status": "healthy"}
            version = client.get("/api/v1/version", headers=basic(username, password))
            assert version.status_code == 200, version.text
            assert client.get("/api/v1/pools", headers=basic(username, password + "x")
                              ).status_code == 401
            created = client.post("/api/v1/pools", headers=basic(username, password),
                                  json={"name": "admin_can", "slots": 1})
            assert created.status_code == 200, created.text
        saved = home / "standalone_admin_password.txt"
        assert saved.read_text().strip() == password
        assert oct(saved.stat().st_mode & 0o777) == "0o600"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log_path.read_text()
