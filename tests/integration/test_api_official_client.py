"""Airflow's official REST client (``apache-airflow-client`` 2.10, generated from Airflow's
OpenAPI document, which it checks every answer against) driven through every ``/api/v1``
operation Squall serves, against a live ``squall api`` beside a scheduler and a Celery worker
on Redis and PostgreSQL, with real runs. Not one call may raise; the operations Squall does
not serve answer the statuses docs/api.md gives.

tests/unit/test_api_airflow_types.py checks the same types statically (the served OpenAPI
document against Airflow's ``v1.yaml``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from airflow_client.client import ApiClient, ApiException, Configuration
from airflow_client.client.api.connection_api import ConnectionApi
from airflow_client.client.api.dag_api import DAGApi
from airflow_client.client.api.dag_run_api import DAGRunApi
from airflow_client.client.api.dataset_api import DatasetApi
from airflow_client.client.api.event_log_api import EventLogApi
from airflow_client.client.api.import_error_api import ImportErrorApi
from airflow_client.client.api.monitoring_api import MonitoringApi
from airflow_client.client.api.pool_api import PoolApi
from airflow_client.client.api.task_instance_api import TaskInstanceApi
from airflow_client.client.api.variable_api import VariableApi
from airflow_client.client.exceptions import NotFoundException
from airflow_client.client.model.clear_dag_run import ClearDagRun
from airflow_client.client.model.clear_task_instances import ClearTaskInstances
from airflow_client.client.model.connection import Connection
from airflow_client.client.model.create_dataset_event import CreateDatasetEvent
from airflow_client.client.model.dag import DAG
from airflow_client.client.model.dag_run import DAGRun
from airflow_client.client.model.list_dag_runs_form import ListDagRunsForm
from airflow_client.client.model.list_task_instance_form import ListTaskInstanceForm
from airflow_client.client.model.pool import Pool
from airflow_client.client.model.task_state import TaskState
from airflow_client.client.model.update_dag_run_state import UpdateDagRunState
from airflow_client.client.model.update_task_instance import UpdateTaskInstance
from airflow_client.client.model.update_task_instances_state import UpdateTaskInstancesState
from airflow_client.client.model.update_task_state import UpdateTaskState
from airflow_client.client.model.variable import Variable
from cryptography.fernet import Fernet

from tests.support.airflow_openapi import common_operations, load_airflow_v1
from tests.support.cluster import Cluster
from tests.support.datasets import CLEAN, RAW, REPORT, build_world
from tests.support.services import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.postgres,
              pytest.mark.xdist_group("official_client")]

PASSWORD = "correct-horse"
DAG_ID = "client_dag"
DAG_FILE = '''
import pendulum
from squall import DAG, BashOperator

with DAG("client_dag", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         tags=["client"], description="driven by Airflow's official client") as dag:
    say = BashOperator(task_id="say", bash_command="echo said through the cluster",
                       doc_md="says something")
    fail = BashOperator(task_id="fail", bash_command="exit 3", retries=0)
    say >> fail
'''
MAPPED_ID = "client_mapped"
#: a mapped task of three instances, the middle one failing (run through the client's
#: trigger by ``test_mapped_task_instances``)
MAPPED_FILE = '''
import pendulum
from squall import DAG, BashOperator

with DAG("client_mapped", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         is_paused_upon_creation=True) as dag:
    BashOperator.partial(task_id="fan", retries=0).expand(
        bash_command=["echo instance 0 ran", "echo instance 1 ran; exit 3",
                      "echo instance 2 ran"])
'''


@dataclass
class Env:
    cluster: Cluster
    url: str
    client: ApiClient
    run_id: str  # a finished run (failed: ``say`` succeeded, ``fail`` failed)


def _finished(dag_runs: DAGRunApi, run_id: str) -> bool:
    state = str(dag_runs.get_dag_run(DAG_ID, run_id).state)
    return state in ("success", "failed")


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A scheduler, a worker and ``squall api`` (real processes) on Redis and PostgreSQL, an
    admin, ``client_dag`` parsed and unpaused, a file that fails to import, and one run of
    ``client_dag`` triggered through the client and finished."""
    from tests.integration.test_cluster import make_cluster

    cluster = make_cluster(request, "redis-pg", tmp_path_factory.mktemp("client") / "home")
    port = free_port()
    cluster.extra_env.update({"SQUALL__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                              "SQUALL__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())})
    (cluster.dags_folder / "client_dag.py").write_text(DAG_FILE)
    (cluster.dags_folder / "client_mapped.py").write_text(MAPPED_FILE)
    (cluster.dags_folder / "broken.py").write_text(
        "from squall import DAG\nimport no_such_module_here\n")
    url = f"http://127.0.0.1:{port}"
    try:
        cluster.cli("users", "create", "-u", "admin", "-r", "admin", "-p", PASSWORD)
        cluster.start_scheduler()
        cluster.start_worker(concurrency=2)
        api = cluster.start("api", ["api", "--port", str(port)])
        auth = ("admin", PASSWORD)

        def parsed() -> bool:
            assert api.process.poll() is None, cluster.logs("api")
            try:
                dags = httpx.get(f"{url}/api/v1/dags/{DAG_ID}", auth=auth, timeout=5)
                mapped = httpx.get(f"{url}/api/v1/dags/{MAPPED_ID}", auth=auth, timeout=5)
                errors = httpx.get(f"{url}/api/v1/importErrors", auth=auth, timeout=5)
            except httpx.TransportError:
                return False
            return (dags.status_code == mapped.status_code == 200
                    and errors.json()["total_entries"] == 1)

        wait_until(parsed, 90, interval=0.2,
                   message=f"the API to serve the parsed DAG files:\n{cluster.logs()}")
        configuration = Configuration(host=f"{url}/api/v1", username="admin",
                                      password=PASSWORD)
        with ApiClient(configuration) as client:
            DAGApi(client).patch_dag(DAG_ID, DAG(is_paused=False))
            run = DAGRunApi(client).post_dag_run(DAG_ID, DAGRun(dag_run_id="first",
                                                                conf={"from": "fixture"}))
            wait_until(lambda: _finished(DAGRunApi(client), run.dag_run_id), 120,
                       interval=0.2, message=f"the first run to finish:\n{cluster.logs()}")
            yield Env(cluster, url, client, run.dag_run_id)
    finally:
        cluster.stop_all()


