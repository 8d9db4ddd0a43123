"""Airflow-style DAG files in a test's cluster: copied into its DAG folder under
``[core] airflow_compat``, and run by ``squall dags test`` as a user runs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.support.cluster import Cluster

COMPAT = {"SQUALL__CORE__AIRFLOW_COMPAT": "true"}


def copy_dag_files(cluster: Cluster, folder: Path, *names: str) -> None:
    """The ``.py`` files of ``folder`` (only those whose stem is in ``names``, if given) into
    the cluster's DAG folder, with the compatibility layer on for its processes."""
    for path in folder.glob("*.py"):
        if not names or path.stem in names:
            shutil.copy(path, cluster.dags_folder / path.name)
    cluster.extra_env.update(COMPAT)


def dags_test(cluster: Cluster, dag_id: str, date: str) -> dict[str, Any]:
    """``squall dags test DAG_ID DATE -o json``'s answer, with ``states`` and ``reasons``
    (task id -> each); the reasons are printed, to be shown when an assertion fails."""
    proc = cluster.cli("dags", "test", dag_id, date, "-o", "json", check=False, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    result["states"] = {t["task_id"]: t["state"] for t in result["task_instances"]}
    result["reasons"] = {t["task_id"]: t["reason"] for t in result["task_instances"]}
    print(dag_id, result["reasons"])
    return result
