"""DAG files: listing, loading (in-process and isolated), serialization, syncing to the DB."""

from __future__ import annotations

import json
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest
from dateutil.relativedelta import relativedelta  # type: ignore[import-untyped, unused-ignore]
from sqlalchemy import select

from squall.common.db import SessionFactory
from squall.common.errors import SquallError
from squall.common.models import DagModel, ImportError_, SerializedDagModel
from squall.dag_processing.dagbag import (
    DagBag,
    ParseResult,
    list_dag_files,
    load_file,
    parse_files_isolated,
)
from squall.dag_processing.serialization import (
    SerializedOperator,
    dag_hash,
    deserialize_dag,
    serialize_dag,
)
from squall.dag_processing.sync import load_serialized_dags, sync_to_db
from squall.sdk.dag import DAG
from squall.sdk.operators.base import BaseOperator, Context
from squall.sdk.operators.empty import EmptyOperator
from squall.sdk.taskgroup import TaskGroup

pytestmark = pytest.mark.integration

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

GOOD_DAG = '''
from datetime import datetime
from squall.sdk.dag import DAG
from squall.sdk.operators.empty import EmptyOperator

with DAG("good", schedule="@daily", start_date=datetime(2024, 1, 1), catchup=False,
         tags=["t1"]) as dag:
    a = EmptyOperator(task_id="a")
    b = EmptyOperator(task_id="b", owner="alice")
    a >> b
'''

BROKEN_FILES: dict[str, str] = {
    "syntax": '''
from squall.sdk.dag import DAG

with DAG("syntax_dag") as dag:
    x = (1,
''',
    "exception": '''
from squall.sdk.dag import DAG
raise ValueError("boom from the dag file")
''',
    "cycle": '''
from squall.sdk.dag import DAG
from squall.sdk.operators.empty import EmptyOperator

with DAG("cyclic") as dag:
    first = EmptyOperator(task_id="first")
    second = EmptyOperator(task_id="second")
    first >> second >> first
''',
    "duplicate_task": '''
from squall.sdk.dag import DAG
from squall.sdk.operators.empty import EmptyOperator

with DAG("dup_tasks") as dag:
    EmptyOperator(task_id="same_task")
    EmptyOperator(task_id="same_task")
''',
    "timeout": '''
import time
from squall.sdk.dag import DAG
time.sleep(60)
''',
}

EXPECTED_IN_MESSAGE: dict[str, list[str]] = {
    "syntax": ["SyntaxError", "line 5"],
    "exception": ["ValueError", "boom from the dag file", "line 3"],
    "cycle": ["CycleError", "first", "second"],
    "duplicate_task": ["DuplicateTaskIdError", "same_task"],
    "timeout": ["took longer than 2 s", "dagbag_import_timeout"],
}


@pytest.fixture(autouse=True)
def _isolate_imports() -> Iterator[None]:
    """DAG folders go on sys.path and helpers into sys.modules: undo that after each test."""
    path = list(sys.path)
    modules = set(sys.modules)
    yield
    added = [p for p in sys.path if p not in path]
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        origin = getattr(sys.modules[name], "__file__", None) or ""
        if name.startswith("squall_dag_") or any(origin.startswith(p) for p in added):
            del sys.modules[name]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def dags_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------- listing


def test_list_dag_files_skips_non_dag_hidden_and_pycache(dags_folder: Path) -> None:
    write(dags_folder, "one.py", GOOD_DAG)
    write(dags_folder, "sub/two.py", "# a DAG lives here\n")
    write(dags_folder, "no_marker.py", "x = 1\n")
    write(dags_folder, "notes.txt", "dag\n")
    write(dags_folder, ".hidden/three.py", "dag\n")
    write(dags_folder, "__pycache__/four.py", "dag\n")
    write(dags_folder, ".five.py", "dag\n")
    assert list_dag_files(dags_folder) == [dags_folder / "one.py", dags_folder / "sub/two.py"]


