"""The audit log on a real PostgreSQL through a real uvicorn: each action of the REST API
and the web UI writes exactly one entry (event, owner, DAG, run, task) in its own
transaction; previews, refusals and rollbacks write none; ``GET /api/v1/eventLogs`` and
``/eventLogs/{id}`` filter, order, page and 404 as Airflow 2.10's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.models import AuditLog, DagRun, TaskInstance
from squall.common.settings import Settings
from squall.common.state import DagRunState, DagRunType, TaskInstanceState
from squall.runs import audit
from squall.runs.run_creation import create_dag_run
from squall.sdk.dag import DAG
from tests.support.api import Api, basic, serve
from tests.support.scheduling import Noop, sync_dags

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgres"],
                                                           indirect=True)]

V1 = "/api/v1"
DAY = datetime(2024, 3, 1, tzinfo=UTC)
RUN = f"scheduled__{DAY.isoformat()}"
NOW = datetime(2024, 3, 10, tzinfo=UTC)


def _dags() -> list[DAG]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with DAG("aud", schedule="@daily", start_date=start, catchup=False) as dag:
        Noop(task_id="a") >> Noop(task_id="b")
    with DAG("other", schedule=None, start_date=start) as other:
        Noop(task_id="only")
    return [dag, other]


@dataclass
class World:
    api: Api
    sf: SessionFactory
    seen: int = 0

    def new(self) -> list[AuditLog]:
        """The entries written since the last call, oldest first."""
        with session_scope(self.sf) as session:
            rows = list(session.scalars(select(AuditLog).where(AuditLog.id > self.seen)
                                        .order_by(AuditLog.id)))
            session.expunge_all()
        if rows:
            self.seen = rows[-1].id
        return rows

    def one(self, event: str, *, owner: str, dag_id: str | None = "aud",
            run_id: str | None = None, task_id: str | None = None,
            source: str = "api") -> dict[str, Any]:
        """The one entry written since the last look; its ``extra``."""
        rows = self.new()
        assert len(rows) == 1, [(r.event, r.dag_id, r.run_id) for r in rows]
        row = rows[0]
        assert (row.event, row.owner, row.dag_id, row.run_id, row.task_id) == (
            event, owner, dag_id, run_id, task_id)
        extra: dict[str, Any] = json.loads(row.extra or "{}")
        assert extra["source"] == source
        return extra

    def none(self) -> None:
        assert self.new() == []

    def set_ti(self, task_id: str, state: str) -> None:
        with session_scope(self.sf) as session:
            session.execute(update(TaskInstance).where(
                TaskInstance.run_id == RUN, TaskInstance.task_id == task_id,
            ).values(state=state, try_number=1))


@pytest.fixture
def world(tmp_path: Path, session_factory: SessionFactory) -> Iterator[World]:
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)},
                             overrides={"api": {"page_size": 3, "maximum_page_limit": 50}})
    dag, other = _dags()
    sync_dags(session_factory, dag, other, now=NOW)
    with session_scope(session_factory) as session:
        create_dag_run(session, dag, run_type=DagRunType.SCHEDULED, logical_date=DAY,
                       data_interval=None, state=DagRunState.FAILED, now=NOW)
    w = World(api=None, sf=session_factory)  # type: ignore[arg-type]
    w.set_ti("a", TaskInstanceState.SUCCESS)
    w.set_ti("b", TaskInstanceState.FAILED)
    with serve(settings, session_factory) as api:
        w.api = api
        yield w


def test_each_api_action_writes_one_entry_and_previews_and_refusals_none(
        world: World) -> None:
    api = world.api
    # pause / unpause
    assert api.patch(f"{V1}/dags/aud", user="op", json={"is_paused": True}).status_code == 200
    world.one(audit.PAUSED, owner="op")
    api.patch(f"{V1}/dags/aud", user="op", json={"is_paused": False})
    world.one(audit.UNPAUSED, owner="op")
    assert api.patch(f"{V1}/dags/aud", user="viewer", json={"is_paused": True}
                     ).status_code == 403
    assert api.patch(f"{V1}/dags/aud", json={"is_paused": "yes"}).status_code == 400
    world.none()

    # trigger (its conf masked where it names a secret); a refused trigger writes none
    made = api.post(f"{V1}/dags/aud/dagRuns", user="op",
                    json={"dag_run_id": "m1", "conf": {"n": 1, "api_token": "s3cr3t"}})
    assert made.status_code == 200, made.text
    extra = world.one(audit.TRIGGER, owner="op", run_id="m1")
    assert extra["conf"] == {"n": 1, "api_token": "***"}
    assert api.post(f"{V1}/dags/aud/dagRuns", json={"dag_run_id": "m1"}).status_code == 409
    assert api.post(f"{V1}/dags/nope/dagRuns", json={}).status_code == 404
    world.none()

    # clear task instances: the dry run (the default) writes none
    body = {"dag_run_id": RUN, "task_ids": ["b"]}
    assert api.post(f"{V1}/dags/aud/clearTaskInstances", json=body).status_code == 200
    world.none()
    cleared = api.post(f"{V1}/dags/aud/clearTaskInstances", user="op",
                       json={**body, "dry_run": False})
    assert [t["task_id"] for t in cleared.json()["task_instances"]] == ["b"]
    extra = world.one(audit.CLEAR, owner="op", run_id=RUN, task_id="b")
    assert extra["cleared"] == 1 and extra["only_failed"] is True
    # nothing left to clear (only_failed): nothing done, no entry
    api.post(f"{V1}/dags/aud/clearTaskInstances", json={**body, "dry_run": False})
    world.none()

    # mark a task instance: dry run none; done one
    url = f"{V1}/dags/aud/dagRuns/{RUN}/taskInstances/b"
    assert api.patch(url, json={"new_state": "success"}).status_code == 200
    world.none()
    assert api.patch(url, user="op", json={"new_state": "failed", "dry_run": False}
                     ).status_code == 200
    extra = world.one(audit.MARK_FAILED, owner="op", run_id=RUN, task_id="b")
    assert extra["changed"] == 1
    marked = api.post(f"{V1}/dags/aud/updateTaskInstancesState", json={
        "dag_run_id": RUN, "task_id": "a", "new_state": "skipped", "dry_run": False,
        "include_downstream": True})
    assert marked.status_code == 200, marked.text
    extra = world.one(audit.MARK_SKIPPED, owner="admin", run_id=RUN, task_id="a")
    assert extra["downstream"] is True and extra["changed"] == 2

    # a run: set its state, clear it (dry run none), delete it
    run_url = f"{V1}/dags/aud/dagRuns/m1"
    assert api.patch(run_url, json={"state": "failed"}).status_code == 200
    world.one(audit.RUN_FAILED, owner="admin", run_id="m1")
    assert api.post(f"{run_url}/clear", json={}).status_code == 200
    world.none()
    assert api.post(f"{run_url}/clear", json={"dry_run": False}).status_code == 200
    assert world.one(audit.RUN_CLEAR, owner="admin", run_id="m1")["cleared"] == 2
    assert api.delete(run_url, user="op").status_code == 204
    world.one(audit.RUN_DELETE, owner="op", run_id="m1")
    assert api.delete(run_url).status_code == 404
    world.none()

    # pools: create, edit, delete; a duplicate and the default pool's deletion none
    assert api.post(f"{V1}/pools", json={"name": "etl", "slots": 2}).status_code == 200
    assert world.one(audit.POOL_CREATE, owner="admin", dag_id=None)["pool"] == "etl"
    assert api.post(f"{V1}/pools", json={"name": "etl", "slots": 2}).status_code == 409
    assert api.patch(f"{V1}/pools/etl", json={"name": "etl", "slots": 5}).status_code == 200
    assert world.one(audit.POOL_EDIT, owner="admin", dag_id=None)["slots"] == 5
    assert api.delete(f"{V1}/pools/default_pool").status_code == 400
    assert api.delete(f"{V1}/pools/etl").status_code == 204
    world.one(audit.POOL_DELETE, owner="admin", dag_id=None)

    # backfill: create, cancel; a second cancel (nothing to cancel: 409) none
    made = api.post(f"{V1}/backfills", user="op", json={
        "dag_id": "aud", "from_date": "2024-02-01", "to_date": "2024-02-02T00:00:00+00:00",
        "task_regex": "^a$"})
    assert made.status_code == 200, made.text
    backfill_id = made.json()["id"]
    extra = world.one(audit.BACKFILL, owner="op")
    assert extra["backfill_id"] == backfill_id and extra["runs"] == 2
    assert extra["task_regex"] == "^a$"
    assert api.post(f"{V1}/backfills/{backfill_id}/cancel", user="op").status_code == 200
    assert world.one(audit.BACKFILL_CANCEL, owner="op")["backfill_id"] == backfill_id
    assert api.post(f"{V1}/backfills/{backfill_id}/cancel").status_code == 409
    world.none()


@dataclass
class Ui:
    """The web UI's action routes (not in the OpenAPI document), with basic auth."""

    api: Api

    def post(self, url: str, *, user: str = "admin", json: Any = None) -> Any:
        return self.api.client.post(url, headers=basic(user), json=json)


