"""The task-run command's DAG file rule: a path under a named root, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from squall.common.errors import PayloadError
from squall.common.payload import TaskRunCommand, relative_dag_file, resolve_dag_file

GOOD = {"dag_id": "d", "task_id": "t", "run_id": "r", "try_number": 1, "queue": "default"}


@pytest.mark.parametrize("dag_file", ["DAGS_FOLDER/etl/daily.py", "EXAMPLES/example_bash.py"])
def test_a_dag_file_under_a_root_is_accepted(dag_file: str) -> None:
    assert TaskRunCommand.from_message({**GOOD, "dag_file": dag_file}).dag_file == dag_file


@pytest.mark.parametrize("dag_file", [
    "/etc/passwd.py",                   # absolute: under no root
    "d.py",                             # relative to nothing
    "DAGS_FOLDER/../outside.py",        # escapes the root
    "DAGS_FOLDER/a/../../outside.py",
    "DAGS_FOLDER/./a.py",
    "DAGS_FOLDER//etc/x.py",            # an empty part: an absolute path once joined
    "DAGS_FOLDER/",
    "OTHER_ROOT/x.py",
    "DAGS_FOLDER/a\x00.py",
])
def test_any_other_dag_file_makes_the_command_malformed(dag_file: str) -> None:
    with pytest.raises(PayloadError, match=r"malformed task-run command: dag_file: .*must be "
                                           r"a relative path under DAGS_FOLDER/ or EXAMPLES/"):
        TaskRunCommand.from_message({**GOOD, "dag_file": dag_file})


def test_resolve_refuses_what_is_under_no_root(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    assert resolve_dag_file("DAGS_FOLDER/a/b.py", dags, None) == dags / "a" / "b.py"
    with pytest.raises(PayloadError, match="is not under DAGS_FOLDER/ or EXAMPLES/"):
        resolve_dag_file(str(tmp_path / "elsewhere.py"), dags, None)
    with pytest.raises(PayloadError, match="this worker has no EXAMPLES"):
        resolve_dag_file("EXAMPLES/x.py", dags, None)


def test_a_file_under_no_root_is_sent_as_is_and_refused(tmp_path: Path) -> None:
    """The scheduler cannot build a command for a DAG file outside its roots (it fails the
    task instance with this reason rather than send it)."""
    outside = relative_dag_file(str(tmp_path / "elsewhere.py"), tmp_path / "dags", None)
    with pytest.raises(PayloadError, match="dag_file"):
        TaskRunCommand.from_message({**GOOD, "dag_file": outside})