def test_squallignore_regexp(dags_folder: Path) -> None:
    write(dags_folder, "keep.py", "dag")
    write(dags_folder, "ignored_one.py", "dag")
    write(dags_folder, "sub/keep_too.py", "dag")
    write(dags_folder, "sub/ignored_two.py", "dag")
    write(dags_folder, "sub/local_only.py", "dag")
    write(dags_folder, "skipdir/whatever.py", "dag")
    write(dags_folder, "other/local_only.py", "dag")
    write(dags_folder, ".squallignore", "ignored_.*  # comment\n^skipdir\n\n")
    write(dags_folder, "sub/.squallignore", "^local_only\\.py$\n")
    assert list_dag_files(dags_folder) == [
        dags_folder / "keep.py",
        dags_folder / "other/local_only.py",
        dags_folder / "sub/keep_too.py",
    ]


def test_squallignore_glob(dags_folder: Path) -> None:
    write(dags_folder, "keep.py", "dag")
    write(dags_folder, "a_skip.py", "dag")
    write(dags_folder, "deep/er/b_skip.py", "dag")
    write(dags_folder, "deep/er/important_skip.py", "dag")
    write(dags_folder, "build/x.py", "dag")
    write(dags_folder, "sub/build.py", "dag")
    write(dags_folder, "anchored/y.py", "dag")
    write(dags_folder, "sub/anchored/z.py", "dag")
    write(dags_folder, ".squallignore",
          "# globs\n*_skip.py\n!important_skip.py\nbuild/\n/anchored\n")
    assert list_dag_files(dags_folder, syntax="glob") == [
        dags_folder / "deep/er/important_skip.py",
        dags_folder / "keep.py",
        dags_folder / "sub/anchored/z.py",
        dags_folder / "sub/build.py",
    ]
    # the same file read as regular expressions means something else
    assert dags_folder / "a_skip.py" in list_dag_files(dags_folder)


# --------------------------------------------------------------------------- loading


def test_good_folder_loads_in_process_and_isolated(dags_folder: Path) -> None:
    write(dags_folder, "good.py", GOOD_DAG)
    write(dags_folder, "dag_helpers_mod.py", '''
        from squall.sdk.operators.empty import EmptyOperator

        def make_chain(prefix):
            first = EmptyOperator(task_id=f"{prefix}_1")
            first >> EmptyOperator(task_id=f"{prefix}_2")
    ''')
    write(dags_folder, "uses_helper.py", '''
        from squall.sdk.dag import DAG, dag
        from dag_helpers_mod import make_chain

        with DAG("helped"):  # not assigned to anything
            make_chain("h")

        @dag(schedule=None)
        def decorated(x=1):
            make_chain("d")

        decorated()
    ''')
    bag = DagBag(dags_folder)
    dags = bag.collect_in_process()
    assert bag.import_errors == {}
    assert sorted(dags) == ["decorated", "good", "helped"]
    assert dags["helped"].task_ids == ["h_1", "h_2"]
    assert dags["helped"].fileloc == str(dags_folder / "uses_helper.py")
    assert bag.get_dag("good") is dags["good"]
    assert bag.get_dag("missing") is None

    result = parse_files_isolated(list_dag_files(dags_folder), dags_folder, timeout=30)
    assert result.import_errors == {}
    assert sorted(result.serialized) == ["decorated", "good", "helped"]
    assert sorted(result.files_parsed) == sorted(str(p) for p in list_dag_files(dags_folder))
    assert result.serialized["helped"]["dag"]["fileloc"] == str(dags_folder / "uses_helper.py")
    assert result.serialized["decorated"]["dag"]["params"]["x"]["default"] == 1


