"""The dataset endpoints through a real uvicorn (every answer checked against the served
OpenAPI document), on rows written as the DAG processor and the scheduler write them
(tests/support/datasets.py).

The shapes, filters, statuses and messages are Airflow 2.10.5's
(``airflow/api_connexion/endpoints/dataset_endpoint.py``, ``schemas/dataset_schema.py``;
the shapes were dumped from its schemas on the same rows in the reference virtualenv)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.models import DagModel, DatasetDagRunQueue, DatasetEvent, DatasetModel
from squall.common.settings import Settings
from squall.sdk.dag import DAG
from tests.support.api import Api, basic, serve
from tests.support.datasets import CLEAN, RAW, REPORT, START, UNUSED, World, build_world
from tests.support.scheduling import sync_dags

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00"


@pytest.fixture
def api(tmp_path: Path, session_factory: SessionFactory) -> Iterator[Api]:
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)},
                             overrides={"api": {"page_size": 3, "maximum_page_limit": 10}})
    with serve(settings, session_factory) as client:
        yield client


@pytest.fixture
def world(session_factory: SessionFactory) -> World:
    return build_world(session_factory)


def enc(uri: str) -> str:
    """A URI as Airflow's client puts it in a path (every reserved character escaped)."""
    return quote(uri, safe="")


def _queue(factory: SessionFactory) -> set[tuple[str, str]]:
    with session_scope(factory) as session:
        return {(uri, dag) for uri, dag in session.execute(
            select(DatasetModel.uri, DatasetDagRunQueue.target_dag_id)
            .join(DatasetModel, DatasetModel.id == DatasetDagRunQueue.dataset_id))}


def test_list_and_get_datasets(api: Api, world: World) -> None:
    listed = api.get("/api/v1/datasets?limit=10", user="viewer")
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["total_entries"] == 4
    by_uri = {d["uri"]: d for d in body["datasets"]}
    assert list(by_uri) == [RAW, CLEAN, REPORT, UNUSED]  # by id, the default order
    raw = by_uri[RAW]
    assert set(raw) == {"id", "uri", "extra", "created_at", "updated_at", "producing_tasks",
                        "consuming_dags", "aliases"}
    assert [(p["dag_id"], p["task_id"]) for p in raw["producing_tasks"]] == [
        ("ingest", "extract")]
    assert set(raw["producing_tasks"][0]) == {"dag_id", "task_id", "created_at", "updated_at"}
    assert [c["dag_id"] for c in raw["consuming_dags"]] == ["report_all", "report_any"]
    assert set(raw["consuming_dags"][0]) == {"dag_id", "created_at", "updated_at"}
    assert raw["aliases"] == [] and raw["extra"] == {}
    assert [a["name"] for a in by_uri[CLEAN]["aliases"]] == ["lake-clean"]
    assert by_uri[UNUSED]["extra"] == {"owner": "nobody"}
    assert by_uri[UNUSED]["producing_tasks"] == by_uri[UNUSED]["consuming_dags"] == []

    # filters: uri_pattern (a part of the URI, any case), dag_ids (consumed or produced)
    lake = api.get("/api/v1/datasets?uri_pattern=LAKE").json()
    assert [d["uri"] for d in lake["datasets"]] == [RAW, CLEAN] and lake["total_entries"] == 2
    assert api.get("/api/v1/datasets?uri_pattern=%25").json()["total_entries"] == 0
    dags = api.get("/api/v1/datasets?dag_ids=publish,report_any").json()
    assert [d["uri"] for d in dags["datasets"]] == [RAW, REPORT]
    # pages ([api] page_size 3) and order
    first = api.get("/api/v1/datasets").json()
    assert len(first["datasets"]) == 3 and first["total_entries"] == 4
    page = api.get("/api/v1/datasets?order_by=-uri&limit=2&offset=1").json()
    assert [d["uri"] for d in page["datasets"]] == [CLEAN, UNUSED]  # s3 > postgres > file
    bad = api.get("/api/v1/datasets?order_by=nope")
    assert bad.status_code == 400 and "order_by 'nope'" in bad.json()["detail"]
    assert api.get("/api/v1/datasets?limit=11").status_code == 400
    assert api.get("/api/v1/datasets", user=None).status_code == 401

    # one, by its URL-encoded URI (or with its slashes as they are)
    one = api.get(f"/api/v1/datasets/{enc(CLEAN)}", user="viewer")
    assert one.status_code == 200 and one.json() == by_uri[CLEAN]
    # (the test client's check of the answer needs the URI encoded: ask without it)
    plain = api.client.get(f"/api/v1/datasets/{REPORT}", headers=basic("viewer"))
    assert plain.status_code == 200 and plain.json()["uri"] == REPORT
    missing = api.get(f"/api/v1/datasets/{enc('s3://nowhere')}")
    assert missing.status_code == 404
    assert missing.json()["title"] == "Dataset not found"
    assert missing.json()["detail"] == "The Dataset with uri: `s3://nowhere` was not found"


