"""The runs endpoints of the web UI (``/ui/api/runs``, a run's panel, the run actions)
without a browser: the list's shape, filters and paging, bad filter values answered 400
naming the filter, the run actions' preview (``dry_run``) changing nothing, clear (only
failed) and mark success / failed on whole runs with their audit entries, and the role and
CSRF rules of every UI action."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from squall.common.db import session_scope
from squall.common.models import AuditLog, DagRun
from squall.common.state import DagRunState, DagRunType
from squall.runs.run_creation import create_dag_run
from tests.browser.conftest import DAG_ID, DAY, Ui, make_dag
from tests.support.api import PASSWORD, basic

pytestmark = [pytest.mark.browser, pytest.mark.postgres,
              pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]

REPORTS = "ui_reports"


def call(ui: Ui, method: str, path: str, user: str = "op", body: dict[str, Any] | None = None,
         params: dict[str, Any] | None = None) -> httpx.Response:
    return ui.api.client.request(method, path, json=body, params=params, headers=basic(user))


def add_runs(ui: Ui) -> tuple[str, str]:
    """A manual run of ``ui_reports`` (running) and a backfill run of ``ui_etl`` (queued),
    newer than the three scheduled ones; their run ids."""
    with session_scope(ui.factory) as session:
        manual = create_dag_run(session, make_dag(REPORTS), run_type=DagRunType.MANUAL,
                                logical_date=DAY + timedelta(days=10), data_interval=None,
                                state=DagRunState.RUNNING, conf={"day": 10},
                                external_trigger=True)
        backfill = create_dag_run(session, make_dag(), run_type=DagRunType.BACKFILL,
                                  logical_date=DAY + timedelta(days=5), data_interval=None)
        return manual.run_id, backfill.run_id


def run_state(ui: Ui, dag_id: str, run_id: str) -> str:
    with session_scope(ui.factory) as session:
        return str(session.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id,
                                                             DagRun.run_id == run_id)))


def audit_rows(ui: Ui) -> list[tuple[str, str | None, str | None, str | None, dict[str, Any]]]:
    with session_scope(ui.factory) as session:
        return [(r.event, r.owner, r.dag_id, r.run_id, json.loads(r.extra or "{}"))
                for r in session.scalars(select(AuditLog).order_by(AuditLog.id))]


def listed(ui: Ui, **params: Any) -> list[str]:
    answer = call(ui, "GET", "/ui/api/runs", user="viewer", params=params)
    assert answer.status_code == 200, answer.text
    return [r["run_id"] for r in answer.json()["runs"]]


def test_the_runs_list_newest_first_with_each_filter_and_pages(ui: Ui) -> None:
    manual, backfill = add_runs(ui)
    everything = call(ui, "GET", "/ui/api/runs", user="viewer").json()
    assert everything["user"] == {"username": "viewer", "role": "viewer", "may_act": False}
    assert everything["total"] == 5 and everything["page"] == 1 and everything["limit"] == 25
    assert everything["dag_ids"] == [DAG_ID, REPORTS]
    assert [r["run_id"] for r in everything["runs"]][:2] == [manual, backfill]
    first = everything["runs"][0]
    assert {k: first[k] for k in ("dag_id", "run_id", "state", "run_type", "end_date",
                                  "duration", "external_trigger", "conf", "backfill_id")} == {
        "dag_id": REPORTS, "run_id": manual, "state": "running", "run_type": "manual",
        "end_date": None, "duration": None, "external_trigger": True, "conf": {"day": 10},
        "backfill_id": None}
    assert first["data_interval_start"].startswith("2024-03-10")
    assert first["data_interval_end"].startswith("2024-03-11")
    assert first["start_date"] and first["queued_at"]
    assert first["logical_date"].startswith("2024-03-11")
    assert listed(ui, dag_id=REPORTS) == [manual]
    assert listed(ui, state="failed") == [ui.failed_run]
    assert listed(ui, run_type="backfill") == [backfill]
    assert listed(ui, run_type="scheduled", state="success") == [
        "scheduled__2024-03-02T00:00:00+00:00", "scheduled__2024-03-01T00:00:00+00:00"]
    assert listed(ui, logical_date_gte="2024-03-02", logical_date_lte="2024-03-06T00:00") == [
        backfill, ui.failed_run, "scheduled__2024-03-02T00:00:00+00:00"]
    assert listed(ui, dag_id="", state="") == listed(ui)  # an empty filter is no filter
    second = call(ui, "GET", "/ui/api/runs", params={"limit": 2, "page": 2}).json()
    assert second["total"] == 5 and [r["run_id"] for r in second["runs"]] == [
        ui.failed_run, "scheduled__2024-03-02T00:00:00+00:00"]
    assert listed(ui, dag_id="nope") == []


@pytest.mark.parametrize(("params", "message"), [
    ({"state": "bogus"}, "state 'bogus' is not one of: queued, running, success, failed"),
    ({"run_type": "cron"}, "run_type 'cron' is not one of: manual, scheduled, backfill, "
                           "dataset_triggered"),
    ({"logical_date_gte": "yesterday"}, "logical_date_gte 'yesterday' is not an ISO 8601"),
    ({"logical_date_lte": "2024-13-01"}, "logical_date_lte '2024-13-01' is not an ISO 8601"),
    ({"logical_date_gte": "2024-03-05", "logical_date_lte": "2024-03-01"},
     "logical_date_gte is after logical_date_lte"),
    ({"page": "x"}, "page"),
    ({"limit": 0}, "limit"),
    ({"limit": 101}, "limit"),
])
def test_a_bad_filter_value_is_a_400_naming_it(ui: Ui, params: dict[str, Any],
                                               message: str) -> None:
    answer = call(ui, "GET", "/ui/api/runs", user="viewer", params=params)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["detail"]


def test_a_run_as_its_panel_shows_it(ui: Ui) -> None:
    url = f"/ui/api/dags/{DAG_ID}/runs/{ui.failed_run}"
    answer = call(ui, "GET", url, user="viewer")
    assert answer.status_code == 200, answer.text
    run = answer.json()
    assert run["run_id"] == ui.failed_run and run["state"] == "failed"
    assert run["run_type"] == "scheduled" and run["logical_date"].startswith("2024-03-03")
    assert run["task_states"] == {"success": 2, "failed": 1, "upstream_failed": 1}
    assert run["user"]["may_act"] is False and run["note"] is None
    assert call(ui, "GET", f"/ui/api/dags/{DAG_ID}/runs/nope").status_code == 404
    assert call(ui, "GET", f"/ui/api/dags/nope/runs/{ui.failed_run}").status_code == 404


def test_clear_only_failed_previews_then_clears_and_is_audited(ui: Ui) -> None:
    target = {"runs": [{"dag_id": DAG_ID, "run_id": ui.failed_run}], "only_failed": True}
    preview = call(ui, "POST", "/ui/api/runs/clear", body={**target, "dry_run": True})
    assert preview.status_code == 200, preview.text
    assert preview.json() == {
        "dry_run": True, "total_task_instances": 2,
        "task_instances": [
            {"dag_id": DAG_ID, "run_id": ui.failed_run, "task_id": t, "map_index": -1,
             "state": s, "new_state": "none"}
            for t, s in (("load", "upstream_failed"), ("transform", "failed"))],
        "runs": [{"dag_id": DAG_ID, "run_id": ui.failed_run, "state": "failed",
                  "new_state": "queued"}]}
    assert ui.ti_state("transform", ui.failed_run) == "failed"  # a preview changes nothing
    assert audit_rows(ui) == []
    done = call(ui, "POST", "/ui/api/runs/clear", body=target)
    assert done.status_code == 200, done.text
    assert sorted(c["task_id"] for c in done.json()["cleared"]) == ["load", "transform"]
    assert done.json()["runs_queued_again"] == [{"dag_id": DAG_ID, "run_id": ui.failed_run}]
    assert [ui.ti_state(t, ui.failed_run) for t in ("extract", "transform", "load")] == [
        "success", "none", "none"]
    assert run_state(ui, DAG_ID, ui.failed_run) == "queued"
    assert audit_rows(ui) == [("dagrun_clear", "op", DAG_ID, ui.failed_run, {
        "source": "ui", "only_failed": True, "cleared": 2})]


def test_clear_every_task_of_two_runs(ui: Ui) -> None:
    first = "scheduled__2024-03-01T00:00:00+00:00"
    runs = [{"dag_id": DAG_ID, "run_id": first}, {"dag_id": DAG_ID, "run_id": ui.failed_run}]
    preview = call(ui, "POST", "/ui/api/runs/clear", body={"runs": runs, "dry_run": True}).json()
    assert preview["total_task_instances"] == 8
    assert {r["new_state"] for r in preview["runs"]} == {"queued"}
    done = call(ui, "POST", "/ui/api/runs/clear", body={"runs": runs})
    assert len(done.json()["cleared"]) == 8
    assert ui.ti_state("report", first) == "none" and ui.ti_state("report", ui.failed_run) == "none"
    assert [(e, r) for e, _, _, r, _ in audit_rows(ui)] == [("dagrun_clear", first),
                                                          ("dagrun_clear", ui.failed_run)]


def test_mark_success_and_failed_preview_then_mark_and_are_audited(ui: Ui) -> None:
    failed = {"runs": [{"dag_id": DAG_ID, "run_id": ui.failed_run}], "state": "success"}
    preview = call(ui, "POST", "/ui/api/runs/mark", body={**failed, "dry_run": True}).json()
    assert [(t["task_id"], t["state"], t["new_state"]) for t in preview["task_instances"]] == [
        ("load", "upstream_failed", "success"), ("transform", "failed", "success")]
    assert preview["runs"][0]["new_state"] == "success"
    assert run_state(ui, DAG_ID, ui.failed_run) == "failed"
    done = call(ui, "POST", "/ui/api/runs/mark", body=failed)
    assert done.json() == {"dry_run": False, "state": "success", "changed_meanwhile": [],
                           "marked": [{"dag_id": DAG_ID, "run_id": ui.failed_run,
                                       "changed": 2}]}
    assert run_state(ui, DAG_ID, ui.failed_run) == "success"
    assert ui.ti_state("load", ui.failed_run) == "success"
    first = "scheduled__2024-03-01T00:00:00+00:00"
    to_fail = {"runs": [{"dag_id": DAG_ID, "run_id": first}], "state": "failed"}
    preview = call(ui, "POST", "/ui/api/runs/mark", body={**to_fail, "dry_run": True}).json()
    assert preview["total_task_instances"] == 0  # finished task instances stay as they are
    assert preview["runs"] == [{"dag_id": DAG_ID, "run_id": first, "state": "success",
                                "new_state": "failed"}]
    assert call(ui, "POST", "/ui/api/runs/mark", body=to_fail).status_code == 200
    assert run_state(ui, DAG_ID, first) == "failed"
    assert audit_rows(ui) == [
        ("dagrun_success", "op", DAG_ID, ui.failed_run, {"source": "ui", "changed": 2}),
        ("dagrun_failed", "op", DAG_ID, first, {"source": "ui", "changed": 0})]


def test_run_actions_need_the_op_role_and_good_input(ui: Ui) -> None:
    one = [{"dag_id": DAG_ID, "run_id": ui.failed_run}]
    for path, body in (("/ui/api/runs/clear", {"runs": one}),
                       ("/ui/api/runs/clear", {"runs": one, "dry_run": True}),
                       ("/ui/api/runs/mark", {"runs": one, "state": "success"})):
        denied = call(ui, "POST", path, user="viewer", body=body)
        assert denied.status_code == 403, (path, denied.text)
    for path, body, status, message in (
            ("/ui/api/runs/clear", {}, 400, "runs must be a non-empty list"),
            ("/ui/api/runs/clear", {"runs": []}, 400, "runs must be a non-empty list"),
            ("/ui/api/runs/clear", {"runs": [{"dag_id": DAG_ID}]}, 400, "each of runs"),
            ("/ui/api/runs/clear", {"runs": one * 101}, 400, "at most 100 runs"),
            ("/ui/api/runs/clear", {"runs": one, "only_failed": "yes"}, 400, "only_failed"),
            ("/ui/api/runs/mark", {"runs": one, "state": "running"}, 400,
             "state must be success or failed"),
            ("/ui/api/runs/mark", {"runs": one, "state": "failed", "dry_run": 1}, 400,
             "dry_run must be true or false"),
            ("/ui/api/runs/mark", {"runs": [{"dag_id": DAG_ID, "run_id": "nope"}],
                                   "state": "failed"}, 404, "'nope' not found"),
            ("/ui/api/runs/clear", {"runs": [{"dag_id": "nope", "run_id": "x"}]}, 404,
             "nope")):
        answer = call(ui, "POST", path, body=body)
        assert answer.status_code == status, (path, body, answer.text)
        assert message in answer.json()["detail"], answer.text
    assert run_state(ui, DAG_ID, ui.failed_run) == "failed"
    assert ui.ti_state("transform", ui.failed_run) == "failed"
    assert audit_rows(ui) == []


def test_run_actions_by_the_session_cookie_need_the_csrf_token(ui: Ui) -> None:
    with httpx.Client(base_url=ui.url, timeout=30) as client:
        form = client.get("/login").text
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form)
        assert token
        client.post("/login", data={"username": "op", "password": PASSWORD,
                                    "csrf_token": token.group(1)})
        csrf = re.search(r'name="csrf-token" content="([0-9a-f]+)"', client.get("/dagruns").text)
        assert csrf
        body = {"runs": [{"dag_id": DAG_ID, "run_id": ui.failed_run}], "state": "success"}
        missing = client.post("/ui/api/runs/mark", json=body)
        assert missing.status_code == 403 and "CSRF" in missing.json()["detail"]
        forged = client.post("/ui/api/runs/clear", json=body,
                             headers={"X-CSRF-Token": "0" * 64})
        assert forged.status_code == 403
        assert run_state(ui, DAG_ID, ui.failed_run) == "failed"
        ok = client.post("/ui/api/runs/mark", json=body, headers={"X-CSRF-Token": csrf.group(1)})
        assert ok.status_code == 200, ok.text
        assert run_state(ui, DAG_ID, ui.failed_run) == "success"
        assert client.get("/ui/api/runs").json()["user"]["may_act"] is True
    with httpx.Client(base_url=ui.url, timeout=30) as anonymous:
        assert anonymous.get("/dagruns").headers.get("location") == "/login"
        assert anonymous.get("/ui/api/runs").status_code == 401