@pytest.mark.parametrize("mode", ["in_process", "isolated"])
@pytest.mark.parametrize("kind", sorted(BROKEN_FILES))
def test_broken_file_gives_one_readable_error(
    dags_folder: Path, sqlite_session_factory: SessionFactory, kind: str, mode: str
) -> None:
    write(dags_folder, "good.py", GOOD_DAG)
    broken = write(dags_folder, f"broken_{kind}.py", BROKEN_FILES[kind])
    started = time.monotonic()
    if mode == "in_process":
        bag = DagBag(dags_folder, import_timeout=2)
        bag.collect_in_process()
        dag_ids, errors = sorted(bag.dags), bag.import_errors
    else:
        result = parse_files_isolated(list_dag_files(dags_folder), dags_folder, timeout=2)
        dag_ids, errors = sorted(result.serialized), result.import_errors
        with sqlite_session_factory() as session:
            sync_to_db(session, result, paused_at_creation=False, now=NOW)
            session.commit()
        with sqlite_session_factory() as session:
            rows = session.scalars(select(ImportError_)).all()
            assert [r.filename for r in rows] == [str(broken)]
            assert rows[0].stacktrace == errors[str(broken)]
            assert session.get(DagModel, "good") is not None
    assert time.monotonic() - started < 30
    assert dag_ids == ["good"]
    assert list(errors) == [str(broken)]
    message = errors[str(broken)]
    assert str(broken) in message
    for expected in EXPECTED_IN_MESSAGE[kind]:
        assert expected in message, message


def test_child_that_dies_is_reported_with_its_exit_code(dags_folder: Path) -> None:
    write(dags_folder, "good.py", GOOD_DAG)
    write(dags_folder, "dies.py", "import os\n# dag\nos._exit(3)\n")
    write(dags_folder, "killed.py", "import os, signal\n# dag\nos.kill(os.getpid(), 9)\n")
    result = parse_files_isolated(list_dag_files(dags_folder), dags_folder, timeout=30)
    assert sorted(result.serialized) == ["good"]
    assert "exit code 3" in result.import_errors[str(dags_folder / "dies.py")]
    assert "SIGKILL" in result.import_errors[str(dags_folder / "killed.py")]


@pytest.mark.parametrize("mode", ["in_process", "isolated"])
def test_duplicate_dag_id_across_files(dags_folder: Path, mode: str) -> None:
    first = write(dags_folder, "a_first.py", '''
        from squall.sdk.dag import DAG
        DAG("shared")
    ''')
    second = write(dags_folder, "b_second.py", '''
        from squall.sdk.dag import DAG
        DAG("shared")
        DAG("other")
    ''')
    if mode == "in_process":
        bag = DagBag(dags_folder)
        bag.collect_in_process()
        dags = {k: v.fileloc for k, v in bag.dags.items()}
        errors = bag.import_errors
    else:
        result = parse_files_isolated(list_dag_files(dags_folder), dags_folder, timeout=30)
        dags = {k: v["dag"]["fileloc"] for k, v in result.serialized.items()}
        errors = result.import_errors
    assert dags == {"shared": str(first), "other": str(second)}
    assert errors == {str(second): f"dag_id shared is already defined in {first}"}


def test_duplicate_dag_id_within_a_file(dags_folder: Path) -> None:
    path = write(dags_folder, "twice.py", '''
        from squall.sdk.dag import DAG
        DAG("twice")
        DAG("twice")
    ''')
    loaded = load_file(path, dags_folder)
    assert [d.dag_id for d in loaded.dags] == ["twice"]
    assert loaded.error is not None and "'twice' is defined more than once" in loaded.error


def test_error_in_helper_names_the_user_frames(dags_folder: Path) -> None:
    write(dags_folder, "bad_helper.py", "def build():\n    return 1 / 0\n")
    path = write(dags_folder, "calls_helper.py", '''
        from squall.sdk.dag import DAG
        from bad_helper import build
        build()
    ''')
    loaded = load_file(path, dags_folder)
    assert loaded.error is not None
    assert "ZeroDivisionError" in loaded.error
    assert f'"{path}", line 4' in loaded.error
    assert f'"{dags_folder / "bad_helper.py"}", line 2' in loaded.error


# --------------------------------------------------------------------------- database


