"""``dag_display_name`` and ``task_display_name`` (Airflow 2.9+) through the REST API: a DAG
or task that sets one shows it, the others show their ids (Airflow's
``DagModel.dag_display_name`` / ``BaseOperator.task_display_name`` fall back to the id).
The web UI's DAG list shows the display name (linking to the DAG by its id). On SQLite and
PostgreSQL (the names are read from the serialized DAG's JSON)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pendulum
import pytest

from squall.common.db import SessionFactory
from squall.common.settings import Settings
from squall.sdk.dag import DAG
from squall.sdk.operators.empty import EmptyOperator
from tests.support.api import Api, basic, serve
from tests.support.scheduling import sync_dags

pytestmark = pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)

V1 = "/api/v1"


@pytest.fixture
def api(tmp_path: Path, session_factory: SessionFactory) -> Iterator[Api]:
    start = pendulum.datetime(2024, 1, 1, tz="UTC")
    with DAG("named", dag_display_name="Sales report ✓", start_date=start,
             schedule=None) as named:
        EmptyOperator(task_id="load", task_display_name="Load the sales")
        EmptyOperator(task_id="plain")
    with DAG("unnamed", start_date=start, schedule=None) as unnamed:
        EmptyOperator(task_id="only")
    sync_dags(session_factory, named, unnamed)
    with serve(Settings.load(env={"SQUALL_HOME": str(tmp_path)}), session_factory) as client:
        yield client


def test_display_names_through_the_api(api: Api) -> None:
    listed = {d["dag_id"]: d["dag_display_name"] for d in api.get(f"{V1}/dags").json()["dags"]}
    assert listed == {"named": "Sales report ✓", "unnamed": "unnamed"}
    assert api.get(f"{V1}/dags/named").json()["dag_display_name"] == "Sales report ✓"
    assert api.get(f"{V1}/dags/unnamed").json()["dag_display_name"] == "unnamed"
    assert api.get(f"{V1}/dags/named/details").json()["dag_display_name"] == "Sales report ✓"
    tasks = {t["task_id"]: t["task_display_name"]
             for t in api.get(f"{V1}/dags/named/tasks").json()["tasks"]}
    assert tasks == {"load": "Load the sales", "plain": "plain"}
    assert api.get(f"{V1}/dags/named/tasks/load").json()["task_display_name"] == \
        "Load the sales"
    patched = api.patch(f"{V1}/dags/named", json={"is_paused": True}, user="op")
    assert patched.json()["dag_display_name"] == "Sales report ✓"


def test_task_instances_carry_their_tasks_display_names(api: Api) -> None:
    made = api.post(f"{V1}/dags/named/dagRuns", json={"dag_run_id": "r1"}, user="op")
    assert made.status_code == 200, made.text
    tis = api.get(f"{V1}/dags/named/dagRuns/r1/taskInstances").json()["task_instances"]
    assert {t["task_id"]: t["task_display_name"] for t in tis} == {
        "load": "Load the sales", "plain": "plain"}
    one = api.get(f"{V1}/dags/named/dagRuns/r1/taskInstances/load").json()
    assert one["task_display_name"] == "Load the sales"


def test_the_ui_lists_dags_by_display_name(api: Api) -> None:
    listing = api.client.get("/ui/api/dags", headers=basic("viewer")).json()
    assert {d["dag_id"]: d["dag_display_name"] for d in listing["dags"]} == {
        "named": "Sales report ✓", "unnamed": "unnamed"}
