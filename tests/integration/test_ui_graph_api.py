"""The graph page's endpoints (``/ui/api/dags/ID/graph`` and ``.../graph/states``) and the
API's documentation pages served from the package, over HTTP on SQLite and PostgreSQL:
the layout's shape (tasks, collapsed and expanded groups, edges with their ``Label``), the
states of a run (a mapped task counted, a group's aggregate state), a 404 with a clear
message for an unknown DAG or run; the Swagger UI and ReDoc pages reference no URL that is
not on this server, and their files are served."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, update

from squall.common.db import SessionFactory, session_scope
from squall.common.models import TaskInstance
from squall.common.settings import Settings
from squall.common.state import DagRunState, DagRunType
from squall.runs.run_creation import create_dag_run
from squall.sdk.dag import DAG
from squall.sdk.edges import Label
from squall.sdk.taskgroup import TaskGroup
from tests.browser.conftest import DAY
from tests.support.api import Api, basic, serve
from tests.support.scheduling import Noop, sync_dags

pytestmark = pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)

DAG_ID = "graph_api"


def graph_dag() -> DAG:
    """start >> [load.fetch >> load.clean] >> Label("when clean") >> report, a setup and a
    teardown around them, and ``fan``."""
    with DAG(DAG_ID, schedule=None, start_date=DAY) as dag:
        setup = Noop(task_id="create_cluster")
        start = Noop(task_id="start")
        with TaskGroup("load", tooltip="fetch and clean") as load:
            Noop(task_id="fetch") >> Noop(task_id="clean")
        report = Noop(task_id="report")
        fan = Noop(task_id="fan")
        teardown = Noop(task_id="delete_cluster")
        setup >> start >> load >> Label("when clean") >> report >> fan >> teardown
        teardown.as_teardown(setups=setup)
    return dag


def ui_get(api: Api, url: str, **params: str) -> httpx.Response:
    """A UI endpoint (not in the OpenAPI document) as a viewer."""
    return api.client.get(url, params=params or None, headers=basic("viewer"))


@pytest.fixture
def api(tmp_path: Path, session_factory: SessionFactory) -> Iterator[Api]:
    dag = graph_dag()
    sync_dags(session_factory, dag)
    with session_scope(session_factory) as session:
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL, logical_date=DAY,
                             data_interval=None, state=DagRunState.RUNNING)
        session.execute(update(TaskInstance).where(
            TaskInstance.run_id == run.run_id, TaskInstance.task_id == "load.clean")
            .values(state="failed"))
        session.execute(update(TaskInstance).where(
            TaskInstance.run_id == run.run_id, TaskInstance.task_id == "load.fetch")
            .values(state="success"))
        session.execute(delete(TaskInstance).where(TaskInstance.run_id == run.run_id,
                                                   TaskInstance.task_id == "fan"))
        for index, state in enumerate(["success", "running", "success"]):
            session.add(TaskInstance(dag_id=DAG_ID, task_id="fan", run_id=run.run_id,
                                     map_index=index, state=state, operator="Noop"))
    with serve(Settings.load(env={"SQUALL_HOME": str(tmp_path)}), session_factory) as client:
        yield client


def test_the_graph_collapsed_and_expanded(api: Api) -> None:
    collapsed = ui_get(api, f"/ui/api/dags/{DAG_ID}/graph")
    assert collapsed.status_code == 200, collapsed.text
    body = collapsed.json()
    assert body["expanded"] == [] and body["version"]
    assert body["groups"] == {"load": {"label": "load", "tooltip": "fetch and clean",
                                       "parent": None, "mapped": False, "tasks": 2}}
    assert body["tasks"]["create_cluster"]["kind"] == "setup"
    assert body["tasks"]["delete_cluster"]["kind"] == "teardown"
    assert body["tasks"]["load.clean"] == {"label": "clean", "operator": "Noop",
                                           "group": "load", "kind": None, "mapped": False}
    nodes = {n["id"]: n for n in body["layout"]["nodes"]}
    assert set(nodes) == {"create_cluster", "start", "load", "report", "fan",
                          "delete_cluster"}
    assert nodes["load"]["type"] == "group" and not nodes["load"]["expanded"]
    # left to right: each task right of its upstream
    assert nodes["start"]["x"] < nodes["load"]["x"] < nodes["report"]["x"] < nodes["fan"]["x"]
    edges = {(e["from"], e["to"]): e for e in body["layout"]["edges"]}
    assert ("start", "load") in edges and ("load", "report") in edges
    assert edges[("load", "report")]["label"] == "when clean"
    x, _ = edges[("load", "report")]["label_pos"]
    assert nodes["load"]["x"] + nodes["load"]["w"] < x < nodes["report"]["x"]

    opened = ui_get(api, f"/ui/api/dags/{DAG_ID}/graph?expanded=load&expanded=nope").json()
    assert opened["expanded"] == ["load"]  # an unknown group is ignored
    nodes = {n["id"]: n for n in opened["layout"]["nodes"]}
    assert {"load", "load.fetch", "load.clean"} <= set(nodes) and nodes["load"]["expanded"]
    box = nodes["load"]
    for inner in ("load.fetch", "load.clean"):
        n = nodes[inner]
        assert box["x"] < n["x"] and n["x"] + n["w"] < box["x"] + box["w"]
        assert box["y"] < n["y"] and n["y"] + n["h"] < box["y"] + box["h"]
    edges = {(e["from"], e["to"]): e for e in opened["layout"]["edges"]}
    assert edges[("load.clean", "report")]["label"] == "when clean"
    into = edges[("start", "load.fetch")]["points"]
    assert into[0][0] == nodes["start"]["x"] + nodes["start"]["w"]  # leaves start's right
    assert into[-1][0] == nodes["load.fetch"]["x"]                  # enters fetch's left
    assert [box["x"], pytest.approx(into[1][1])] == into[1]         # through the box's left


def test_the_states_of_a_run(api: Api) -> None:
    got = ui_get(api, f"/ui/api/dags/{DAG_ID}/graph/states")
    assert got.status_code == 200, got.text
    body = got.json()
    assert [r["run_id"] for r in body["runs"]] == [body["run_id"]]
    assert body["tasks"]["load.clean"] == {"state": "failed", "mapped": None}
    assert body["tasks"]["fan"] == {"state": "running", "mapped": {
        "count": 3, "states": {"success": 2, "running": 1}}}
    # a group takes the state that matters most among its tasks' (failed before success)
    assert body["groups"]["load"] == {"state": "failed", "states": {"success": 1,
                                                                    "failed": 1}}
    same = ui_get(api, f"/ui/api/dags/{DAG_ID}/graph/states",
                  run_id=body["run_id"]).json()
    assert same["tasks"] == body["tasks"]


def test_unknown_dags_and_runs_are_404s_with_a_clear_message(api: Api) -> None:
    for url in ("/ui/api/dags/nope/graph", "/ui/api/dags/nope/graph/states"):
        got = ui_get(api, url)
        assert got.status_code == 404
        assert got.json()["detail"] == "DAG with dag_id: 'nope' not found"
    got = ui_get(api, f"/ui/api/dags/{DAG_ID}/graph/states", run_id="nope")
    assert got.status_code == 404
    assert got.json()["detail"] == f"DAG run 'nope' of DAG '{DAG_ID}' not found"
    assert api.client.get(f"/ui/api/dags/{DAG_ID}/graph").status_code == 401


def test_the_api_docs_pages_are_served_from_the_package(api: Api) -> None:
    for page, script in (("/api/v1/ui", "swagger-ui-bundle.js"),
                         ("/api/v1/redoc", "redoc.standalone.js")):
        got = api.client.get(page)
        assert got.status_code == 200 and "text/html" in got.headers["content-type"]
        urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*["']([^"']+)["']""", got.text)
        assert f"/api/v1/ui/static/{script}" in urls and "/api/v1/openapi.json" in urls
        assert [u for u in urls if not u.startswith("/")] == [], page
        assert "http://" not in got.text and "https://" not in got.text
    assert "validatorUrl\": null" in api.client.get("/api/v1/ui").text
    for name, kind in (("swagger-ui-bundle.js", "text/javascript"),
                       ("swagger-ui.css", "text/css"),
                       ("redoc.standalone.js", "text/javascript"),
                       ("favicon.png", "image/png")):
        got = api.client.get(f"/api/v1/ui/static/{name}")
        assert got.status_code == 200 and got.headers["content-type"].startswith(kind)
        assert len(got.content) > 1000
    assert api.client.get("/api/v1/ui/static/..%2Fcore.py").status_code == 404
    assert api.client.get("/api/v1/ui/static/index.html").status_code == 404