def test_sync_to_db_writes_rows_and_keeps_user_pause(
    dags_folder: Path, session_factory: SessionFactory
) -> None:
    good = write(dags_folder, "good.py", GOOD_DAG)
    write(dags_folder, "more.py", '''
        from datetime import datetime, timedelta
        from squall.sdk.dag import DAG
        from squall.sdk.operators.empty import EmptyOperator

        with DAG("paused_one", schedule=None, is_paused_upon_creation=True,
                 params={"n": 3, "when": datetime(2024, 1, 1)}):
            EmptyOperator(task_id="only")
        with DAG("hourly", schedule=timedelta(hours=1), start_date=datetime(2024, 5, 31),
                 catchup=True):
            EmptyOperator(task_id="only")
    ''')
    result = parse_files_isolated(list_dag_files(dags_folder), dags_folder, timeout=30)
    assert result.import_errors == {}
    with session_factory() as session:
        sync_to_db(session, result, paused_at_creation=False, now=NOW)
        session.commit()
    with session_factory() as session:
        rows = {r.dag_id: r for r in session.scalars(select(DagModel))}
        assert sorted(rows) == ["good", "hourly", "paused_one"]
        row = rows["good"]
        assert row.fileloc == str(good)
        assert row.is_active and not row.is_paused and not row.has_import_errors
        assert row.tags == ["t1"]
        assert row.owners == "alice, squall"
        assert row.schedule == "@daily"
        assert row.timetable_description == "At 00:00"
        assert row.last_parsed_time == NOW
        # catchup=False: the latest complete interval
        assert row.next_dagrun == datetime(2024, 5, 31, tzinfo=UTC)
        assert row.next_dagrun_create_after == datetime(2024, 6, 1, tzinfo=UTC)
        assert rows["paused_one"].is_paused
        assert rows["paused_one"].next_dagrun is None
        # the params with their schemas, as serialized (squall/dag_processing/serialization.py)
        assert {k: v["default"] for k, v in rows["paused_one"].params.items()} == {
            "n": 3, "when": repr(datetime(2024, 1, 1))}
        assert rows["hourly"].next_dagrun == datetime(2024, 5, 31, tzinfo=UTC)
        serialized = {s.dag_id: s for s in session.scalars(select(SerializedDagModel))}
        assert sorted(serialized) == ["good", "hourly", "paused_one"]
        first_update = serialized["good"].last_updated
        assert serialized["good"].dag_hash == dag_hash(result.serialized["good"])
        # a user pauses and unpauses
        rows["good"].is_paused = True
        rows["paused_one"].is_paused = False
        session.commit()

    # the file changes: "hourly" disappears, "good" is unchanged
    write(dags_folder, "more.py", '''
        from squall.sdk.dag import DAG
        from squall.sdk.operators.empty import EmptyOperator

        with DAG("paused_one", schedule=None, is_paused_upon_creation=True,
                 description="now described"):
            EmptyOperator(task_id="only")
    ''')
    later = NOW + timedelta(minutes=5)
    result = parse_files_isolated(list_dag_files(dags_folder), dags_folder, timeout=30)
    with session_factory() as session:
        sync_to_db(session, result, paused_at_creation=True, now=later)
        session.commit()
    with session_factory() as session:
        rows = {r.dag_id: r for r in session.scalars(select(DagModel))}
        assert rows["good"].is_paused and not rows["paused_one"].is_paused
        assert rows["good"].last_parsed_time == later
        assert rows["paused_one"].description == "now described"
        assert not rows["hourly"].is_active
        serialized = {s.dag_id: s for s in session.scalars(select(SerializedDagModel))}
        assert serialized["good"].last_updated == first_update
        assert serialized["paused_one"].last_updated == later

        dags = load_serialized_dags(session)
        assert sorted(dags) == ["good", "hourly", "paused_one"]
        assert sorted(load_serialized_dags(session, only_active=True)) == ["good", "paused_one"]
        good_dag = load_serialized_dags(session, ["good"])["good"]
        assert isinstance(good_dag.get_task("a"), SerializedOperator)
        assert good_dag.get_task("a").downstream_task_ids == {"b"}
        assert good_dag.timetable.summary == "@daily"


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_two_writers_recording_the_same_new_dags_both_succeed(
    dags_folder: Path, session_factory: SessionFactory
) -> None:
    """The DAG processors of two schedulers (or one and ``squall dags trigger``) record the
    same new DAG at the same moment: the second waits for the first's transaction and
    updates the row it committed, instead of losing its INSERT on the primary key."""
    write(dags_folder, "good.py", GOOD_DAG)
    result = parse_files_isolated(list_dag_files(dags_folder), dags_folder, timeout=30)
    assert result.serialized
    errors: list[BaseException] = []

    def second_writer() -> None:
        try:
            with session_factory() as theirs:
                sync_to_db(theirs, result, paused_at_creation=False, now=NOW)
                theirs.commit()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    with session_factory() as first:
        sync_to_db(first, result, paused_at_creation=False, now=NOW)  # rows flushed, held
        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive(), "the second writer did not wait for the first"
        first.commit()
    thread.join(30)
    assert not thread.is_alive() and errors == []
    with session_factory() as session:
        assert set(session.scalars(select(DagModel.dag_id))) == set(result.serialized)