def test_each_ui_action_writes_one_entry(world: World) -> None:
    api = Ui(world.api)
    ui = "/ui/api/dags/aud"
    assert api.post(f"{ui}/pause", user="op", json={"is_paused": True}).status_code == 200
    world.one(audit.PAUSED, owner="op", source="ui")
    made = api.post(f"{ui}/trigger", user="op", json={"conf": {"x": 1}})
    assert made.status_code == 200, made.text
    run_id = made.json()["run_id"]
    assert world.one(audit.TRIGGER, owner="op", run_id=run_id, source="ui")["conf"] == {"x": 1}
    cleared = api.post(f"{ui}/runs/{RUN}/tasks/b/clear", json={"downstream": True})
    assert cleared.status_code == 200, cleared.text
    extra = world.one(audit.CLEAR, owner="admin", run_id=RUN, task_id="b", source="ui")
    assert extra == {"source": "ui", "cleared": 1, "downstream": True}
    marked = api.post(f"{ui}/runs/{RUN}/tasks/b/mark", json={"state": "success"})
    assert marked.status_code == 200, marked.text
    world.one(audit.MARK_SUCCESS, owner="admin", run_id=RUN, task_id="b", source="ui")
    # marking it again finds nothing to change: no entry; a refused action none
    api.post(f"{ui}/runs/{RUN}/tasks/b/mark", json={"state": "success"})
    assert api.post(f"{ui}/runs/{RUN}/tasks/b/mark", json={"state": "nope"}).status_code == 400
    assert api.post(f"{ui}/pause", user="viewer", json={"is_paused": True}).status_code == 403
    world.none()


