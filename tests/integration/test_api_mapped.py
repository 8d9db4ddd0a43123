"""The REST API on the instances of a mapped task (rows with map_index 0..4 inserted
directly), on PostgreSQL through a real uvicorn (tests/support/api.py checks every answer
against the served OpenAPI document).

Airflow 2.10's rules (airflow/api_connexion/endpoints/task_instance_endpoint.py):
``get_task_instance`` on a mapped task is a 404 "Task instance is mapped, add the map_index
value to the URL"; ``get_mapped_task_instances`` lists ``map_index >= 0`` ordered by
map_index (``order_by`` state, duration, start_date, end_date, ``-`` for descending, then by
map_index; ``-map_index``; anything else a 400), and is a 404 for a task that is not there
or not mapped; ``patch_mapped_task_instance`` marks that one instance
(``set_task_instance_state(map_indexes=[map_index])``); ``get_log`` takes ``map_index`` as a
query parameter (log_endpoint.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from squall.common.db import SessionFactory, session_scope
from squall.common.models import TaskInstance, TaskInstanceKey
from squall.common.settings import Settings
from squall.common.state import DagRunState, DagRunType, TaskInstanceState
from squall.execution.runner import task_log_path
from squall.runs.run_creation import create_dag_run
from squall.sdk.dag import DAG
from tests.support.api import Api, basic, serve
from tests.support.scheduling import Noop, sync_dags

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgres"],
                                                           indirect=True)]

TI = TaskInstanceState
DAG_ID = "mapped_api"
NOW = datetime(2024, 2, 10, 12, tzinfo=UTC)
DAY = datetime(2024, 2, 1, tzinfo=UTC)
FAN = [TI.SUCCESS, TI.FAILED, TI.RUNNING, TI.SUCCESS, TI.FAILED]


@dataclass
class World:
    api: Api
    sf: SessionFactory
    run_id: str
    log_folder: Path

    @property
    def base(self) -> str:
        return f"/api/v1/dags/{DAG_ID}/dagRuns/{self.run_id}/taskInstances"

    def fan(self) -> list[str]:
        with session_scope(self.sf) as session:
            return list(session.scalars(select(TaskInstance.state).where(
                TaskInstance.run_id == self.run_id, TaskInstance.task_id == "fan")
                .order_by(TaskInstance.map_index)))


@pytest.fixture
def world(tmp_path: Path, session_factory: SessionFactory) -> Iterator[World]:
    """start >> fan >> end; fan's run rows are 5 mapped instances in the states of FAN
    (index i took i seconds), start succeeded, end has not run."""
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)},
                             overrides={"api": {"page_size": 3, "maximum_page_limit": 10}})
    with DAG(DAG_ID, schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC)) as dag:
        Noop(task_id="start") >> Noop(task_id="fan") >> Noop(task_id="end")
    sync_dags(session_factory, dag, now=NOW)
    with session_scope(session_factory) as session:
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL, logical_date=DAY,
                             data_interval=None, state=DagRunState.RUNNING,
                             external_trigger=True, now=NOW)
        run_id = run.run_id
        session.execute(delete(TaskInstance).where(TaskInstance.run_id == run_id,
                                                   TaskInstance.task_id == "fan"))
        start = session.get_one(TaskInstance, (DAG_ID, "start", run_id, -1))
        start.state, start.try_number = TI.SUCCESS.value, 1
        for index, state in enumerate(FAN):
            session.add(TaskInstance(
                dag_id=DAG_ID, task_id="fan", run_id=run_id, map_index=index,
                state=state.value, try_number=1, max_tries=0, duration=float(index),
                start_date=DAY + timedelta(minutes=index), hostname="w1@127.0.0.1"))
    path = task_log_path(settings.log_folder, TaskInstanceKey(DAG_ID, "fan", run_id, 2), 1)
    path.parent.mkdir(parents=True)
    path.write_text("instance two says hello\n")
    with serve(settings, session_factory) as api:
        yield World(api, session_factory, run_id, settings.log_folder)


def test_every_answer_carries_the_real_map_index(world: World) -> None:
    listed = world.api.get(world.base, params={"limit": 10}).json()
    indexes = sorted((ti["task_id"], ti["map_index"]) for ti in listed["task_instances"])
    assert indexes == [("end", -1)] + [("fan", i) for i in range(5)] + [("start", -1)]
    assert all(ti["rendered_map_index"] is None for ti in listed["task_instances"])
    batch = world.api.post("/api/v1/dags/~/dagRuns/~/taskInstances/list", json={
        "dag_ids": [DAG_ID], "task_ids": ["fan"], "map_index": [1, 3]}).json()
    assert [ti["map_index"] for ti in batch["task_instances"]] == [1, 3]


def test_get_one_instance_and_the_mapped_task_alone_is_a_404(world: World) -> None:
    one = world.api.get(f"{world.base}/fan/2").json()
    assert (one["task_id"], one["map_index"], one["state"]) == ("fan", 2, "running")
    alone = world.api.get(f"{world.base}/fan")
    assert alone.status_code == 404 and "add the map_index value" in alone.json()["detail"]
    assert world.api.get(f"{world.base}/fan/7").status_code == 404
    assert world.api.get(f"{world.base}/start").json()["map_index"] == -1
    # only digits are a map index: other Airflow routes under the task stay 404s
    assert world.api.client.get(f"{world.base}/fan/tries").status_code == 404


def test_list_mapped_filters_orders_and_pages(world: World) -> None:
    url = f"{world.base}/fan/listMapped"
    first = world.api.get(url).json()
    assert first["total_entries"] == 5  # page_size 3
    assert [ti["map_index"] for ti in first["task_instances"]] == [0, 1, 2]
    rest = world.api.get(url, params={"offset": 3}).json()
    assert [ti["map_index"] for ti in rest["task_instances"]] == [3, 4]
    failed = world.api.get(url, params={"state": ["failed"]}).json()
    assert ([ti["map_index"] for ti in failed["task_instances"]], failed["total_entries"]) == (
        [1, 4], 2)
    by_state = world.api.get(url, params={"order_by": "state", "limit": 10}).json()
    assert [ti["map_index"] for ti in by_state["task_instances"]] == [1, 4, 2, 0, 3]
    down = world.api.get(url, params={"order_by": "-map_index", "limit": 2}).json()
    assert [ti["map_index"] for ti in down["task_instances"]] == [4, 3]
    slow = world.api.get(url, params={"order_by": "-duration", "duration_gte": 2}).json()
    assert [ti["map_index"] for ti in slow["task_instances"]] == [4, 3, 2]
    assert world.api.get(url, params={"order_by": "pool"}).status_code == 400
    not_mapped = world.api.get(f"{world.base}/start/listMapped")
    assert not_mapped.status_code == 404 and "is not mapped" in not_mapped.json()["detail"]
    assert world.api.get(f"{world.base}/nope/listMapped").status_code == 404


def test_patch_one_instance(world: World) -> None:
    dry = world.api.patch(f"{world.base}/fan/1", json={"new_state": "success"}).json()
    assert (dry["task_id"], dry["dag_run_id"]) == ("fan", world.run_id)
    assert world.fan() == [s.value for s in FAN]
    world.api.patch(f"{world.base}/fan/1", json={"new_state": "success", "dry_run": False})
    assert world.fan() == ["success", "success", "running", "success", "failed"]
    assert world.api.patch(f"{world.base}/fan", json={"new_state": "success"}
                           ).status_code == 404
    assert world.api.patch(f"{world.base}/fan/1", json={"new_state": "success"},
                           user="viewer").status_code == 403


def test_update_state_of_one_instance_or_all(world: World) -> None:
    url = f"/api/v1/dags/{DAG_ID}/updateTaskInstancesState"
    body = {"task_id": "fan", "dag_run_id": world.run_id, "new_state": "skipped",
            "include_upstream": False, "include_downstream": False, "include_future": False,
            "include_past": False, "dry_run": False}
    one = world.api.post(url, json={**body, "map_index": 4}).json()
    assert len(one["task_instances"]) == 1
    assert world.fan()[4] == "skipped"
    every = world.api.post(url, json={**body, "dry_run": True}).json()
    assert len(every["task_instances"]) == 4  # the fifth is skipped already


def test_clear_pairs_and_task_ids(world: World) -> None:
    """``[task_id, map_index]`` pairs are Squall's extension: Airflow 2.10's ``dag.clear``
    takes them, its REST form refuses them (``ClearTaskInstanceFormSchema().load({"task_ids":
    [["fan", 1]]})``: "Not a valid string.", checked against the real Airflow)."""
    url = f"/api/v1/dags/{DAG_ID}/clearTaskInstances"
    pair = world.api.post(url, json={"dag_run_id": world.run_id, "task_ids": [["fan", 4]],
                                     "dry_run": False}).json()
    assert [t["task_id"] for t in pair["task_instances"]] == ["fan"]
    assert world.fan() == ["success", "failed", "running", "success", "none"]
    whole = world.api.post(url, json={"dag_run_id": world.run_id, "task_ids": ["fan"],
                                      "only_failed": False}).json()
    assert len(whole["task_instances"]) == 5
    both = world.api.post(url, json={"dag_run_id": world.run_id, "only_failed": False,
                                     "task_ids": [["fan", 0], ["fan", 1], "start"]}).json()
    assert sorted(t["task_id"] for t in both["task_instances"]) == ["fan", "fan", "start"]
    assert world.api.post(url, json={"task_ids": [["nope", 0]]}).status_code == 404


def test_log_of_one_instance(world: World) -> None:
    url = f"{world.base}/fan/logs/1"
    body = world.api.get(url, params={"map_index": 2}).json()
    assert body["content"] == "instance two says hello\n"
    alone = world.api.get(url)
    assert alone.status_code == 404 and "mapped" in alone.json()["detail"]
    assert world.api.get(url, params={"map_index": 9}).status_code == 404


def test_the_ui_grid_and_panel_summarise_the_instances(world: World) -> None:
    """The grid's cell: the count and states of the instances, in the state Airflow's grid
    gives it (the first of ``airflow.www.utils.priority`` present: failed here)."""
    ui = f"/ui/api/dags/{DAG_ID}"
    grid = world.api.client.get(f"{ui}/grid", headers=basic("viewer")).json()
    assert grid["states"]["fan"] == ["failed"] and grid["states"]["start"] == ["success"]
    assert grid["mapped"] == {"fan": [{"count": 5, "states": {
        "success": 2, "failed": 2, "running": 1}}]}
    url = f"{ui}/runs/{world.run_id}/tasks/fan"
    panel = world.api.client.get(url, headers=basic("viewer")).json()
    assert (panel["mapped"], panel["count"], panel["state"]) == (True, 5, "failed")
    assert [(i["map_index"], i["state"]) for i in panel["instances"]] == [
        (i, s.value) for i, s in enumerate(FAN)]
    one = world.api.client.get(url, params={"map_index": 2}, headers=basic("viewer")).json()
    assert (one["map_index"], one["state"], one["count"]) == (2, "running", 5)
    log = world.api.client.get(f"{url}/log/1", params={"map_index": 2},
                               headers=basic("viewer"))
    assert log.status_code == 200 and log.text == "instance two says hello\n"
    assert world.api.client.get(url, params={"map_index": 9},
                                headers=basic("viewer")).status_code == 404
