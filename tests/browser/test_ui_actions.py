"""The web UI's JSON endpoints (``/ui/api``) without a browser: what the pages read, and
the actions (trigger with conf, clear with upstream, mark success, pause) with their role
rules and bad input answered as problems; the grid of 25 runs x 200 tasks is quick."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from squall.common.db import session_scope
from squall.common.models import DagModel, DagRun
from tests.browser.conftest import BIG_DAG, DAG_ID, Ui, add_big_dag
from tests.support.api import basic

pytestmark = [pytest.mark.browser, pytest.mark.postgres,
              pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]


def call(ui: Ui, method: str, path: str, user: str = "op",
         body: dict[str, Any] | None = None) -> httpx.Response:
    return ui.api.client.request(method, path, json=body, headers=basic(user))


def ti_url(ui: Ui, task_id: str) -> str:
    return f"/ui/api/dags/{DAG_ID}/runs/{ui.failed_run}/tasks/{task_id}"


def test_what_the_pages_read(ui: Ui) -> None:
    listing = call(ui, "GET", "/ui/api/dags", user="viewer").json()
    assert listing["user"] == {"username": "viewer", "role": "viewer", "may_act": False}
    etl = next(d for d in listing["dags"] if d["dag_id"] == DAG_ID)
    assert [r["state"] for r in etl["recent_runs"]] == ["success", "success", "failed"]
    assert listing["import_errors"][0]["filename"] == "/dags/broken.py"
    grid = call(ui, "GET", f"/ui/api/dags/{DAG_ID}/grid", user="viewer").json()
    assert grid["tasks"] == ["extract", "transform", "load", "report"]
    assert grid["runs"][-1]["run_id"] == ui.failed_run
    assert grid["states"]["transform"] == ["success", "success", "failed"]
    ti = call(ui, "GET", ti_url(ui, "load"), user="viewer").json()
    assert ti["state"] == "upstream_failed" and ti["state_reason"] == "a task upstream failed"
    log = call(ui, "GET", ti_url(ui, "transform") + "/log/1", user="viewer")
    assert log.status_code == 200 and "cannot parse row 42" in log.text
    assert call(ui, "GET", ti_url(ui, "transform") + "/log/2").status_code == 404
    assert call(ui, "GET", "/ui/api/dags/nope/grid").status_code == 404
    pools = call(ui, "GET", "/ui/api/pools", user="viewer").json()["pools"]
    assert pools[0]["pool"] == "default_pool"
    assert call(ui, "GET", "/ui/api/backfills", user="viewer").json()["backfills"] == []
    assert call(ui, "GET", "/ui/static/grid.js").headers["content-type"].startswith(
        "text/javascript")
    assert call(ui, "GET", "/ui/static/..%2Fsession.py").status_code == 404


def test_actions_need_the_op_role_and_good_input(ui: Ui) -> None:
    for path, body in ((f"/ui/api/dags/{DAG_ID}/pause", {"is_paused": True}),
                       (f"/ui/api/dags/{DAG_ID}/trigger", {}),
                       (ti_url(ui, "transform") + "/clear", {}),
                       (ti_url(ui, "transform") + "/mark", {"state": "success"})):
        denied = call(ui, "POST", path, user="viewer", body=body)
        assert denied.status_code == 403, path
    for path, body, status in (
            (f"/ui/api/dags/{DAG_ID}/trigger", {"conf": [1, 2]}, 400),
            (f"/ui/api/dags/{DAG_ID}/pause", {"is_paused": "yes"}, 400),
            ("/ui/api/dags/nope/trigger", {}, 404),
            (ti_url(ui, "transform") + "/mark", {"state": "running"}, 400),
            (ti_url(ui, "transform") + "/clear", {"upstream": "yes"}, 400),
            (ti_url(ui, "nope") + "/clear", {}, 404)):
        answer = call(ui, "POST", path, body=body)
        assert answer.status_code == status, (path, answer.text)
        assert answer.json()["status"] == status
    assert ui.ti_state("transform", ui.failed_run) == "failed"


def test_trigger_with_conf_and_pause(ui: Ui) -> None:
    done = call(ui, "POST", f"/ui/api/dags/{DAG_ID}/trigger", body={"conf": {"day": 3}})
    assert done.status_code == 200, done.text
    run_id = done.json()["run_id"]
    with session_scope(ui.factory) as session:
        run = session.scalar(select(DagRun).where(DagRun.run_id == run_id))
        assert run is not None and run.conf == {"day": 3} and run.run_type == "manual"
    paused = call(ui, "POST", f"/ui/api/dags/{DAG_ID}/pause", body={"is_paused": True})
    assert paused.json() == {"dag_id": DAG_ID, "is_paused": True}
    with session_scope(ui.factory) as session:
        dag = session.get(DagModel, DAG_ID)
        assert dag is not None and dag.is_paused


def test_trigger_of_a_dag_with_import_errors_is_refused_as_the_rest_api_does(ui: Ui) -> None:
    with session_scope(ui.factory) as session:
        dag = session.get(DagModel, DAG_ID)
        assert dag is not None
        dag.has_import_errors = True
    by_ui = call(ui, "POST", f"/ui/api/dags/{DAG_ID}/trigger", body={})
    by_rest = call(ui, "POST", f"/api/v1/dags/{DAG_ID}/dagRuns", body={})
    assert (by_ui.status_code, by_rest.status_code) == (400, 400), (by_ui.text, by_rest.text)
    assert by_ui.json()["detail"] == by_rest.json()["detail"]
    assert "has import errors" in by_ui.json()["detail"]
    with session_scope(ui.factory) as session:
        assert session.scalar(select(DagRun.run_id).where(
            DagRun.dag_id == DAG_ID, DagRun.run_type == "manual")) is None


def test_mark_success_clears_the_failed_downstream_and_clear_takes_upstream(ui: Ui) -> None:
    marked = call(ui, "POST", ti_url(ui, "transform") + "/mark", body={"state": "success"})
    assert marked.status_code == 200, marked.text
    assert [c["task_id"] for c in marked.json()["changed"]] == ["transform"]
    assert marked.json()["cleared_downstream"] == ["load"]
    assert ui.ti_state("transform", ui.failed_run) == "success"
    assert ui.ti_state("load", ui.failed_run) == "none"
    cleared = call(ui, "POST", ti_url(ui, "transform") + "/clear", body={"upstream": True})
    assert sorted(c["task_id"] for c in cleared.json()["cleared"]) == ["extract", "transform"]
    assert ui.ti_state("extract", ui.failed_run) == "none"
    assert ui.ti_state("report", ui.failed_run) == "success"


def test_the_grid_of_25_runs_by_200_tasks_is_quick(ui: Ui) -> None:
    add_big_dag(ui.factory)
    call(ui, "GET", f"/ui/api/dags/{BIG_DAG}/grid")  # the task order is worked out once
    started = time.monotonic()
    grid = call(ui, "GET", f"/ui/api/dags/{BIG_DAG}/grid").json()
    elapsed = time.monotonic() - started
    assert len(grid["runs"]) == 25 and len(grid["tasks"]) == 200
    assert grid["runs"][-1]["logical_date"].startswith("2024-03-30")
    assert elapsed < 1.0, f"the grid took {elapsed:.2f}s"
