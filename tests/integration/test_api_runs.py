"""The REST API's DAG run, task instance and experimental endpoints on a real PostgreSQL,
through a real uvicorn (tests/support/api.py: every answer checked against the served
OpenAPI document): lists with pages and filters, trigger, run state, clear, mark, the
experimental state interfaces, role rules and bad input."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select, text, update

from squall.common.db import SessionFactory, session_scope
from squall.common.models import DagRun, SlaMiss, TaskInstance
from squall.common.settings import Settings
from squall.common.state import DagRunState, DagRunType, TaskInstanceState
from squall.runs.run_creation import create_dag_run
from squall.sdk.dag import DAG
from tests.support.api import Api, serve
from tests.support.scheduling import Noop, sync_dags
from tests.support.services import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgres"],
                                                           indirect=True)]

TI = TaskInstanceState
V1 = "/api/v1"
DAYS = [datetime(2024, 2, d, tzinfo=UTC) for d in (1, 2, 3)]
RUNS = [f"scheduled__{d.isoformat()}" for d in DAYS]
NOW = datetime(2024, 2, 10, 12, tzinfo=UTC)


def etl_dag() -> DAG:
    """extract >> transform >> load, and report on its own; transform has 2 retries."""
    with DAG("etl", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC)) as dag:
        extract = Noop(task_id="extract")
        transform = Noop(task_id="transform", retries=2, pool="big")
        load = Noop(task_id="load")
        Noop(task_id="report", queue="reports")
        extract >> transform >> load
    return dag


def other_dag() -> DAG:
    with DAG("other", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC)) as dag:
        Noop(task_id="only")
    return dag


@dataclass
class World:
    api: Api
    sf: SessionFactory

    def set_ti(self, run_id: str, task_id: str, **values: Any) -> None:
        values.setdefault("try_number", 1)
        with session_scope(self.sf) as session:
            session.execute(update(TaskInstance).where(
                TaskInstance.run_id == run_id, TaskInstance.task_id == task_id,
            ).values(**values))

    def states(self, run_id: str, dag_id: str = "etl") -> dict[str, str]:
        with session_scope(self.sf) as session:
            return dict(session.execute(select(TaskInstance.task_id, TaskInstance.state).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)).all())

    def run(self, run_id: str, dag_id: str = "etl") -> DagRun:
        with session_scope(self.sf) as session:
            run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id,
                                                       DagRun.run_id == run_id)).one()
            session.expunge(run)
            return run


@pytest.fixture
def world(tmp_path: Path, session_factory: SessionFactory) -> Iterator[World]:
    """etl with three runs: success (all success), failed (transform failed, load
    upstream_failed) and running (extract running, the rest none); other with one run."""
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)},
                             overrides={"api": {"page_size": 2, "maximum_page_limit": 10},
                                        "celery": {"default_queue": "apiq"}})
    etl, other = etl_dag(), other_dag()
    sync_dags(session_factory, etl, other, now=NOW)
    states = [DagRunState.SUCCESS, DagRunState.FAILED, DagRunState.RUNNING]
    with session_scope(session_factory) as session:
        for day, state in zip(DAYS, states, strict=True):
            run = create_dag_run(session, etl, run_type=DagRunType.SCHEDULED,
                                 logical_date=day, data_interval=None, state=state, now=NOW)
            run.start_date = day + timedelta(hours=1)
            run.end_date = day + timedelta(hours=2) if state != DagRunState.RUNNING else None
        create_dag_run(session, other, run_type=DagRunType.MANUAL, logical_date=DAYS[0],
                       data_interval=None, state=DagRunState.SUCCESS, now=NOW)
    w = World(api=None, sf=session_factory)  # type: ignore[arg-type]
    for task in ("extract", "transform", "load", "report"):
        w.set_ti(RUNS[0], task, state=TI.SUCCESS, duration=10.0,
                 start_date=DAYS[0] + timedelta(hours=1), end_date=DAYS[0] + timedelta(hours=2))
    w.set_ti(RUNS[1], "extract", state=TI.SUCCESS, duration=5.0)
    w.set_ti(RUNS[1], "transform", state=TI.FAILED, try_number=3, max_tries=2, duration=1.0)
    w.set_ti(RUNS[1], "load", state=TI.UPSTREAM_FAILED, try_number=0)
    w.set_ti(RUNS[1], "report", state=TI.SUCCESS)
    w.set_ti(RUNS[2], "extract", state=TI.RUNNING, start_date=NOW, hostname="w1")
    with serve(settings, session_factory) as api:
        w.api = api
        yield w


def problem(response: Any, status: int, fragment: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status and fragment in str(body["detail"]), body
    assert response.headers["content-type"] == "application/problem+json"
    return body


# --------------------------------------------------------------------------- dag runs


def test_list_dag_runs_pages_filters_and_orders(world: World) -> None:
    api = world.api
    first = api.get(f"{V1}/dags/etl/dagRuns", user="viewer").json()  # page_size 2
    assert first["total_entries"] == 3
    assert [r["dag_run_id"] for r in first["dag_runs"]] == RUNS[:2]
    assert first["dag_runs"][0]["state"] == "success"
    assert first["dag_runs"][0]["logical_date"] == DAYS[0].isoformat()
    rest = api.get(f"{V1}/dags/etl/dagRuns?limit=2&offset=2").json()
    assert [r["dag_run_id"] for r in rest["dag_runs"]] == RUNS[2:]
    desc = api.get(f"{V1}/dags/etl/dagRuns?order_by=-execution_date&limit=10").json()
    assert [r["dag_run_id"] for r in desc["dag_runs"]] == RUNS[::-1]
    finished = api.get(f"{V1}/dags/etl/dagRuns?state=success&state=failed&limit=10").json()
    assert [r["state"] for r in finished["dag_runs"]] == ["success", "failed"]
    since = api.get(f"{V1}/dags/etl/dagRuns",
                    params={"execution_date_gte": DAYS[1].isoformat(),
                            "end_date_lte": "2024-02-02T23:00:00"}).json()
    assert [r["dag_run_id"] for r in since["dag_runs"]] == [RUNS[1]]
    # the "+" of the offset unescaped (a space once decoded), as scripts often send it
    started = api.get(f"{V1}/dags/etl/dagRuns?start_date_gte=2024-02-03T00:00:00+00:00")
    assert [r["dag_run_id"] for r in started.json()["dag_runs"]] == [RUNS[2]]
    every = api.get(f"{V1}/dags/~/dagRuns?limit=10&order_by=dag_id").json()
    assert every["total_entries"] == 4
    assert [r["dag_id"] for r in every["dag_runs"]] == ["etl"] * 3 + ["other"]


BAD_READS = [
    ("/dags/nope/dagRuns", 404, "DAG with dag_id: 'nope' not found"),
    ("/dags/etl/dagRuns?state=bogus", 400, "state 'bogus' is not one of"),
    ("/dags/etl/dagRuns?execution_date_gte=yesterday", 400, "execution_date_gte"),
    ("/dags/etl/dagRuns?order_by=color", 400, "order_by 'color' is not one of"),
    ("/dags/etl/dagRuns?limit=11", 400, "over the maximum of 10"),
    ("/dags/etl/dagRuns/nope", 404, "DagRun ID: 'nope' not found"),
    ("/dags/nope/dagRuns/x", 404, "DAG with dag_id: 'nope' not found"),
    ("/dags/etl/dagRuns/x%00y", 400, "NUL characters"),
    ("/dags/etl/dagRuns?state=a%00", 400, "NUL characters"),
    ("/dags/etl/dagRuns?end_date_lte=0001-01-01T00:00:00%2B01:00", 400, "out of range"),
]


def test_dag_run_reads_refuse_bad_input(world: World) -> None:
    for query, status, fragment in BAD_READS:
        problem(world.api.get(V1 + query, user="viewer"), status, fragment)


def test_batch_list_and_get_a_dag_run(world: World) -> None:
    api = world.api
    other = api.post(f"{V1}/dags/~/dagRuns/list", user="viewer",
                     json={"dag_ids": ["other"]}).json()
    assert [(r["dag_id"], r["run_type"]) for r in other["dag_runs"]] == [("other", "manual")]
    failed = api.post(f"{V1}/dags/~/dagRuns/list",
                      json={"states": ["failed", "running"], "order_by": "-execution_date",
                            "page_limit": 1, "page_offset": 1}).json()
    assert failed["total_entries"] == 2 and [r["dag_run_id"] for r in failed["dag_runs"]] == [
        RUNS[1]]
    problem(api.post(f"{V1}/dags/~/dagRuns/list", json={"page_limit": 11}), 400, "maximum")
    problem(api.post(f"{V1}/dags/~/dagRuns/list", json={"page_offset": 2**63}), 400,
            "page_offset")
    problem(api.post(f"{V1}/dags/~/dagRuns/list", json={"dag_idz": ["x"]}), 400, "dag_idz")
    run = api.get(f"{V1}/dags/etl/dagRuns/{RUNS[1]}", user="viewer").json()
    assert (run["state"], run["run_type"], run["execution_date"]) == (
        "failed", "scheduled", DAYS[1].isoformat())
    assert run["end_date"] == (DAYS[1] + timedelta(hours=2)).isoformat()


def test_trigger_a_run_needs_op_and_creates_a_queued_manual_run(world: World) -> None:
    api = world.api
    url = f"{V1}/dags/etl/dagRuns"
    problem(api.post(url, user=None, json={}), 401)
    problem(api.post(url, user="viewer", json={}), 403, "needs the op role")
    made = api.post(url, user="op", json={"dag_run_id": "by_api", "conf": {"n": 1},
                                          "logical_date": "2024-03-01T10:00:00+02:00",
                                          "note": "ignored"})
    assert made.status_code == 200, made.text
    body = made.json()
    assert (body["dag_run_id"], body["state"], body["run_type"], body["conf"]) == (
        "by_api", "queued", "manual", {"n": 1})
    assert body["external_trigger"] is True
    assert body["logical_date"] == "2024-03-01T08:00:00+00:00"
    assert world.states("by_api") == dict.fromkeys(
        ["extract", "transform", "load", "report"], "none")
    tis = api.get(f"{V1}/dags/etl/dagRuns/by_api/taskInstances?limit=10").json()
    assert {t["task_id"]: t["queue"] for t in tis["task_instances"]} == {
        "extract": "apiq", "transform": "apiq", "load": "apiq", "report": "reports"}
    # defaults: now, and a run id made of it
    plain = api.post(url, user="op", json={}).json()
    assert plain["dag_run_id"].startswith("manual__") and plain["conf"] == {}
    when = datetime.fromisoformat(plain["logical_date"])
    assert abs((when - datetime.now(UTC)).total_seconds()) < 60

    problem(api.post(url, json={"dag_run_id": "by_api"}), 409, "by_api")
    problem(api.post(url, json={"execution_date": "2024-03-01T08:00:00Z"}), 409,
            "already has a run")
    assert api.get(f"{V1}/dags/etl/dagRuns").json()["total_entries"] == 5


BAD_TRIGGERS: list[tuple[Any, str]] = [
    ({"conf": [1, 2]}, "conf"),
    ({"conf": "{}"}, "conf"),
    ({"logical_date": "soon"}, "logical_date"),
    ({"logical_date": "2024-03-01T00:00:00Z", "execution_date": "2024-03-02T00:00:00Z"},
     "differ"),
    ({"dag_run_id": 7}, "dag_run_id"),
    ({"dag_run_id": "  "}, "must not be empty"),
    ({"dag_run_id": "r" * 251}, "dag_run_id"),
    ({"logical_date": "0001-01-01T00:00:00+05:00"}, "out of range"),
    ({"state": "running"}, "state"),
    ({"conf": {"k": "a\u0000"}}, "NUL characters"),
    ([], ""),
]


def test_trigger_refuses_bad_input(world: World) -> None:
    api = world.api
    for body, fragment in BAD_TRIGGERS:
        problem(api.post(f"{V1}/dags/etl/dagRuns", user="op", json=body), 400, fragment)
    problem(api.post(f"{V1}/dags/nope/dagRuns", user="op", json={}), 404, "'nope' not found")
    problem(api.post(f"{V1}/dags/etl/dagRuns", user="op", content=b"{conf:",
                     headers={"content-type": "application/json"}), 400)
    assert api.get(f"{V1}/dags/etl/dagRuns").json()["total_entries"] == 3


def test_set_a_run_failed_then_success_then_queued(world: World) -> None:
    api = world.api
    url = f"{V1}/dags/etl/dagRuns/{RUNS[2]}"
    problem(api.patch(url, user="viewer", json={"state": "failed"}), 403)
    problem(api.patch(url, user="op", json={"state": "running"}), 400, "state")
    problem(api.patch(url, user="op", json={}), 400, "state")
    failed = api.patch(url, user="op", json={"state": "failed"})
    assert failed.status_code == 200, failed.text
    assert failed.json()["state"] == "failed" and failed.json()["end_date"] is not None
    # the running task instance fails; the ones that had not run are skipped
    assert world.states(RUNS[2]) == {"extract": "failed", "transform": "skipped",
                                     "load": "skipped", "report": "skipped"}
    done = api.patch(url, user="op", json={"state": "success"}).json()
    assert done["state"] == "success"
    assert set(world.states(RUNS[2]).values()) == {"success"}
    queued = api.patch(url, user="op", json={"state": "queued"}).json()
    assert (queued["state"], queued["start_date"], queued["end_date"]) == (
        "queued", None, None)
    assert set(world.states(RUNS[2]).values()) == {"success"}  # the task instances stay
    problem(api.patch(f"{V1}/dags/etl/dagRuns/nope", user="op", json={"state": "failed"}),
            404)


def test_clear_a_run_dry_run_by_default_then_for_real(world: World) -> None:
    api = world.api
    url = f"{V1}/dags/etl/dagRuns/{RUNS[1]}/clear"
    problem(api.post(url, user="viewer", json={"dry_run": True}), 403)
    problem(api.post(url, user="op", json={"dry_run": "perhaps"}), 400, "dry_run")
    listed = api.post(url, user="op", json={}).json()
    assert listed["total_entries"] == 4
    assert sorted(t["task_id"] for t in listed["task_instances"]) == [
        "extract", "load", "report", "transform"]
    assert world.states(RUNS[1])["transform"] == "failed"  # a dry run changes nothing
    run = api.post(url, user="op", json={"dry_run": False}).json()
    assert (run["dag_run_id"], run["state"], run["end_date"]) == (RUNS[1], "queued", None)
    assert set(world.states(RUNS[1]).values()) == {"none"}
    with session_scope(world.sf) as session:
        transform = session.get_one(TaskInstance, ("etl", "transform", RUNS[1], -1))
        assert (transform.try_number, transform.max_tries) == (3, 5)
    problem(api.post(f"{V1}/dags/etl/dagRuns/nope/clear", user="op", json={}), 404)


# --------------------------------------------------------------------------- task instances


def test_list_task_instances_of_a_run_pages_and_filters(world: World) -> None:
    api = world.api
    url = f"{V1}/dags/etl/dagRuns/{RUNS[1]}/taskInstances"
    first = api.get(url, user="viewer").json()
    assert first["total_entries"] == 4
    assert [t["task_id"] for t in first["task_instances"]] == ["extract", "load"]
    second = api.get(url + "?offset=2").json()
    assert [t["task_id"] for t in second["task_instances"]] == ["report", "transform"]
    assert second["task_instances"][1]["execution_date"] == DAYS[1].isoformat()

    def ids(query: str) -> list[str]:
        return [t["task_id"] for t in api.get(url + query).json()["task_instances"]]

    assert ids("?state=failed&state=upstream_failed&limit=10") == ["load", "transform"]
    assert ids("?pool=big") == ["transform"]
    assert ids("?queue=reports") == ["report"]
    assert ids("?duration_gte=2&limit=10") == ["extract"]
    assert ids("?duration_lte=2&limit=10") == ["transform"]
    assert ids("?order_by=-task_id&limit=10") == ["transform", "report", "load", "extract"]
    problem(api.get(url + "?state=dreaming"), 400, "'dreaming' is not one of")
    problem(api.get(url + "?duration_gte=long"), 400, "duration_gte")
    problem(api.get(f"{V1}/dags/etl/dagRuns/nope/taskInstances"), 404, "nope")
    problem(api.get(f"{V1}/dags/nope/dagRuns/~/taskInstances"), 404, "nope")


def test_list_task_instances_across_runs(world: World) -> None:
    api = world.api
    every = api.get(f"{V1}/dags/~/dagRuns/~/taskInstances?limit=10", user="viewer").json()
    assert every["total_entries"] == 13
    runs = api.get(f"{V1}/dags/etl/dagRuns/~/taskInstances",
                   params={"state": "success", "limit": 10,
                           "execution_date_lte": DAYS[1].isoformat()}).json()
    assert runs["total_entries"] == 6  # 4 of the first run, extract and report of the second
    running = api.get(f"{V1}/dags/~/dagRuns/~/taskInstances?state=running").json()
    assert [(t["task_id"], t["hostname"]) for t in running["task_instances"]] == [
        ("extract", "w1")]
    started = api.get(f"{V1}/dags/~/dagRuns/~/taskInstances",
                      params={"start_date_gte": (NOW - timedelta(minutes=1)).isoformat()})
    assert started.json()["total_entries"] == 1

    batch = f"{V1}/dags/~/dagRuns/~/taskInstances/list"
    failed = api.post(batch, user="viewer",
                      json={"dag_ids": ["etl"], "state": ["failed", "upstream_failed"]})
    assert [t["task_id"] for t in failed.json()["task_instances"]] == ["load", "transform"]
    only = api.post(batch, json={"task_ids": ["only"], "dag_run_ids": ["manual__"
                                 + DAYS[0].isoformat()]}).json()
    assert [(t["dag_id"], t["state"]) for t in only["task_instances"]] == [("other", None)]
    paged = api.post(batch, json={"page_limit": 3, "page_offset": 12}).json()
    assert paged["total_entries"] == 13 and len(paged["task_instances"]) == 1
    problem(api.post(batch, json={"state": ["nope"]}), 400, "'nope' is not one of")
    problem(api.post(batch, json={"dag_ids": "etl"}), 400, "dag_ids")


def test_get_a_task_instance(world: World) -> None:
    api = world.api
    ti = api.get(f"{V1}/dags/etl/dagRuns/{RUNS[1]}/taskInstances/transform",
                 user="viewer").json()
    assert (ti["state"], ti["try_number"], ti["max_tries"], ti["pool"]) == (
        "failed", 3, 2, "big")
    assert (ti["dag_run_id"], ti["execution_date"]) == (RUNS[1], DAYS[1].isoformat())
    assert ti["sla_miss"] is None
    problem(api.get(f"{V1}/dags/etl/dagRuns/{RUNS[1]}/taskInstances/nope"), 404,
            "Task instance 'nope' not found")
    problem(api.get(f"{V1}/dags/etl/dagRuns/nope/taskInstances/load"), 404, "nope")


def test_a_task_instance_answers_its_missed_sla(world: World) -> None:
    late = DAYS[1] + timedelta(hours=3)
    with session_scope(world.sf) as session:
        session.add(SlaMiss(dag_id="etl", task_id="transform", execution_date=DAYS[1],
                            run_id=RUNS[1], deadline=late - timedelta(hours=1),
                            timestamp=late, email_sent=False, notification_sent=True,
                            description="late"))
    miss = {"task_id": "transform", "dag_id": "etl", "execution_date": DAYS[1].isoformat(),
            "email_sent": False, "timestamp": late.isoformat(), "description": "late",
            "notification_sent": True}
    url = f"{V1}/dags/etl/dagRuns/{RUNS[1]}/taskInstances"
    assert world.api.get(f"{url}/transform").json()["sla_miss"] == miss
    listed = world.api.get(url, params={"limit": 10}).json()["task_instances"]
    assert {ti["task_id"]: ti["sla_miss"] for ti in listed} == {
        "extract": None, "transform": miss, "load": None, "report": None}
    other = world.api.get(f"{V1}/dags/etl/dagRuns/{RUNS[0]}/taskInstances/transform").json()
    assert other["sla_miss"] is None


def test_mark_a_task_instance(world: World) -> None:
    api = world.api
    url = f"{V1}/dags/etl/dagRuns/{RUNS[1]}/taskInstances/transform"
    problem(api.patch(url, user="viewer", json={"new_state": "success", "dry_run": False}),
            403)
    problem(api.patch(url, user="op", json={"new_state": "running", "dry_run": False}), 400,
            "new_state")
    problem(api.patch(url, user="op", json={"dry_run": False}), 400, "new_state")
    ref = api.patch(url, user="op", json={"new_state": "success"}).json()  # dry run
    assert ref == {"task_id": "transform", "dag_id": "etl", "dag_run_id": RUNS[1],
                   "execution_date": DAYS[1].isoformat()}
    assert world.states(RUNS[1])["transform"] == "failed"
    done = api.patch(url, user="op", json={"new_state": "success", "dry_run": False})
    assert done.status_code == 200 and done.json() == ref
    # marked success: load (upstream_failed below it) is cleared to run again, and the
    # failed run goes back to the scheduler
    assert world.states(RUNS[1]) == {"extract": "success", "transform": "success",
                                     "load": "none", "report": "success"}
    assert world.run(RUNS[1]).state in ("running", "queued")
    again = api.patch(url, user="op", json={"new_state": "success", "dry_run": False})
    assert again.status_code == 200  # already so: nothing to do
    problem(api.patch(f"{V1}/dags/etl/dagRuns/{RUNS[1]}/taskInstances/nope", user="op",
                      json={"new_state": "failed"}), 404)


def test_mark_a_task_instance_and_its_relatives(world: World) -> None:
    api = world.api
    url = f"{V1}/dags/etl/updateTaskInstancesState"
    body = {"task_id": "transform", "new_state": "success", "include_downstream": True}
    problem(api.post(url, user="viewer", json={**body, "dag_run_id": RUNS[1]}), 403)
    problem(api.post(url, user="op", json=body), 400, "one of dag_run_id and execution_date")
    problem(api.post(url, user="op", json={**body, "dag_run_id": RUNS[1],
                                          "execution_date": DAYS[1].isoformat()}), 400,
            "one of dag_run_id and execution_date")
    problem(api.post(url, user="op", json={**body, "execution_date": "2030-01-01"}), 404,
            "no run of execution_date")
    problem(api.post(url, user="op", json={**body, "task_id": "nope",
                                          "dag_run_id": RUNS[1]}), 404, "nope")
    dry = api.post(url, user="op", json={**body, "dag_run_id": RUNS[1]}).json()
    assert [(r["task_id"], r["dag_run_id"], r["execution_date"]) for r in
            dry["task_instances"]] == [("transform", RUNS[1], DAYS[1].isoformat()),
                                       ("load", RUNS[1], DAYS[1].isoformat())]
    assert world.states(RUNS[1])["transform"] == "failed"
    done = api.post(url, user="op", json={**body, "dry_run": False,
                                         "execution_date": DAYS[1].isoformat()})
    assert done.json() == dry
    assert world.states(RUNS[1]) == {"extract": "success", "transform": "success",
                                     "load": "success", "report": "success"}


def test_get_a_dags_details_and_one_task(world: World) -> None:
    api = world.api
    details = api.get(f"{V1}/dags/etl/details", user="viewer").json()
    assert (details["dag_id"], details["timezone"], details["concurrency"]) == (
        "etl", "UTC", etl_dag().max_active_tasks)
    assert details["start_date"] == "2024-01-01T00:00:00+00:00" and details["params"] == {}
    task = api.get(f"{V1}/dags/etl/tasks/transform", user="viewer").json()
    assert (task["task_id"], task["retries"], task["pool"]) == ("transform", 2, "big")
    assert task["downstream_task_ids"] == ["load"]
    problem(api.get(f"{V1}/dags/etl/tasks/nope"), 404, "nope")
    problem(api.get(f"{V1}/dags/nope/details"), 404, "nope")


def test_delete_a_run_deletes_its_task_instances(world: World) -> None:
    api = world.api
    url = f"{V1}/dags/etl/dagRuns/{RUNS[2]}"
    problem(api.delete(url, user="viewer"), 403)
    assert api.delete(url, user="op").status_code == 204
    problem(api.get(url), 404)
    assert world.states(RUNS[2]) == {}
    assert world.states(RUNS[1])["transform"] == "failed"  # other runs are left alone
    problem(api.delete(url, user="op"), 404)


def test_clear_task_instances(world: World) -> None:
    api = world.api
    url = f"{V1}/dags/etl/clearTaskInstances"
    problem(api.post(url, user="viewer", json={}), 403)
    # Airflow's defaults: a dry run of the failed ones
    listed = api.post(url, user="op", json={}).json()["task_instances"]
    assert sorted((t["dag_run_id"], t["task_id"]) for t in listed) == [
        (RUNS[1], "load"), (RUNS[1], "transform")]
    assert listed[0]["execution_date"] == DAYS[1].isoformat()
    assert world.states(RUNS[1])["transform"] == "failed"
    # extract and what is below it in the first run, whatever their state
    down = api.post(url, user="op", json={
        "dry_run": True, "only_failed": False, "task_ids": ["extract"],
        "include_downstream": True, "dag_run_id": RUNS[0]}).json()["task_instances"]
    assert sorted(t["task_id"] for t in down) == ["extract", "load", "transform"]
    # the same from the second run on (include_future), for real
    done = api.post(url, user="op", json={
        "dry_run": False, "only_failed": False, "task_ids": ["transform"],
        "dag_run_id": RUNS[1], "include_future": True}).json()["task_instances"]
    assert sorted(t["dag_run_id"] for t in done) == [RUNS[1], RUNS[2]]
    assert world.states(RUNS[1])["transform"] == "none"
    assert world.states(RUNS[0])["transform"] == "success"
    assert world.run(RUNS[1]).state == "queued"
    running = api.post(url, user="op", json={"only_failed": False, "only_running": True,
                                             "start_date": "2024-02-03T00:00:00Z"}).json()
    assert [t["task_id"] for t in running["task_instances"]] == ["extract"]


BAD_CLEARS: list[tuple[dict[str, Any], int, str]] = [
    ({"only_running": True}, 400, "cannot both be true"),
    ({"start_date": "2024-02-03T00:00:00Z", "end_date": "2024-02-01T00:00:00Z"}, 400,
     "after end_date"),
    ({"start_date": "tuesday"}, 400, "start_date"),
    ({"task_ids": []}, 400, "task_ids"),
    ({"task_ids": ["extract", "ghost"]}, 404, "ghost"),
    ({"dag_run_id": "nope"}, 404, "nope"),
    ({"dag_run_id": "a\u0000"}, 400, "NUL characters"),
    ({"dry_run": False, "surprise": 1}, 400, "surprise"),
]


def test_clear_task_instances_refuses_bad_input(world: World) -> None:
    for body, status, fragment in BAD_CLEARS:
        problem(world.api.post(f"{V1}/dags/etl/clearTaskInstances", user="op", json=body),
                status, fragment)
    problem(world.api.post(f"{V1}/dags/nope/clearTaskInstances", user="op", json={}), 404,
            "nope")
    assert world.states(RUNS[1])["transform"] == "failed"


# --------------------------------------------------------------------------- experimental


def test_experimental_state_interfaces(world: World) -> None:
    api = world.api
    base = "/api/experimental/dags/etl/dag_runs"
    assert api.get(f"{base}/{DAYS[1].isoformat()}", user="viewer").json() == {
        "state": "failed"}
    assert api.get(f"{base}/2024-02-03T00:00:00").json() == {"state": "running"}
    ti = api.get(f"{base}/{DAYS[1].isoformat()}/tasks/transform", user="viewer").json()
    assert (ti["state"], ti["try_number"], ti["max_tries"], ti["run_id"]) == (
        "failed", "3", "2", RUNS[1])
    assert ti["execution_date"] == "2024-02-02 00:00:00+00:00"
    assert ti["duration"] == "1.0" and ti["hostname"] is None
    problem(api.get(f"{base}/{DAYS[1].isoformat()}", user=None), 401)
    problem(api.get(f"{base}/not-a-date"), 400, "not an ISO 8601 date")
    problem(api.get(f"{base}/2023-01-01T00:00:00Z"), 404, "not found in dag etl")
    problem(api.get("/api/experimental/dags/nope/dag_runs/2024-02-01"), 404, "nope")
    problem(api.get(f"{base}/{DAYS[1].isoformat()}/tasks/ghost"), 404, "ghost")
    problem(api.get(f"{base}/2024-02-01/tasks/a%00"), 400, "NUL characters")
    problem(api.get(f"{base}/0001-01-01T00:00:00+03:00"), 400, "out of range")


# --------------------------------------------------------------------------- the scheduler's lock


def _in_thread(call: Any) -> tuple[threading.Thread, list[Any]]:
    """``call()`` on a thread of its own; its answer (or exception) lands in the list."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except Exception as exc:  # the test reports it
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _someone_waits_for_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")))