def test_dags(env: Env) -> None:
    dags = DAGApi(env.client)
    listed = dags.get_dags(tags=["client"])
    assert [d.dag_id for d in listed.dags] == [DAG_ID] and listed.total_entries == 1
    dag = dags.get_dag(DAG_ID)
    assert dag.fileloc.endswith("client_dag.py") and dag.file_token
    assert dag.dag_display_name == DAG_ID and [t.name for t in dag.tags] == ["client"]
    assert dags.patch_dag(DAG_ID, DAG(is_paused=True), update_mask=["is_paused"]).is_paused
    assert not dags.patch_dag(DAG_ID, DAG(is_paused=False)).is_paused
    details = dags.get_dag_details(DAG_ID)
    assert details.timezone == "UTC" and details.file_token == dag.file_token
    assert details.start_date.year == 2024 and details.catchup is not None
    tasks = {t.task_id: t for t in dags.get_tasks(DAG_ID).tasks}
    assert sorted(tasks) == ["fail", "say"]
    assert tasks["say"].downstream_task_ids == ["fail"]
    say = dags.get_task(DAG_ID, "say")
    assert say.doc_md == "says something" and say.owner and say.retries == 0


def test_dag_runs(env: Env) -> None:
    runs = DAGRunApi(env.client)
    first = runs.get_dag_run(DAG_ID, env.run_id)
    assert str(first.state) == "failed" and first.conf == {"from": "fixture"}
    assert env.run_id in [r.dag_run_id for r in runs.get_dag_runs(DAG_ID).dag_runs]
    batch = runs.get_dag_runs_batch(ListDagRunsForm(dag_ids=[DAG_ID], states=["failed"]))
    assert env.run_id in [r.dag_run_id for r in batch.dag_runs]
    second = runs.post_dag_run(DAG_ID, DAGRun(dag_run_id="second", conf={}))
    assert second.dag_run_id == "second"
    marked = runs.update_dag_run_state(DAG_ID, "second",
                                       UpdateDagRunState(state="failed"))
    assert str(marked.state) == "failed"
    # the client leaves this answer (DAGRun or TaskInstanceCollection) a dict
    cleared = runs.clear_dag_run(DAG_ID, "second", ClearDagRun(dry_run=True))
    assert {ti["task_id"] for ti in cleared["task_instances"]} <= {"say", "fail"}
    again = runs.clear_dag_run(DAG_ID, "second", ClearDagRun(dry_run=False))
    assert again["dag_run_id"] == "second"
    wait_until(lambda: _finished(runs, "second"), 120, interval=0.2,
               message=f"the second run to finish:\n{env.cluster.logs()}")
    runs.delete_dag_run(DAG_ID, "second")
    assert "second" not in [r.dag_run_id for r in runs.get_dag_runs(DAG_ID).dag_runs]
    with pytest.raises(NotFoundException):
        TaskInstanceApi(env.client).get_task_instance(DAG_ID, "second", "say")