def test_list_dataset_events(api: Api, world: World, session_factory: SessionFactory) -> None:
    events = api.get("/api/v1/datasets/events", user="viewer")
    assert events.status_code == 200, events.text
    body = events.json()
    assert body["total_entries"] == 2
    raw, clean = body["dataset_events"]  # oldest first (order_by timestamp)
    assert raw == {
        "id": world.raw_event, "dataset_id": raw["dataset_id"], "dataset_uri": RAW,
        "extra": {"rows": 10}, "source_task_id": "extract", "source_dag_id": "ingest",
        "source_run_id": "manual__1", "source_map_index": -1,
        "created_dagruns": [{
            "dag_run_id": world.run_id, "dag_id": "report_all",
            "logical_date": "2024-01-01T02:00:00+00:00", "start_date": None,
            "end_date": None, "state": "queued",
            "data_interval_start": "2024-01-01T02:00:00+00:00",
            "data_interval_end": "2024-01-01T02:00:00+00:00"}],
        "timestamp": "2024-01-01T01:00:00+00:00"}
    assert clean["id"] == world.clean_event and clean["created_dagruns"] == []
    newest = api.get("/api/v1/datasets/events?order_by=-timestamp&limit=1").json()
    assert [e["id"] for e in newest["dataset_events"]] == [world.clean_event]
    assert newest["total_entries"] == 2
    for query, wanted in (
            (f"dataset_id={raw['dataset_id']}", [world.raw_event]),
            ("source_dag_id=ingest", [world.raw_event, world.clean_event]),
            ("source_task_id=transform", [world.clean_event]),
            ("source_run_id=manual__1&source_map_index=-1",
             [world.raw_event, world.clean_event]),
            ("source_map_index=0", []),
            ("source_dag_id=nope", [])):
        got = api.get(f"/api/v1/datasets/events?{query}").json()
        assert [e["id"] for e in got["dataset_events"]] == wanted, query
        assert got["total_entries"] == len(wanted)
    assert api.get("/api/v1/datasets/events?order_by=uri").status_code == 400
    assert api.get("/api/v1/datasets/events?dataset_id=x").status_code == 400

    # the run's upstream events: the ones it was created from
    upstream = api.get(f"/api/v1/dags/report_all/dagRuns/{world.run_id}"
                       "/upstreamDatasetEvents", user="viewer")
    assert upstream.status_code == 200
    assert upstream.json() == {"dataset_events": [raw], "total_entries": 1}
    with session_scope(session_factory) as session:
        assert session.get(DatasetEvent, world.raw_event) is not None
    none = api.get("/api/v1/dags/ingest/dagRuns/manual__1/upstreamDatasetEvents").json()
    assert none == {"dataset_events": [], "total_entries": 0}
    lost = api.get("/api/v1/dags/ingest/dagRuns/nope/upstreamDatasetEvents")
    assert lost.status_code == 404 and "DagRun ID: 'nope' not found" in lost.json()["detail"]