def _deciding(world: World, run_id: str) -> tuple[Engine, Connection]:
    """A transaction holding the run's row as a scheduler deciding the run holds it."""
    engine: Engine = world.sf.kw["bind"]
    conn = engine.connect()
    conn.begin()
    conn.execute(select(DagRun.id).where(DagRun.dag_id == "etl", DagRun.run_id == run_id)
                 .with_for_update())
    return engine, conn


def test_setting_a_runs_state_waits_for_the_schedulers_decision(world: World) -> None:
    """The scheduler holds a run's row while it changes the run's task instances: the API
    takes the row before the task instances, so the two do not deadlock."""
    engine, scheduler = _deciding(world, RUNS[2])
    try:
        thread, out = _in_thread(lambda: world.api.patch(
            f"{V1}/dags/etl/dagRuns/{RUNS[2]}", user="op", json={"state": "failed"}))
        wait_until(lambda: out or _someone_waits_for_a_lock(engine), 20,
                   message="the API to wait for the run's row")
        scheduler.execute(update(TaskInstance).where(
            TaskInstance.run_id == RUNS[2], TaskInstance.task_id == "transform",
        ).values(state=TI.SCHEDULED))
        scheduler.commit()
    finally:
        scheduler.close()
    thread.join(30)
    assert out and not isinstance(out[0], Exception), out
    assert out[0].status_code == 200, out[0].text
    assert world.states(RUNS[2]) == {"extract": "failed", "transform": "skipped",
                                     "load": "skipped", "report": "skipped"}


def test_a_clear_is_not_lost_to_a_decision_under_way(world: World) -> None:
    """A clear of a running run waits for a scheduler that is finishing the run from the
    task states it read, then queues the run again: the clear is not lost."""
    engine, scheduler = _deciding(world, RUNS[2])
    try:
        thread, out = _in_thread(lambda: world.api.post(
            f"{V1}/dags/etl/clearTaskInstances", user="op",
            json={"dry_run": False, "dag_run_id": RUNS[2], "task_ids": ["extract"],
                  "only_failed": False}))
        wait_until(lambda: out or _someone_waits_for_a_lock(engine), 20,
                   message="the API to answer or wait for the run's row")
        scheduler.execute(update(DagRun).where(DagRun.run_id == RUNS[2])
                          .values(state=DagRunState.FAILED))
        scheduler.commit()
    finally:
        scheduler.close()
    thread.join(30)
    assert out and not isinstance(out[0], Exception), out
    assert out[0].status_code == 200, out[0].text
    assert world.states(RUNS[2])["extract"] == "restarting"
    assert world.run(RUNS[2]).state == "queued"
