"""The DAG processor (squall.scheduler.dag_processor): its own process, the interval, wake-ups,
stopping; and the scheduler running with it. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select

from squall.common.db import SessionFactory, session_scope
from squall.common.models import DagModel, ImportError_, SerializedDagModel
from squall.common.procutil import descendant_pids
from squall.common.settings import Settings
from squall.scheduler.dag_processor import DagProcessor, parse_and_sync_once
from squall.scheduler.job import SchedulerJob
from tests.support.scheduling import FakeExecutor
from tests.support.services import wait_until

DAG_FILE = '''
import pendulum
from squall import DAG, EmptyOperator

with DAG("NAME", schedule=SCHEDULE, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    EmptyOperator(task_id="only")
'''


def write_dag(folder: Path, name: str, schedule: str = "None") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(
        DAG_FILE.replace("NAME", name).replace("SCHEDULE", schedule))


#: no notifications and a scan every hour: what the listing and the stat check do alone
LISTING_ONLY: dict[str, Any] = {"dag_dir_watch": False, "dag_dir_poll_interval": 3600}


def settings_for(db_url: str, home: Path, **scheduler: Any) -> Settings:
    return Settings.load(env={"SQUALL_HOME": str(home)}, overrides={
        "database": {"sql_alchemy_conn": db_url},
        "core": {"dags_folder": str(home / "dags"), "dagbag_import_timeout": 20,
                 "dags_are_paused_at_creation": False},
        "scheduler": {"scheduler_idle_sleep_time": 0.05, **scheduler},
    })


def active_dags(sf: SessionFactory) -> set[str]:
    with session_scope(sf) as session:
        return set(session.scalars(select(DagModel.dag_id)
                                   .where(DagModel.is_active.is_(True))))


def test_parse_and_sync_once(db_url: str, tmp_path: Path,
                             session_factory: SessionFactory) -> None:
    settings = settings_for(db_url, tmp_path)
    write_dag(tmp_path / "dags", "good")
    (tmp_path / "dags" / "bad_dag.py").write_text(
        "# a DAG file\nraise RuntimeError('broken on purpose')\n")
    result = parse_and_sync_once(settings, session_factory)
    assert set(result.serialized) == {"good"}
    assert active_dags(session_factory) == {"good"}
    with session_scope(session_factory) as session:
        [error] = session.scalars(select(ImportError_)).all()
        assert "broken on purpose" in error.stacktrace


def test_an_unchanged_file_gets_back_a_dag_id_freed_by_another(
        db_url: str, tmp_path: Path, session_factory: SessionFactory) -> None:
    """``second.py`` lost dag_id ``shared`` to ``first.py``; when ``first.py`` drops it, the
    unchanged ``second.py`` (whose answer is not decoded) is parsed again in full."""
    settings = settings_for(db_url, tmp_path)
    folder = tmp_path / "dags"
    write_dag(folder, "first")
    first, second = folder / "first.py", folder / "second.py"
    first.write_text(first.read_text().replace('"first"', '"shared"'))
    parse_and_sync_once(settings, session_factory, files=[(first, folder)])
    second.write_text(first.read_text())
    both = [(first, folder), (second, folder)]
    lost = parse_and_sync_once(settings, session_factory, files=both)
    assert "already defined in" in lost.import_errors[str(second)]
    known = {name: stat.fingerprint for name, stat in lost.file_stats.items()}

    first.write_text(first.read_text().replace('"shared"', '"other"'))
    result = parse_and_sync_once(settings, session_factory, files=both, previous=known)
    assert result.unchanged == []
    assert active_dags(session_factory) == {"shared", "other"}
    with session_scope(session_factory) as session:
        assert session.get_one(DagModel, "shared").fileloc == str(second)


def test_missing_dags_folder_deactivates_nothing(db_url: str, tmp_path: Path,
                                                 session_factory: SessionFactory) -> None:
    settings = settings_for(db_url, tmp_path)
    write_dag(tmp_path / "dags", "kept")
    parse_and_sync_once(settings, session_factory)
    (tmp_path / "dags" / "kept.py").rename(tmp_path / "kept.py")
    (tmp_path / "dags").rmdir()
    parse_and_sync_once(settings, session_factory)
    assert active_dags(session_factory) == {"kept"}


def test_processor_parses_on_start_on_request_and_stops(
        db_url: str, tmp_path: Path, session_factory: SessionFactory) -> None:
    settings = settings_for(db_url, tmp_path, min_file_process_interval=3600)
    write_dag(tmp_path / "dags", "first")
    processor = DagProcessor(settings)
    processor.start()
    try:
        assert processor.is_alive()
        wait_until(lambda: "first" in active_dags(session_factory)
                   and processor.passes >= 1, 60, message="the first pass")
        passes = processor.passes
        write_dag(tmp_path / "dags", "second")
        # the interval is an hour: only the request makes it parse again (the pass counter
        # moves just after the pass's commit, so wait for both)
        processor.request_parse()
        wait_until(lambda: "second" in active_dags(session_factory)
                   and processor.passes > passes, 60, message="a pass on request")
    finally:
        processor.stop(grace=30)
    assert not processor.is_alive()


def write_dags(folder: Path, name: str, *dag_ids: str) -> None:
    """``name.py`` defining a DAG per dag_id."""
    (folder / f"{name}.py").write_text("".join(
        DAG_FILE.replace("NAME", dag_id).replace("SCHEDULE", "None") for dag_id in dag_ids))


def test_processor_interval(db_url: str, tmp_path: Path,
                            session_factory: SessionFactory) -> None:
    # min_file_process_interval: a known file is parsed again (a change to it is seen)
    settings = settings_for(db_url, tmp_path, min_file_process_interval=0.5,
                            dag_dir_list_interval=3600)
    write_dag(tmp_path / "dags", "early")
    processor = DagProcessor(settings)
    processor.start()
    try:
        wait_until(lambda: processor.passes >= 1, 60, message="the first pass")
        write_dags(tmp_path / "dags", "early", "early", "late")
        wait_until(lambda: "late" in active_dags(session_factory), 30,
                   message="a pass after the interval")
    finally:
        processor.stop(grace=30)


def test_a_new_file_is_parsed_when_the_folder_is_listed(
        db_url: str, tmp_path: Path, session_factory: SessionFactory) -> None:
    # dag_dir_list_interval: the folder is listed again, and a new file parsed, without
    # waiting for the next pass of the files already known
    settings = settings_for(db_url, tmp_path, min_file_process_interval=3600,
                            dag_dir_list_interval=0.5, **LISTING_ONLY)
    write_dag(tmp_path / "dags", "first")
    processor = DagProcessor(settings)
    processor.start()
    try:
        wait_until(lambda: "first" in active_dags(session_factory), 60,
                   message="the first pass")
        write_dag(tmp_path / "dags", "second")
        wait_until(lambda: "second" in active_dags(session_factory), 30,
                   message="the listing after the interval")
    finally:
        processor.stop(grace=30)


def test_new_files_wait_for_the_folder_listing(
        db_url: str, tmp_path: Path, session_factory: SessionFactory) -> None:
    settings = settings_for(db_url, tmp_path, min_file_process_interval=0.2,
                            dag_dir_list_interval=3600, **LISTING_ONLY)
    folder = tmp_path / "dags"
    write_dag(folder, "known")
    processor = DagProcessor(settings)
    processor.start()
    try:
        wait_until(lambda: "known" in active_dags(session_factory), 60,
                   message="the first pass")
        write_dag(folder, "newcomer")
        write_dags(folder, "known", "known", "sibling")
        wait_until(lambda: "sibling" in active_dags(session_factory), 30,
                   message="the known file parsed again")
        passes = processor.passes
        wait_until(lambda: processor.passes >= passes + 2, 30,
                   message="a whole pass begun after the new file was written")
        assert "newcomer" not in active_dags(session_factory)  # not listed yet

        processor.request_parse()  # a request lists the folder first
        wait_until(lambda: "newcomer" in active_dags(session_factory), 30,
                   message="a pass on request")
    finally:
        processor.stop(grace=30)


def test_a_listing_of_a_missing_folder_forgets_no_file(
        db_url: str, tmp_path: Path, session_factory: SessionFactory) -> None:
    settings = settings_for(db_url, tmp_path, min_file_process_interval=0.2,
                            dag_dir_list_interval=3600)
    folder = tmp_path / "dags"
    write_dag(folder, "kept")
    processor = DagProcessor(settings)
    processor.start()
    try:
        wait_until(lambda: "kept" in active_dags(session_factory), 60,
                   message="the first pass")
        folder.rename(tmp_path / "unmounted")
        processor.request_parse()  # lists the folder while it is missing
        passes = processor.passes
        wait_until(lambda: processor.passes >= passes + 2, 30, message="passes without it")
        (tmp_path / "unmounted").rename(folder)
        passes = processor.passes
        wait_until(lambda: processor.passes >= passes + 2, 30, message="passes with it back")
        assert active_dags(session_factory) == {"kept"}
    finally:
        processor.stop(grace=30)


def test_scheduler_runs_its_processor(db_url: str, tmp_path: Path,
                                      session_factory: SessionFactory) -> None:
    settings = settings_for(db_url, tmp_path, min_file_process_interval=0)
    write_dag(tmp_path / "dags", "hourly", schedule='"@hourly"')
    fake = FakeExecutor()
    processor = DagProcessor(settings)
    job = SchedulerJob(settings, session_factory, fake, dag_processor=processor)
    thread = threading.Thread(target=job.run)
    thread.start()
    try:
        wait_until(lambda: len(fake.published) >= 1, 90,
                   message="a scheduled run's task to be published")
        assert fake.published[0].key.dag_id == "hourly"
        assert processor.is_alive()
    finally:
        job.stop()
        thread.join(60)
    assert not thread.is_alive()
    assert not processor.is_alive()


def test_processor_that_died_is_restarted(db_url: str, tmp_path: Path,
                                          session_factory: SessionFactory) -> None:
    settings = settings_for(db_url, tmp_path, min_file_process_interval=3600)
    write_dag(tmp_path / "dags", "phoenix")
    processor = DagProcessor(settings)
    processor.start()
    try:
        wait_until(lambda: processor.passes >= 1, 60, message="the first pass")
        pid = processor.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not processor.is_alive(), 30, message="the processor to die")
        processor.tick()
        assert processor.is_alive() and processor.pid != pid
        wait_until(lambda: processor.passes >= 2, 60, message="a pass after the restart")
    finally:
        processor.stop(grace=30)
    processor.tick()  # a stopped processor stays stopped
    assert not processor.is_alive()


# --------------------------------------------------------------------------- change detection


def serialized_hashes(sf: SessionFactory) -> dict[str, str]:
    with session_scope(sf) as session:
        return {dag_id: dag_hash for dag_id, dag_hash in session.execute(
            select(SerializedDagModel.dag_id, SerializedDagModel.dag_hash))}


def test_a_changed_file_is_parsed_long_before_the_interval(
        db_url: str, tmp_path: Path, session_factory: SessionFactory) -> None:
    # an hour between periodic parses, listings and scans: only the stat check can see it
    settings = settings_for(db_url, tmp_path, min_file_process_interval=3600,
                            dag_dir_list_interval=3600, file_check_interval=0.2,
                            **LISTING_ONLY)
    folder = tmp_path / "dags"
    write_dag(folder, "changing")
    write_dag(folder, "still")
    processor = DagProcessor(settings)
    processor.start()
    try:
        wait_until(lambda: {"changing", "still"} <= set(serialized_hashes(session_factory)),
                   60, message="the first parse")
        before = serialized_hashes(session_factory)["changing"]
        (folder / "changing.py").write_text(
            DAG_FILE.replace("NAME", "changing").replace("SCHEDULE", "None")
            + "    EmptyOperator(task_id='second')\n")
        wait_until(lambda: serialized_hashes(session_factory).get("changing") != before,
                   30, message="the changed file parsed again")
    finally:
        processor.stop(grace=30)


def test_an_unchanged_answer_is_not_synced_again(
        db_url: str, tmp_path: Path, session_factory: SessionFactory) -> None:
    # every file is parsed again every 0.2 s; a broken file's import_error row would be
    # replaced by every sync of its answer: it stays the same row while it answers the same
    settings = settings_for(db_url, tmp_path, min_file_process_interval=0.2,
                            dag_dir_list_interval=3600)
    folder = tmp_path / "dags"
    write_dag(folder, "fine")
    (folder / "broken_dag.py").write_text("# a DAG file\nraise RuntimeError('broken')\n")

    def import_errors() -> list[tuple[int, Any]]:
        with session_scope(session_factory) as session:
            return [(e.id, e.timestamp) for e in session.scalars(select(ImportError_))]

    processor = DagProcessor(settings)
    processor.start()
    try:
        wait_until(lambda: len(import_errors()) == 1 and "fine" in active_dags(session_factory),
                   60, message="the first parse")
        # past the "modified just now" window, in which a file is parsed once more
        wait_until(lambda: processor.passes >= 4, 60, message="more passes")
        first = import_errors()
        passes = processor.passes
        wait_until(lambda: processor.passes >= passes + 4, 60, message="passes meanwhile")
        assert import_errors() == first
        assert "fine" in active_dags(session_factory)
    finally:
        processor.stop(grace=30)


def test_a_removed_file_is_deactivated_at_once(
        db_url: str, tmp_path: Path, session_factory: SessionFactory) -> None:
    settings = settings_for(db_url, tmp_path, min_file_process_interval=3600,
                            dag_dir_list_interval=3600, file_check_interval=0.2,
                            **LISTING_ONLY)
    folder = tmp_path / "dags"
    write_dag(folder, "staying")
    write_dag(folder, "leaving")
    processor = DagProcessor(settings)
    processor.start()
    try:
        wait_until(lambda: active_dags(session_factory) == {"staying", "leaving"}, 60,
                   message="the first parse")
        (folder / "leaving.py").unlink()
        wait_until(lambda: active_dags(session_factory) == {"staying"}, 30,
                   message="the removed file's DAG deactivated")
    finally:
        processor.stop(grace=30)


# --------------------------------------------------------------------------- the process


_SCHEDULER_STANDIN = """
import json, sys
from pathlib import Path
from squall.common.settings import Settings
from squall.scheduler.dag_processor import DagProcessor
from tests.support.services import wait_until