def test_task_instances(env: Env) -> None:
    tis = TaskInstanceApi(env.client)
    listed = tis.get_task_instances(DAG_ID, env.run_id)
    states = {ti.task_id: str(ti.state) for ti in listed.task_instances}
    assert states == {"say": "success", "fail": "failed"}
    every = tis.get_task_instances(DAG_ID, "~")
    assert {ti.dag_run_id for ti in every.task_instances} >= {env.run_id}
    batch = tis.get_task_instances_batch(ListTaskInstanceForm(
        dag_ids=[DAG_ID], state=[TaskState("success")]))
    assert ("say", env.run_id) in {(ti.task_id, ti.dag_run_id) for ti in batch.task_instances}
    say = tis.get_task_instance(DAG_ID, env.run_id, "say")
    assert say.hostname.startswith("w1@") and say.try_number == 1 and say.execution_date
    log = tis.get_log(DAG_ID, env.run_id, "say", 1, full_content=True)
    assert "said through the cluster" in log.content and log.continuation_token
    ref = tis.patch_task_instance(DAG_ID, env.run_id, "say", UpdateTaskInstance(
        dry_run=True, new_state=UpdateTaskState("failed")))
    assert (ref.task_id, ref.dag_run_id) == ("say", env.run_id)
    dags = DAGApi(env.client)
    dry = dags.post_clear_task_instances(DAG_ID, ClearTaskInstances(
        dry_run=True, dag_run_id=env.run_id, only_failed=True))
    assert [t.task_id for t in dry.task_instances] == ["fail"]
    ref = tis.patch_task_instance(DAG_ID, env.run_id, "fail",
                                  UpdateTaskInstance(dry_run=False,
                                                     new_state=UpdateTaskState("success")))
    assert ref.execution_date
    assert str(tis.get_task_instance(DAG_ID, env.run_id, "fail").state) == "success"
    would = dags.post_set_task_instances_state(DAG_ID, UpdateTaskInstancesState(
        task_id="say", dag_run_id=env.run_id, include_downstream=True,
        new_state=UpdateTaskState("failed")))
    assert sorted(t.task_id for t in would.task_instances) == ["fail", "say"]
    assert str(tis.get_task_instance(DAG_ID, env.run_id, "say").state) == "success"
    marked = dags.post_set_task_instances_state(DAG_ID, UpdateTaskInstancesState(
        task_id="fail", execution_date=say.execution_date, dry_run=False,
        new_state=UpdateTaskState("failed")))
    assert [(t.task_id, t.dag_run_id) for t in marked.task_instances] == [("fail", env.run_id)]
    cleared = dags.post_clear_task_instances(DAG_ID, ClearTaskInstances(
        dry_run=False, dag_run_id=env.run_id, only_failed=False, task_ids=["fail"]))
    assert [t.task_id for t in cleared.task_instances] == ["fail"]
    runs = DAGRunApi(env.client)
    wait_until(lambda: _finished(runs, env.run_id), 120, interval=0.2,
               message=f"the cleared run to finish again:\n{env.cluster.logs()}")
    fail = tis.get_task_instance(DAG_ID, env.run_id, "fail")
    assert (str(fail.state), fail.try_number) == ("failed", 2)