def test_sync_broken_file_keeps_previous_dags(
    dags_folder: Path, sqlite_session_factory: SessionFactory
) -> None:
    path = write(dags_folder, "good.py", GOOD_DAG)
    result = parse_files_isolated([path], dags_folder, timeout=30)
    with sqlite_session_factory() as session:
        sync_to_db(session, result, paused_at_creation=False, now=NOW)
        session.commit()
    path.write_text(GOOD_DAG + "\nthis is not python\n")
    result = parse_files_isolated([path], dags_folder, timeout=30)
    with sqlite_session_factory() as session:
        sync_to_db(session, result, paused_at_creation=False, now=NOW)
        session.commit()
        row = session.get(DagModel, "good")
        assert row is not None and row.is_active and row.has_import_errors
        assert len(session.scalars(select(ImportError_)).all()) == 1
    path.write_text(GOOD_DAG)
    result = parse_files_isolated([path], dags_folder, timeout=30)
    with sqlite_session_factory() as session:
        sync_to_db(session, result, paused_at_creation=False, now=NOW,
                   known_files=[str(path)])
        session.commit()
        row = session.get(DagModel, "good")
        assert row is not None and row.is_active and not row.has_import_errors
        assert session.scalars(select(ImportError_)).all() == []
    with sqlite_session_factory() as session:
        sync_to_db(session, ParseResult(), paused_at_creation=False, now=NOW, known_files=[])
        session.commit()
        row = session.get(DagModel, "good")
        assert row is not None and not row.is_active


# --------------------------------------------------------------------------- serialization