def test_an_entry_rolls_back_with_its_action(world: World) -> None:
    """The entry is in the action's transaction: when the action fails after recording,
    neither the change nor the entry is kept."""
    with pytest.raises(RuntimeError), session_scope(world.sf) as session:
        session.execute(update(DagRun).where(DagRun.run_id == RUN).values(state="queued"))
        audit.record_event(session, audit.RUN_QUEUED, owner="someone", dag_id="aud",
                           run_id=RUN, source="api")
        session.flush()
        raise RuntimeError("the action failed after recording")
    world.none()
    with session_scope(world.sf) as session:
        assert session.scalar(select(DagRun.state).where(DagRun.run_id == RUN)) == "failed"
        assert session.scalar(select(func.count()).select_from(AuditLog)) == 0


def test_record_event_refuses_unknown_events_and_sources(world: World) -> None:
    with session_scope(world.sf) as session:
        with pytest.raises(ValueError, match="unknown audit event"):
            audit.record_event(session, "made.up", owner="x")
        with pytest.raises(ValueError, match="unknown audit source"):
            audit.record_event(session, audit.CLEAR, owner="x", source="email")
    world.none()


def _seed(sf: SessionFactory) -> list[int]:
    """Six entries an hour apart from NOW - 6 h; their ids, oldest first."""
    rows = [
        (audit.TRIGGER, "aud", "r1", None, None, "alice"),
        (audit.CLEAR, "aud", "r1", "a", 0, "bob"),
        (audit.MARK_SUCCESS, "aud", "r1", "b", None, "alice"),
        (audit.PAUSED, "other", None, None, None, "cli:carol"),
        (audit.MARK_FAILED, "aud", "r2", "a", 3, "bob"),
        (audit.POOL_EDIT, None, None, None, None, "alice"),
    ]
    start = datetime.now(UTC) - timedelta(hours=6)
    with session_scope(sf) as session:
        made = []
        for n, (event, dag_id, run_id, task_id, map_index, owner) in enumerate(rows):
            row = audit.record_event(session, event, owner=owner, dag_id=dag_id,
                                     run_id=run_id, task_id=task_id, map_index=map_index,
                                     logical_date=DAY if run_id else None, source="api")
            row.dttm = start + timedelta(hours=n)
            row.try_number = 2 if event == audit.CLEAR else None
            made.append(row)
        session.flush()
        return [r.id for r in made]