def test_mapped_task_instances(env: Env) -> None:
    """A real run: the scheduler expands ``fan`` into three instances, the worker runs them
    (the middle one fails), and the client reads and marks them."""
    DAGApi(env.client).patch_dag(MAPPED_ID, DAG(is_paused=False))
    runs = DAGRunApi(env.client)
    runs.post_dag_run(MAPPED_ID, DAGRun(dag_run_id="mapped"))
    wait_until(lambda: str(runs.get_dag_run(MAPPED_ID, "mapped").state) in ("success", "failed"),
               120, interval=0.2, message=f"the mapped run to finish:\n{env.cluster.logs()}")
    assert str(runs.get_dag_run(MAPPED_ID, "mapped").state) == "failed"
    tis = TaskInstanceApi(env.client)
    one = tis.get_mapped_task_instance(MAPPED_ID, "mapped", "fan", 1)
    assert (one.map_index, str(one.state)) == (1, "failed")
    listed = tis.get_mapped_task_instances(MAPPED_ID, "mapped", "fan")
    assert [ti.map_index for ti in listed.task_instances] == [0, 1, 2]
    assert listed.total_entries == 3
    page = tis.get_mapped_task_instances(MAPPED_ID, "mapped", "fan", limit=1, offset=1,
                                         order_by="-map_index", state=["success"])
    assert [ti.map_index for ti in page.task_instances] == [0] and page.total_entries == 2
    with pytest.raises(NotFoundException):
        tis.get_task_instance(MAPPED_ID, "mapped", "fan")
    log = tis.get_log(MAPPED_ID, "mapped", "fan", 1, map_index=2, full_content=True)
    assert "instance 2 ran" in log.content and "instance 1" not in log.content
    ref = tis.patch_mapped_task_instance(MAPPED_ID, "mapped", "fan", 1, update_task_instance=
                                         UpdateTaskInstance(dry_run=False,
                                                            new_state=UpdateTaskState("success")))
    assert (ref.task_id, ref.dag_run_id) == ("fan", "mapped")
    assert str(tis.get_mapped_task_instance(MAPPED_ID, "mapped", "fan", 1).state) == "success"
    every = tis.get_task_instances(MAPPED_ID, "mapped")
    assert sorted(ti.map_index for ti in every.task_instances) == [0, 1, 2]


def test_pools(env: Env) -> None:
    pools = PoolApi(env.client)
    made = pools.post_pool(Pool(name="client_pool", slots=3, description="three"))
    assert (made.name, made.slots, made.open_slots) == ("client_pool", 3, 3)
    pools.post_pool(Pool(name="client_unlimited", slots=-1))
    listed = {p.name: p for p in pools.get_pools().pools}
    assert listed["client_unlimited"].open_slots == -1 and "default_pool" in listed
    assert pools.patch_pool("client_pool", Pool(name="client_pool", slots=5)).slots == 5
    assert pools.get_pool("client_pool").open_slots == 5
    for name in ("client_pool", "client_unlimited"):
        pools.delete_pool(name)
    assert not {"client_pool", "client_unlimited"} & {p.name for p in pools.get_pools().pools}