class _Op(BaseOperator):
    template_fields = ("command",)

    def __init__(self, *, command: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.command = command

    def execute(self, context: Context) -> Any:
        return self.command


class _Sensor(BaseOperator):
    def __init__(self, *, mode: str = "poke", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self.poke_interval = 30.0


def _build_dag(schedule: Any) -> DAG:
    # a param that is not JSON: Airflow 2.10 warns (Param._warn_if_not_json), and so do we
    with pytest.warns(DeprecationWarning, match="non-json-serializable params"), DAG(
        "round_trip",
        schedule=schedule,
        start_date=pendulum.datetime(2024, 1, 1, tz="Europe/Amsterdam"),
        end_date=datetime(2030, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=2,
        max_active_tasks=7,
        dagrun_timeout=timedelta(hours=1),
        tags=["b", "a"],
        params={"x": 1, "nested": {"y": [1, 2]}, "odd": object},
        doc_md="# doc",
        on_failure_callback=lambda ctx: None,
        is_paused_upon_creation=False,
    ) as dag:
        start = _Op(task_id="start", command="echo {{ ds }}", retries=3,
                    retry_delay=timedelta(seconds=30), retry_exponential_backoff=True,
                    max_retry_delay=timedelta(minutes=10), priority_weight=10,
                    execution_timeout=timedelta(minutes=5), executor_config={"k": "v"})
        with TaskGroup("grp", tooltip="a group") as group:
            left = _Op(task_id="left", pool="small", pool_slots=2, queue="fast",
                       weight_rule="upstream")
            right = EmptyOperator(task_id="right", trigger_rule="one_failed",
                                  depends_on_past=True, max_active_tis_per_dag=1)
            with TaskGroup("inner", prefix_group_id=False):
                deep = EmptyOperator(task_id="deep", priority_weight=3,
                                     weight_rule="absolute")
        wait = _Sensor(task_id="wait", mode="reschedule", wait_for_downstream=True)
        end = EmptyOperator(task_id="end", trigger_rule="all_done", owner="bob")
        start >> group >> end
        left >> deep
        wait >> end
    assert right is not None
    return dag


@pytest.mark.parametrize(
    "schedule",
    ["@daily", "*/5 * * * *", None, "@once", timedelta(hours=6), relativedelta(months=1)],
)
def test_serialization_round_trip(schedule: Any) -> None:
    original = _build_dag(schedule)
    data = json.loads(json.dumps(serialize_dag(original)))  # strictly JSON
    rebuilt = deserialize_dag(data)

    assert rebuilt.dag_id == original.dag_id
    assert rebuilt.timetable == original.timetable
    assert rebuilt.timetable.summary == original.timetable.summary
    assert rebuilt.schedule == original.schedule
    assert rebuilt.timezone.name == "Europe/Amsterdam"
    assert rebuilt.start_date == original.start_date
    assert rebuilt.end_date == original.end_date
    assert rebuilt.catchup is False
    assert (rebuilt.max_active_runs, rebuilt.max_active_tasks) == (2, 7)
    assert rebuilt.dagrun_timeout == timedelta(hours=1)
    assert rebuilt.tags == ["a", "b"]
    assert rebuilt.params == {"x": 1, "nested": {"y": [1, 2]}, "odd": repr(object)}
    assert rebuilt.doc_md == "# doc"
    assert getattr(rebuilt, "has_on_failure_callback") is True  # noqa: B009
    assert getattr(rebuilt, "has_on_success_callback") is False  # noqa: B009
    assert rebuilt.is_paused_upon_creation is False
    assert rebuilt.task_ids == original.task_ids

    fields = [
        "upstream_task_ids", "downstream_task_ids", "trigger_rule", "retries", "retry_delay",
        "retry_exponential_backoff", "max_retry_delay", "execution_timeout", "priority_weight",
        "weight_rule", "pool", "pool_slots", "queue", "depends_on_past", "wait_for_downstream",
        "max_active_tis_per_dag", "executor_config", "start_date", "end_date", "owner",
        "doc_md", "priority_weight_total", "operator_name", "label",
    ]
    for task in original.tasks:
        copy = rebuilt.get_task(task.task_id)
        assert isinstance(copy, SerializedOperator)
        for name in fields:
            assert getattr(copy, name) == getattr(task, name), (task.task_id, name)
        assert tuple(copy.template_fields) == tuple(task.template_fields)
        group = task.task_group
        assert copy.task_group is not None and group is not None
        assert copy.task_group.group_id == group.group_id
    assert rebuilt.get_task("start").priority_weight_total == 10 + 1 + 1 + 3 + 1
    assert rebuilt.get_task("grp.deep").priority_weight_total == 3
    assert rebuilt.get_task("end").operator_name == "EmptyOperator"
    wait = rebuilt.get_task("wait")
    assert isinstance(wait, SerializedOperator)
    assert wait.is_sensor and wait.mode == "reschedule"
    assert wait.sensor_settings is not None and wait.sensor_settings["poke_interval"] == 30.0
    assert not getattr(rebuilt.get_task("end"), "is_sensor")  # noqa: B009
    grp = rebuilt.task_group.children["grp"]
    assert isinstance(grp, TaskGroup)
    assert rebuilt.get_task("grp.deep").task_group is grp.children["grp.inner"]
    rebuilt.validate()

    # a rebuilt DAG serializes to the same data, so the hash is stable
    assert serialize_dag(rebuilt) == data
    assert dag_hash(serialize_dag(rebuilt)) == dag_hash(data)
    assert dag_hash(serialize_dag(_build_dag(schedule))) == dag_hash(data)

    with pytest.raises(SquallError, match="stand-in"):
        rebuilt.get_task("start").execute({})


def test_serialization_hash_changes_with_the_dag() -> None:
    base = dag_hash(serialize_dag(_build_dag("@daily")))
    changed = _build_dag("@daily")
    changed.get_task("end").retries = 5
    assert dag_hash(serialize_dag(changed)) != base


def test_deserialize_rejects_unknown_version() -> None:
    data = serialize_dag(_build_dag(None))
    data["__version"] = 99
    with pytest.raises(SquallError, match="version"):
        deserialize_dag(data)