def test_event_logs_filter_order_page_and_404(world: World) -> None:
    ids = _seed(world.sf)
    api = world.api

    def listed(query: str = "", user: str = "viewer") -> list[int]:
        answer = api.get(f"{V1}/eventLogs{query}", user=user)
        assert answer.status_code == 200, answer.text
        return [e["event_log_id"] for e in answer.json()["event_logs"]]

    first = api.get(f"{V1}/eventLogs", user="viewer").json()  # page_size 3, oldest first
    assert first["total_entries"] == 6
    assert [e["event_log_id"] for e in first["event_logs"]] == ids[:3]
    assert listed("?limit=3&offset=3") == ids[3:]
    assert listed("?order_by=-when&limit=50") == ids[::-1]
    assert listed("?order_by=owner&limit=50")[:3] == [ids[0], ids[2], ids[5]]
    assert listed("?dag_id=aud&limit=50") == [ids[0], ids[1], ids[2], ids[4]]
    assert listed("?dag_id=aud&run_id=r1&task_id=a") == [ids[1]]
    assert listed("?map_index=0") == [ids[1]]  # (0 is a filter too)
    assert listed("?try_number=2") == [ids[1]]
    assert listed("?owner=bob") == [ids[1], ids[4]]
    assert listed("?event=paused") == [ids[3]]
    assert listed("?included_events=success,failed") == [ids[2], ids[4]]
    assert listed("?excluded_events=trigger,clear,success&limit=50") == ids[3:]
    middle = datetime.now(UTC) - timedelta(hours=3, minutes=30)
    assert listed(f"?after={middle.isoformat().replace('+', '%2B')}") == ids[3:]
    assert listed(f"?before={middle.isoformat().replace('+', '%2B')}") == ids[:3]

    one = api.get(f"{V1}/eventLogs/{ids[1]}", user="viewer").json()
    assert {k: one[k] for k in ("event", "owner", "dag_id", "run_id", "task_id", "map_index",
                                "try_number")} == {
        "event": "clear", "owner": "bob", "dag_id": "aud", "run_id": "r1", "task_id": "a",
        "map_index": 0, "try_number": 2}
    assert one["execution_date"] == DAY.isoformat()
    assert json.loads(one["extra"]) == {"source": "api"}
    missing = api.get(f"{V1}/eventLogs/{ids[-1] + 100}")
    assert missing.status_code == 404 and missing.json()["title"] == "Event Log not found"
    assert api.get(f"{V1}/eventLogs?order_by=nope").status_code == 400
    assert api.get(f"{V1}/eventLogs", user=None).status_code == 401
