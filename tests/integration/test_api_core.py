"""The REST API's foundations on a real PostgreSQL: authentication and roles, Airflow's
problem bodies for bad requests, pagination, health and version, the DAG endpoints; every
answer checked against the served OpenAPI document (tests/support/api.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from squall.common.db import SessionFactory, session_scope
from squall.common.models import DagModel, Job, utcnow
from squall.common.settings import Settings
from squall.common.state import JobState
from tests.support.api import PASSWORD, Api, basic, serve

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgres"],
                                                           indirect=True)]


@pytest.fixture
def api(tmp_path: Path, session_factory: SessionFactory) -> Iterator[Api]:
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)},
                             overrides={"api": {"page_size": 2, "maximum_page_limit": 5}})
    with session_scope(session_factory) as session:
        for n, paused in ((1, False), (2, True), (3, False)):
            session.add(DagModel(dag_id=f"dag_{n}", fileloc=f"/dags/dag_{n}.py",
                                 is_paused=paused, tags=["etl"] if n != 2 else ["ml"],
                                 schedule="@daily", max_active_tasks=16))
    with serve(settings, session_factory) as client:
        yield client


def test_health_needs_no_credentials_and_reports_the_scheduler(
        api: Api, session_factory: SessionFactory) -> None:
    body = api.get("/api/v1/health", user=None).json()
    assert body == {"metadatabase": {"status": "healthy"},
                    "scheduler": {"status": "unhealthy", "latest_scheduler_heartbeat": None},
                    "triggerer": {"status": None, "latest_triggerer_heartbeat": None},
                    "dag_processor": {"status": None, "latest_dag_processor_heartbeat": None}}
    beat = utcnow() - timedelta(seconds=2)
    with session_scope(session_factory) as session:
        session.add(Job(job_type="SchedulerJob", state=JobState.RUNNING.value,
                        latest_heartbeat=beat))
    body = api.get("/api/v1/health", user=None).json()
    assert body["scheduler"] == {"status": "healthy",
                                 "latest_scheduler_heartbeat": beat.isoformat()}


def test_health_reports_the_most_recent_triggerer(
        api: Api, session_factory: SessionFactory) -> None:
    """Airflow's ``get_airflow_health``: ``null`` when no triggerer job ever ran, else the
    most recent one (running first) healthy when alive within ``[triggerer]
    triggerer_health_check_threshold`` (30 s)."""
    stale = utcnow() - timedelta(seconds=40)
    with session_scope(session_factory) as session:
        session.add(Job(job_type="TriggererJob", state=JobState.RUNNING.value,
                        latest_heartbeat=stale))
    body = api.get("/api/v1/health", user=None).json()
    assert body["triggerer"] == {"status": "unhealthy",
                                 "latest_triggerer_heartbeat": stale.isoformat()}
    fresh = utcnow() - timedelta(seconds=1)
    with session_scope(session_factory) as session:
        session.add(Job(job_type="TriggererJob", state=JobState.SUCCESS.value,
                        latest_heartbeat=fresh))  # ended: the running one comes first
        session.add(Job(job_type="TriggererJob", state=JobState.RUNNING.value,
                        latest_heartbeat=fresh - timedelta(seconds=1)))
    body = api.get("/api/v1/health", user=None).json()
    assert body["triggerer"] == {
        "status": "healthy",
        "latest_triggerer_heartbeat": (fresh - timedelta(seconds=1)).isoformat()}


def test_credentials_are_required_and_checked(api: Api) -> None:
    missing = api.get("/api/v1/version", user=None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Basic")
    assert missing.json()["title"] == "Unauthorized"
    wrong = api.get("/api/v1/version", user=None, headers=basic("admin", "nope-nope"))
    assert wrong.status_code == 401 and "invalid username or password" in wrong.text
    unknown = api.get("/api/v1/version", user=None, headers=basic("ghost", PASSWORD))
    assert unknown.status_code == 401
    garbled = api.get("/api/v1/version", user=None, headers={"Authorization": "Basic !!"})
    assert garbled.status_code == 401 and "malformed" in garbled.text
    ok = api.get("/api/v1/version", user="viewer")
    assert ok.status_code == 200 and ok.json()["git_version"] is None


def test_list_dags_pages_filters_and_orders(api: Api) -> None:
    first = api.get("/api/v1/dags", user="viewer").json()  # [api] page_size 2
    assert first["total_entries"] == 3
    assert [d["dag_id"] for d in first["dags"]] == ["dag_1", "dag_2"]
    second = api.get("/api/v1/dags?limit=2&offset=2", user="viewer").json()
    assert [d["dag_id"] for d in second["dags"]] == ["dag_3"]
    desc = api.get("/api/v1/dags?order_by=-dag_id&limit=5").json()
    assert [d["dag_id"] for d in desc["dags"]] == ["dag_3", "dag_2", "dag_1"]
    paused = api.get("/api/v1/dags?paused=true").json()
    assert [d["dag_id"] for d in paused["dags"]] == ["dag_2"]
    tagged = api.get("/api/v1/dags?tags=etl&limit=5").json()
    assert [d["dag_id"] for d in tagged["dags"]] == ["dag_1", "dag_3"]
    assert tagged["dags"][0]["tags"] == [{"name": "etl"}]
    assert tagged["dags"][0]["schedule_interval"] == {"__type": "CronExpression",
                                                      "value": "@daily"}
    pattern = api.get("/api/v1/dags?dag_id_pattern=_3").json()
    assert [d["dag_id"] for d in pattern["dags"]] == ["dag_3"]


@pytest.mark.parametrize("url, fragment", [
    ("/api/v1/dags?limit=6", "over the maximum of 5"),
    ("/api/v1/dags?limit=0", "limit"),
    ("/api/v1/dags?offset=-1", "offset"),
    ("/api/v1/dags?limit=abc", "limit"),
    ("/api/v1/dags?order_by=nope", "order_by 'nope' is not one of"),
    ("/api/v1/dags?paused=maybe", "paused"),
    ("/api/v1/dags?offset=9999999999999999999", "offset"),
    ("/api/v1/dags/a%00b", "NUL characters"),
    ("/api/v1/dags?dag_id_pattern=a%00", "NUL characters"),
])
def test_bad_queries_are_400_problems(api: Api, url: str, fragment: str) -> None:
    response = api.get(url)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status"] == 400 and body["title"] == "Bad Request"
    assert fragment in body["detail"]
    assert response.headers["content-type"] == "application/problem+json"


def test_get_a_dag_and_an_unknown_one(api: Api) -> None:
    assert api.get("/api/v1/dags/dag_1", user="viewer").json()["is_paused"] is False
    missing = api.get("/api/v1/dags/nope")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "DAG with dag_id: 'nope' not found"


def test_pausing_needs_the_op_role(api: Api) -> None:
    denied = api.patch("/api/v1/dags/dag_1", user="viewer", json={"is_paused": True})
    assert denied.status_code == 403 and "needs the op role" in denied.json()["detail"]
    done = api.patch("/api/v1/dags/dag_1", user="op", json={"is_paused": True})
    assert done.status_code == 200 and done.json()["is_paused"] is True
    assert api.get("/api/v1/dags/dag_1").json()["is_paused"] is True
    for body, fragment in (({"is_paused": "yes"}, "is_paused must be given as true or false"),
                           ({"fileloc": "/x"}, "only is_paused can be changed")):
        bad = api.patch("/api/v1/dags/dag_1", user="op", json=body)
        assert bad.status_code == 400 and fragment in bad.json()["detail"]
    not_json = api.patch("/api/v1/dags/dag_1", user="op", content=b"{nope",
                         headers={"content-type": "application/json"})
    assert not_json.status_code == 400


def test_the_openapi_document_is_served_without_422s(api: Api) -> None:
    doc = api.openapi
    assert doc["info"]["title"] == "Squall API"
    assert "/api/v1/dags/{dag_id}" in doc["paths"]
    for item in doc["paths"].values():
        for operation in item.values():
            assert "422" not in operation["responses"]


#: POST routes that only read (Airflow's batch lists): a viewer may use them
READ_POSTS = {"/api/v1/dags/~/dagRuns/list", "/api/v1/dags/~/dagRuns/~/taskInstances/list",
              "/api/v1/dags/{dag_id}/dagRuns/list"}
#: routes a visitor without credentials may use
OPEN = {("get", "/api/v1/health"), ("get", "/metrics")}
#: writes only an admin may make
ADMIN_ONLY = "/api/v1/pools"


def _routes(api: Api) -> list[tuple[str, str]]:
    return sorted((method, path) for path, item in api.openapi["paths"].items()
                  for method in item)


def _concrete(path: str) -> str:
    return (path.replace("{dag_id}", "dag_1").replace("{dag_run_id}", "r").replace(
        "{task_id}", "t").replace("{task_try_number}", "1").replace("{pool_name}", "p")
        .replace("{import_error_id}", "1").replace("{backfill_id}", "1")
        .replace("{event_log_id}", "1").replace("{map_index}", "0")
        .replace("{execution_date}", "2024-01-01T00:00:00+00:00")
        .replace("{variable_key}", "v").replace("{connection_id}", "c")
        .replace("{uri}", "s3%3A%2F%2Fb%2Fk"))


def test_every_route_has_its_auth_rule(api: Api) -> None:
    routes = _routes(api)
    assert len(routes) > 25, routes
    for method, path in routes:
        url = _concrete(path)
        assert "{" not in url, f"no value for a parameter of {path}"
        anonymous = api.client.request(method.upper(), url, json={})
        if (method, path) in OPEN:
            assert anonymous.status_code == 200, (method, path, anonymous.text)
            continue
        assert anonymous.status_code == 401, (method, path, anonymous.status_code)
        if method == "get" or path in READ_POSTS:
            continue
        as_viewer = api.request(method.upper(), url, user="viewer", json={})
        assert as_viewer.status_code == 403, (method, path, as_viewer.status_code)
        if path.startswith(ADMIN_ONLY):
            as_op = api.request(method.upper(), url, user="op", json={})
            assert as_op.status_code == 403, (method, path, as_op.status_code)