def test_event_logs(env: Env) -> None:
    """The audit log of the fixture's unpause and trigger, through the client (whose models
    check every field's type)."""
    events = EventLogApi(env.client)
    triggered = events.get_event_logs(dag_id=DAG_ID, event="trigger", run_id="first")
    assert triggered.total_entries == 1
    entry = triggered.event_logs[0]
    assert (entry.owner, entry.dag_id, entry.run_id) == ("admin", DAG_ID, "first")
    assert json.loads(entry.extra) == {"source": "api", "conf": {"from": "fixture"}}
    assert events.get_event_log(entry.event_log_id).event == "trigger"
    since = events.get_event_logs(after=entry.when - timedelta(hours=1), order_by="-when",
                                  included_events="trigger,unpaused", dag_id=DAG_ID)
    assert {e.event for e in since.event_logs} == {"trigger", "unpaused"}
    with pytest.raises(NotFoundException):
        events.get_event_log(entry.event_log_id + 100_000)


def test_variables(env: Env) -> None:
    variables = VariableApi(env.client)
    made = variables.post_variables(Variable(key="client_var", value="one",
                                             description="set by the client"))
    assert (made.key, made.value) == ("client_var", "one")
    variables.post_variables(Variable(key="client_password", value="hush"))
    assert variables.get_variable("client_password").value == "***"
    assert variables.patch_variable("client_var", Variable(key="client_var", value="two"),
                                    update_mask=["value"]).value == "two"
    assert variables.get_variable("client_var").value == "two"
    assert {"client_var", "client_password"} <= {
        v.key for v in variables.get_variables(limit=100).variables}
    for key in ("client_var", "client_password"):
        variables.delete_variable(key)
    assert variables.get_variables().total_entries == 0


def test_connections(env: Env) -> None:
    connections = ConnectionApi(env.client)
    made = connections.post_connection(Connection(
        connection_id="client_conn", conn_type="postgres", host="db.example", login="me",
        password="secret", port=5432, schema="data", extra='{"sslmode": "require"}'))
    assert (made.connection_id, made.port, made.schema) == ("client_conn", 5432, "data")
    got = connections.get_connection("client_conn")
    assert got.host == "db.example" and "password" not in got.to_dict()
    patched = connections.patch_connection(
        "client_conn", Connection(connection_id="client_conn", conn_type="postgres",
                                  host="other.example"), update_mask=["host"])
    assert patched.host == "other.example" and patched.login == "me"
    listed = connections.get_connections()
    assert "client_conn" in [c.connection_id for c in listed.connections]
    connections.delete_connection("client_conn")
    assert connections.get_connections().total_entries == 0


def test_import_errors_health_and_version(env: Env) -> None:
    errors = ImportErrorApi(env.client)
    listed = errors.get_import_errors()
    assert listed.total_entries == 1 and listed.import_errors[0].filename.endswith("broken.py")
    one = errors.get_import_error(listed.import_errors[0].import_error_id)
    assert "no_such_module_here" in one.stack_trace
    monitoring = MonitoringApi(env.client)
    health = monitoring.get_health()
    assert str(health.metadatabase.status) == "healthy"
    assert str(health.scheduler.status) == "healthy"
    assert monitoring.get_version().version


