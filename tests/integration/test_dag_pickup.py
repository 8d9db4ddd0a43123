"""A new, changed or removed DAG file is seen without waiting for ``dag_dir_list_interval``
(ADR 32): a real ``squall scheduler`` process at the default intervals (300 s between full
listings, 30 s between parses of a file), with file-system notifications and with the
scan that replaces them (``[scheduler] dag_dir_watch = false``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from squall.common.db import session_scope
from squall.common.models import DagModel, SerializedDagModel
from tests.integration.test_cluster import make_cluster
from tests.support.cluster import Cluster
from tests.support.services import wait_until

DAG_FILE = '''
import pendulum
from squall import DAG, EmptyOperator

with DAG("NAME", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    EmptyOperator(task_id="first")
'''
#: far below the 300 s of a full listing; not a measure of anything (see bench pickup)
DEADLINE = 90


def dag_source(dag_id: str, extra: str = "") -> str:
    return DAG_FILE.replace("NAME", dag_id) + extra


@pytest.fixture(params=["notify", "poll"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(request, "redis-pg", tmp_path / "home")
    # the default intervals, not the cluster's short ones
    c.unset_env = frozenset({"SQUALL__SCHEDULER__MIN_FILE_PROCESS_INTERVAL",
                             "SQUALL__SCHEDULER__DAG_DIR_LIST_INTERVAL"})
    if request.param == "poll":
        c.extra_env["SQUALL__SCHEDULER__DAG_DIR_WATCH"] = "false"
    c.cli("db", "migrate")
    yield c
    c.stop_all()


def dags(cluster: Cluster) -> dict[str, bool]:
    with session_scope(cluster.session_factory) as session:
        return {dag_id: bool(active) for dag_id, active in session.execute(
            select(DagModel.dag_id, DagModel.is_active))}


def dag_hash(cluster: Cluster, dag_id: str) -> str | None:
    with session_scope(cluster.session_factory) as session:
        return session.scalar(select(SerializedDagModel.dag_hash)
                              .where(SerializedDagModel.dag_id == dag_id))


def test_new_changed_and_removed_files_are_seen(cluster: Cluster,
                                                request: pytest.FixtureRequest) -> None:
    folder = cluster.dags_folder
    (folder / "existing.py").write_text(dag_source("existing"))
    cluster.start_scheduler()
    wait_until(lambda: dags(cluster).get("existing") is True, DEADLINE,
               message="the first parse")
    mode = request.node.callspec.params["cluster"]
    expected = ("watched for changes" if mode == "notify"
                else "no file-system notifications ([scheduler] dag_dir_watch is off)")
    assert expected in cluster.logs("scheduler", tail=500), cluster.logs("scheduler")

    # a new file, the way editors and copies write one: a temporary name renamed into place
    temporary = folder / ".newcomer.py.partial"
    temporary.write_text(dag_source("newcomer"))
    temporary.rename(folder / "newcomer.py")
    wait_until(lambda: dags(cluster).get("newcomer") is True, DEADLINE,
               message=f"the new file's DAG\n{cluster.logs('scheduler')}")

    # a new file in a new subfolder
    (folder / "team").mkdir()
    (folder / "team" / "nested.py").write_text(dag_source("nested"))
    wait_until(lambda: dags(cluster).get("nested") is True, DEADLINE,
               message=f"the nested file's DAG\n{cluster.logs('scheduler')}")

    # a changed file (well before min_file_process_interval would parse it again)
    before = dag_hash(cluster, "newcomer")
    assert before is not None
    (folder / "newcomer.py").write_text(
        dag_source("newcomer", "    EmptyOperator(task_id='second')\n"))
    wait_until(lambda: dag_hash(cluster, "newcomer") != before, DEADLINE,
               message=f"the changed file parsed again\n{cluster.logs('scheduler')}")

    # removed files: their DAGs become inactive, the others stay
    (folder / "newcomer.py").unlink()
    (folder / "team" / "nested.py").rename(folder / "team" / "nested.py.bak")
    wait_until(lambda: dags(cluster) == {"existing": True, "newcomer": False,
                                         "nested": False}, DEADLINE,
               message=f"the removed files' DAGs inactive\n{cluster.logs('scheduler')}")