db_url, home = sys.argv[1], Path(sys.argv[2])
settings = Settings.load(env={"SQUALL_HOME": str(home)}, overrides={
    "database": {"sql_alchemy_conn": db_url},
    "core": {"dags_folder": str(home / "dags")},
    "scheduler": {"min_file_process_interval": 3600},
})
processor = DagProcessor(settings)
processor.start()
wait_until(lambda: processor.passes >= 1, 60, message="the first pass")
print(processor.pid, flush=True)
sys.stdin.read()  # until the test kills us
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[0] != b"Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_the_processor_is_a_plain_subprocess_that_outlives_no_scheduler(
        db_url: str, tmp_path: Path) -> None:
    write_dag(tmp_path / "dags", "lonely")
    repo = Path(__file__).resolve().parents[2]
    processor_pid: int | None = None
    with subprocess.Popen(
            [sys.executable, "-c", _SCHEDULER_STANDIN, db_url, str(tmp_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=repo,
            env={**os.environ, "PYTHONPATH": str(repo)}) as scheduler:
        try:
            assert scheduler.stdout is not None
            line = scheduler.stdout.readline()
            assert line.strip().isdigit(), f"the stand-in said {line!r}"
            processor_pid = int(line)
            tree = {pid: _cmdline(pid) for pid in descendant_pids(scheduler.pid)}
            assert processor_pid in tree
            assert "squall.scheduler.dag_processor" in tree[processor_pid]
            # no multiprocessing resource tracker, no spawned interpreter
            assert not [cmd for cmd in tree.values() if "multiprocessing" in cmd], tree
            scheduler.kill()
            scheduler.wait(30)
            wait_until(lambda: not _alive(processor_pid), 30,
                       message="the processor to exit after the scheduler's SIGKILL")
        finally:
            if scheduler.poll() is None:
                scheduler.kill()
                scheduler.wait(30)
            if processor_pid is not None and _alive(processor_pid):
                os.kill(processor_pid, signal.SIGKILL)


# --------------------------------------------------------------------------- the folder watch


def test_new_files_are_seen_without_a_listing_and_a_burst_is_batched(
        db_url: str, tmp_path: Path, session_factory: SessionFactory) -> None:
    """With notifications (the default), new files are parsed though the folder is listed
    only every hour; 200 files copied at once cost a few batches, not one each (ADR 32)."""
    settings = settings_for(db_url, tmp_path, min_file_process_interval=3600,
                            dag_dir_list_interval=3600)
    folder = tmp_path / "dags"
    write_dag(folder, "first")
    processor = DagProcessor(settings)
    processor.start()
    try:
        wait_until(lambda: "first" in active_dags(session_factory)
                   and processor.passes >= 1, 60, message="the first pass")
        staging = tmp_path / "staging"
        for n in range(200):
            write_dag(staging, f"burst_{n:03d}")
        passes = processor.passes
        for path in sorted(staging.iterdir()):
            path.rename(folder / path.name)
        wanted = {f"burst_{n:03d}" for n in range(200)}
        wait_until(lambda: wanted <= active_dags(session_factory), 120,
                   message="the 200 new files parsed")
        # 200 files at most 64 a batch: 4 batches, a few more when the copy straddles
        # two notification batches; one batch per file would be 200
        assert processor.passes - passes < 40
    finally:
        processor.stop(grace=30)