def test_create_dataset_event_queues_its_consumers(api: Api, world: World,
                                                   session_factory: SessionFactory) -> None:
    """An event from outside is marked ``from_rest_api`` (dataset_endpoint.py
    create_dataset_event) and queued for each active, unpaused consumer (Airflow's
    DatasetManager.register_dataset_change: report_any is paused, so only report_all)."""
    assert _queue(session_factory) == {(CLEAN, "report_all"), (CLEAN, "by_alias")}
    denied = api.post("/api/v1/datasets/events", user="viewer", json={"dataset_uri": RAW})
    assert denied.status_code == 403 and "needs the op role" in denied.text
    made = api.post("/api/v1/datasets/events", user="op",
                    json={"dataset_uri": RAW, "extra": {"batch": 7}})
    assert made.status_code == 200, made.text
    event: dict[str, Any] = made.json()
    assert event["dataset_uri"] == RAW and event["extra"] == {"batch": 7,
                                                             "from_rest_api": True}
    assert (event["source_dag_id"], event["source_task_id"], event["source_run_id"],
            event["source_map_index"], event["created_dagruns"]) == (None, None, None, -1, [])
    assert _queue(session_factory) == {(CLEAN, "report_all"), (CLEAN, "by_alias"),
                                       (RAW, "report_all")}
    listed = api.get("/api/v1/datasets/events?order_by=-timestamp&limit=1").json()
    assert listed["dataset_events"] == [event]
    bare = api.post("/api/v1/datasets/events", json={"dataset_uri": REPORT}).json()
    assert bare["extra"] == {"from_rest_api": True}

    unknown = api.post("/api/v1/datasets/events", json={"dataset_uri": "s3://nowhere"})
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "Dataset with uri: 's3://nowhere' not found"
    for body in ({}, {"dataset_uri": RAW, "extra": "text"}, {"dataset_uri": RAW, "x": 1}):
        assert api.post("/api/v1/datasets/events", json=body).status_code == 400, body


def test_queued_events_read_and_delete(api: Api, world: World,
                                       session_factory: SessionFactory) -> None:
    got = api.get("/api/v1/dags/report_all/datasets/queuedEvent", user="viewer")
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["total_entries"] == 1 and set(body) == {"queued_events", "total_entries"}
    assert [(q["uri"], q["dag_id"]) for q in body["queued_events"]] == [(CLEAN, "report_all")]
    assert set(body["queued_events"][0]) == {"uri", "dag_id", "created_at"}
    one = api.get(f"/api/v1/dags/by_alias/datasets/queuedEvent/{enc(CLEAN)}").json()
    assert (one["uri"], one["dag_id"]) == (CLEAN, "by_alias")
    of_dataset = api.get(f"/api/v1/datasets/queuedEvent/{enc(CLEAN)}").json()
    assert [q["dag_id"] for q in of_dataset["queued_events"]] == ["by_alias", "report_all"]
    # before: only the ones queued earlier
    assert api.get("/api/v1/dags/report_all/datasets/queuedEvent?before="
                   "2024-01-01T03:00:00Z").status_code == 404
    later = api.get("/api/v1/dags/report_all/datasets/queuedEvent?before=2024-01-02")
    assert later.json()["total_entries"] == 1
    assert api.get("/api/v1/dags/report_all/datasets/queuedEvent?before=x").status_code == 400

    none = api.get("/api/v1/dags/report_any/datasets/queuedEvent")
    assert none.status_code == 404
    assert none.json() | {"type": ""} == {
        "type": "", "title": "Queue event not found", "status": 404, "instance": None,
        "detail": "Queue event with dag_id: `report_any` was not found"}
    assert api.get(f"/api/v1/dags/report_all/datasets/queuedEvent/{enc(RAW)}"
                   ).status_code == 404
    assert api.get(f"/api/v1/datasets/queuedEvent/{enc(RAW)}").status_code == 404

    # deleting needs op; each answers 204, and 404 when there was nothing to delete
    path = f"/api/v1/dags/by_alias/datasets/queuedEvent/{enc(CLEAN)}"
    assert api.delete(path, user="viewer").status_code == 403
    assert api.delete(path, user="op").status_code == 204
    assert api.delete(path, user="op").status_code == 404
    assert _queue(session_factory) == {(CLEAN, "report_all")}
    assert api.delete("/api/v1/dags/report_all/datasets/queuedEvent?before=2024-01-01"
                      ).status_code == 404
    assert api.delete("/api/v1/dags/report_all/datasets/queuedEvent").status_code == 204
    assert _queue(session_factory) == set()
    # an event from outside names no alias: the DAGs whose schedule references the dataset
    # are queued (airflow/datasets/manager.py register_dataset_change, consuming_dags),
    # by_alias among them since its alias resolved to CLEAN (Airflow 2.10.5 references it
    # when it reparses by_alias; checked: an external event of an alias-resolved dataset
    # queued the alias's consumer)
    api.post("/api/v1/datasets/events", json={"dataset_uri": CLEAN})
    api.post("/api/v1/datasets/events", json={"dataset_uri": RAW})
    assert _queue(session_factory) == {(CLEAN, "report_all"), (CLEAN, "by_alias"),
                                       (RAW, "report_all")}
    assert api.delete(f"/api/v1/datasets/queuedEvent/{enc(CLEAN)}").status_code == 204
    assert _queue(session_factory) == {(RAW, "report_all")}
    assert api.delete(f"/api/v1/datasets/queuedEvent/{enc(CLEAN)}").status_code == 404