def test_datasets(env: Env) -> None:
    """Datasets, their events and queued events as the client reads them (the client
    escapes the URI in a path); an event created through it queues its consumer. The rows
    are written as the DAG processor and the scheduler write them (tests/support/
    datasets.py)."""
    broken = ImportErrorApi(env.client).get_import_errors().import_errors[0].filename
    world = build_world(env.cluster.session_factory, fileloc=broken)
    datasets = DatasetApi(env.client)
    listed = datasets.get_datasets(uri_pattern="lake")
    assert [d.uri for d in listed.datasets] == [RAW, CLEAN] and listed.total_entries == 2
    assert [d.uri for d in datasets.get_datasets(dag_ids="publish").datasets] == [REPORT]
    clean = datasets.get_dataset(CLEAN)
    assert [(t.dag_id, t.task_id) for t in clean.producing_tasks] == [("ingest", "transform")]
    # by_alias: its alias resolved to CLEAN
    assert [c.dag_id for c in clean.consuming_dags] == ["by_alias", "report_all"]
    assert [a["name"] for a in clean["aliases"]] == ["lake-clean"]
    with pytest.raises(NotFoundException):
        datasets.get_dataset("s3://nowhere/at/all")

    events = datasets.get_dataset_events(source_dag_id="ingest", order_by="timestamp")
    assert [e.dataset_uri for e in events.dataset_events] == [RAW, CLEAN]
    raw_event = events.dataset_events[0]
    assert raw_event.extra == {"rows": 10} and raw_event.source_task_id == "extract"
    made_run = raw_event.created_dagruns[0]
    assert (made_run.dag_id, made_run["dag_run_id"]) == ("report_all", world.run_id)
    upstream = DAGRunApi(env.client).get_upstream_dataset_events("report_all", world.run_id)
    assert [e.dataset_uri for e in upstream.dataset_events] == [RAW]

    queued = datasets.get_dag_dataset_queued_events("report_all")
    assert [(q["uri"], q["dag_id"]) for q in queued["queued_events"]] == [(CLEAN, "report_all")]
    one = datasets.get_dag_dataset_queued_event("by_alias", CLEAN)
    assert (one.uri, one.dag_id) == (CLEAN, "by_alias") and one.created_at.year >= 2024
    of_clean = datasets.get_dataset_queued_events(CLEAN)
    assert sorted(q["dag_id"] for q in of_clean["queued_events"]) == ["by_alias", "report_all"]

    event = datasets.create_dataset_event(CreateDatasetEvent(dataset_uri=RAW,
                                                             extra={"batch": 1}))
    assert event.extra == {"batch": 1, "from_rest_api": True} and event.source_dag_id is None
    after = datasets.get_dag_dataset_queued_events("report_all")
    assert sorted(q["uri"] for q in after["queued_events"]) == [CLEAN, RAW]

    datasets.delete_dag_dataset_queued_event("by_alias", CLEAN)
    with pytest.raises(NotFoundException):
        datasets.get_dag_dataset_queued_events("by_alias")
    datasets.delete_dataset_queued_events(RAW)
    datasets.delete_dag_dataset_queued_events("report_all")
    with pytest.raises(NotFoundException):
        datasets.get_dataset_queued_events(CLEAN)


#: Airflow operations Squall does not serve whose path it serves with other methods: 405
#: (every other one it does not serve: 404), as docs/api.md says
METHOD_NOT_ALLOWED = {"delete_dag", "patch_dags", "test_connection"}


def test_operations_not_served_answer_their_documented_status(env: Env) -> None:
    airflow = load_airflow_v1()
    served = httpx.get(f"{env.url}/api/v1/openapi.json", timeout=10).json()
    missing = airflow["operations"].keys() - common_operations(served, airflow).keys()
    assert missing >= METHOD_NOT_ALLOWED and len(missing) > 30, sorted(missing)
    for op_id in sorted(missing):
        op = airflow["operations"][op_id]
        path = re.sub(r"\{[^}]*\}", "x", op["path"])
        answer = httpx.request(op["method"], f"{env.url}/api/v1{path}", json={},
                               auth=("admin", PASSWORD), timeout=10)
        want = 405 if op_id in METHOD_NOT_ALLOWED else 404
        assert answer.status_code == want, (op_id, answer.status_code, answer.text)
    with pytest.raises(ApiException) as raised:
        DAGApi(env.client).delete_dag(DAG_ID)
    assert raised.value.status == 405
