"""The worker's DagFileCache: DAG files stay imported until they or a DAG-folder helper
module change; files that fail to load are reported every time and never kept."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from squall.common.errors import TaskLoadError
from squall.common.models import TaskInstanceKey
from squall.common.settings import Settings
from squall.worker.dag_file_cache import DagFileCache

DAG_FILE = '''
from squall.sdk.dag import DAG
from squall.sdk.operators.python import PythonOperator
import helper_mod

with DAG("cached", schedule=None) as dag:
    PythonOperator(task_id="t", python_callable=lambda: None,
                   op_kwargs={{"v": helper_mod.VALUE + "{tag}"}})
'''

KEY = TaskInstanceKey("cached", "t", "manual__1")


def _settings(tmp_path: Path) -> Settings:
    return Settings.load(env={"SQUALL_HOME": str(tmp_path / "home"),
                              "SQUALL__CORE__DAGS_FOLDER": str(tmp_path / "dags"),
                              "SQUALL__CORE__LOAD_EXAMPLES": "false"})


def _write(path: Path, text: str, bump: int) -> None:
    path.write_text(text)
    stat = path.stat()  # a distinct mtime even within the filesystem's timestamp granularity
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump * 1_000_000_000))


@pytest.fixture
def dags(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "dags"
    folder.mkdir()
    _write(folder / "helper_mod.py", 'VALUE = "v1-"\n', 1)
    _write(folder / "cached.py", DAG_FILE.format(tag="a"), 1)
    sys.modules.pop("helper_mod", None)  # another test's folder had one too
    yield folder
    sys.modules.pop("helper_mod", None)
    if str(folder) in sys.path:
        sys.path.remove(str(folder))


def test_a_file_is_imported_once_until_it_changes(tmp_path: Path, dags: Path) -> None:
    cache, settings = DagFileCache(), _settings(tmp_path)
    first = cache.load_task(settings, "DAGS_FOLDER/cached.py", KEY)
    assert first.op_kwargs["v"] == "v1-a"
    assert cache.load_task(settings, "DAGS_FOLDER/cached.py", KEY) is first

    _write(dags / "cached.py", DAG_FILE.format(tag="b"), 2)
    second = cache.load_task(settings, "DAGS_FOLDER/cached.py", KEY)
    assert second is not first and second.op_kwargs["v"] == "v1-b"


def test_a_changed_helper_module_is_imported_afresh(tmp_path: Path, dags: Path) -> None:
    cache, settings = DagFileCache(), _settings(tmp_path)
    assert cache.load_task(settings, "DAGS_FOLDER/cached.py", KEY).op_kwargs["v"] == "v1-a"
    _write(dags / "helper_mod.py", 'VALUE = "v2-"\n', 3)
    assert cache.load_task(settings, "DAGS_FOLDER/cached.py", KEY).op_kwargs["v"] == "v2-a"


def test_a_broken_file_is_reported_each_time_and_not_kept(tmp_path: Path,
                                                          dags: Path) -> None:
    cache, settings = DagFileCache(), _settings(tmp_path)
    _write(dags / "cached.py", "raise RuntimeError('broken at import')\n", 4)
    for _ in range(2):
        with pytest.raises(TaskLoadError, match="broken at import"):
            cache.load_task(settings, "DAGS_FOLDER/cached.py", KEY)
    _write(dags / "cached.py", DAG_FILE.format(tag="c"), 5)
    assert cache.load_task(settings, "DAGS_FOLDER/cached.py", KEY).op_kwargs["v"] == "v1-c"


def test_unknown_task_and_missing_file_name_the_problem(tmp_path: Path, dags: Path) -> None:
    cache, settings = DagFileCache(), _settings(tmp_path)
    with pytest.raises(TaskLoadError, match="has no task 'nope'"):
        cache.load_task(settings, "DAGS_FOLDER/cached.py", TaskInstanceKey("cached", "nope", "r"))
    with pytest.raises(TaskLoadError, match="does not exist on this worker"):
        cache.load_task(settings, "DAGS_FOLDER/gone.py", KEY)


def test_least_recently_used_files_are_dropped(tmp_path: Path, dags: Path) -> None:
    cache, settings = DagFileCache(max_files=1), _settings(tmp_path)
    _write(dags / "other.py", DAG_FILE.format(tag="o").replace('"cached"', '"other"'), 1)
    first = cache.load_task(settings, "DAGS_FOLDER/cached.py", KEY)
    cache.load_task(settings, "DAGS_FOLDER/other.py", TaskInstanceKey("other", "t", "r"))
    assert cache.load_task(settings, "DAGS_FOLDER/cached.py", KEY) is not first