def test_dag_details_give_a_dataset_schedules_condition(api: Api,
                                                         session_factory: SessionFactory) -> None:
    """DAGDetail.dataset_expression is DagModel.dataset_expression (airflow/api_connexion/
    schemas/dag_schema.py, a fields.Dict); a lone Dataset's bare URI is not an object."""
    sync_dags(session_factory, DAG("consumer", schedule=None, start_date=START),
              DAG("plain", schedule=None, start_date=START))
    condition = {"any": [RAW, {"all": [CLEAN, {"alias": "lake-clean"}]}]}
    with session_scope(session_factory) as session:
        session.execute(update(DagModel).where(DagModel.dag_id == "consumer")
                        .values(dataset_expression=condition))
    assert api.get("/api/v1/dags/consumer/details").json()["dataset_expression"] == condition
    assert api.get("/api/v1/dags/plain/details").json()["dataset_expression"] is None
    with session_scope(session_factory) as session:
        session.execute(update(DagModel).where(DagModel.dag_id == "consumer")
                        .values(dataset_expression=RAW))
    assert api.get("/api/v1/dags/consumer/details").json()["dataset_expression"] is None


def test_the_grid_says_what_a_consumer_waits_for(api: Api, world: World,
                                                 session_factory: SessionFactory) -> None:
    """The UI's grid data: the schedule's condition with each dataset queued or not, and
    whether each part holds (Airflow's DatasetAll / DatasetAny evaluate: all / any of
    their children; an alias holds when a dataset it resolved to is queued)."""
    def waiting(dag_id: str) -> Any:
        got = api.client.get(f"/ui/api/dags/{dag_id}/grid", headers=basic("viewer"))
        assert got.status_code == 200, got.text
        return got.json()["waiting_for"]

    assert waiting("ingest") is None  # not a consumer
    report_all = waiting("report_all")
    assert (report_all["kind"], report_all["satisfied"]) == ("all", False)
    assert [(c["uri"], c["queued"]) for c in report_all["children"]] == [
        (RAW, False), (CLEAN, True)]
    assert report_all["children"][1]["queued_at"] is not None
    alias = waiting("by_alias")
    assert alias == {"kind": "alias", "name": "lake-clean", "satisfied": True, "datasets": [
        {"kind": "dataset", "uri": CLEAN, "queued": True, "satisfied": True,
         "queued_at": alias["datasets"][0]["queued_at"]}]}
    assert waiting("report_any")["satisfied"] is False  # paused: nothing was queued for it

    nested = {"any": [REPORT, {"all": [CLEAN, {"alias": "never-resolved"}]}]}
    with session_scope(session_factory) as session:
        session.execute(update(DagModel).where(DagModel.dag_id == "report_any")
                        .values(dataset_expression=nested))
    tree = waiting("report_any")
    assert tree["kind"] == "any" and not tree["satisfied"]
    inner = tree["children"][1]
    assert inner["kind"] == "all" and inner["children"][1] == {
        "kind": "alias", "name": "never-resolved", "datasets": [], "satisfied": False}
    api.post("/api/v1/datasets/events", json={"dataset_uri": REPORT})  # report_any paused
    assert waiting("report_any")["satisfied"] is False
    api.patch("/api/v1/dags/report_any", user="op", json={"is_paused": False})
    api.post("/api/v1/datasets/events", json={"dataset_uri": REPORT})
    tree = waiting("report_any")
    assert tree["satisfied"] and tree["children"][0]["queued"]
