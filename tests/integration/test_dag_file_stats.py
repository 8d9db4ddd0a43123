"""``sync_to_db`` and the ``dag_file`` table: each file's parse stats recorded (upserted,
deleted with the file), files whose answer was unchanged kept as they are, and a dag_id
another known file still defines left with that file. Real parses (child processes) on
SQLite and PostgreSQL (the ``session_factory`` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

from squall.common.db import SessionFactory
from squall.common.models import DagFile, DagModel, ImportError_
from squall.dag_processing.dagbag import FileStat, ParseResult, parse_files_isolated
from squall.dag_processing.sync import sync_to_db

pytestmark = pytest.mark.integration

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)

TWO_DAGS = """\
from squall.sdk.dag import DAG
from squall.sdk.operators.empty import EmptyOperator

with DAG("one", schedule=None):
    EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")
with DAG("two", schedule=None):
    EmptyOperator(task_id="c")
"""

BROKEN = "from squall.sdk.dag import DAG\nraise ValueError('broken on purpose')\n"


def dag_file(dag_id: str, *more: str) -> str:
    lines = ["from squall.sdk.dag import DAG",
             "from squall.sdk.operators.empty import EmptyOperator", ""]
    for name in (dag_id, *more):
        lines += [f"with DAG({name!r}, schedule=None):", "    EmptyOperator(task_id='t')"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "dags"
    path.mkdir()
    return path


def sync(factory: SessionFactory, result: ParseResult, now: datetime,
         known: list[Path] | None) -> None:
    with factory() as session:
        sync_to_db(session, result, paused_at_creation=False, now=now,
                   known_files=None if known is None else [str(p) for p in known])
        session.commit()


def stats(factory: SessionFactory) -> dict[str, DagFile]:
    with factory() as session:
        return {r.fileloc: r for r in session.scalars(select(DagFile))}


def fingerprints(result: ParseResult) -> dict[str, str]:
    return {path: stat.fingerprint for path, stat in result.file_stats.items()}


def test_sync_records_upserts_and_deletes_file_stats(
        folder: Path, session_factory: SessionFactory) -> None:
    good = folder / "good.py"
    good.write_text(TWO_DAGS)
    bad = folder / "bad.py"
    bad.write_text(BROKEN)
    first = parse_files_isolated([good, bad], folder, 30)
    sync(session_factory, first, NOW, [good, bad])

    rows = stats(session_factory)
    assert sorted(rows) == sorted([str(good), str(bad)])
    row = rows[str(good)]
    assert (row.dag_ids, row.task_count, row.has_import_error) == (["one", "two"], 3, False)
    assert row.last_parsed_at == NOW
    assert row.last_duration == first.file_stats[str(good)].duration > 0
    assert row.fingerprint == first.file_stats[str(good)].fingerprint
    assert rows[str(bad)].has_import_error and rows[str(bad)].dag_ids == []

    # the file changes: its row is updated in place
    good.write_text(dag_file("three"))
    second = parse_files_isolated([good, bad], folder, 30)
    sync(session_factory, second, LATER, [good, bad])
    rows = stats(session_factory)
    assert len(rows) == 2
    row = rows[str(good)]
    assert (row.dag_ids, row.task_count, row.last_parsed_at) == (["three"], 1, LATER)
    assert row.fingerprint == second.file_stats[str(good)].fingerprint != (
        first.file_stats[str(good)].fingerprint)

    # a file that is gone loses its row; without known_files nothing is deleted
    bad.unlink()
    sync(session_factory, parse_files_isolated([good], folder, 30), LATER, None)
    assert sorted(stats(session_factory)) == sorted([str(good), str(bad)])
    sync(session_factory, parse_files_isolated([good], folder, 30), LATER, [good])
    assert sorted(stats(session_factory)) == [str(good)]


def test_many_files_are_upserted_in_a_few_statements(
        session_factory: SessionFactory, engine: Engine) -> None:
    def result(duration: float) -> ParseResult:
        paths = [f"/dags/f{i:04d}.py" for i in range(1200)]
        return ParseResult(files_parsed=paths, file_stats={
            p: FileStat(p, duration, (f"d{i}",), 2, False, f"fp{i}")
            for i, p in enumerate(paths)})

    inserts: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO DAG_FILE"):
            inserts.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        sync(session_factory, result(0.5), NOW, None)
        sync(session_factory, result(0.25), LATER, None)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert 2 <= len(inserts) <= 10, len(inserts)
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(DagFile)) == 1200
        assert set(session.scalars(select(DagFile.last_duration))) == {0.25}
        assert set(session.scalars(select(DagFile.last_parsed_at))) == {LATER}


@pytest.fixture
def dag_updates(engine: Engine) -> Iterator[list[str]]:
    """The UPDATE statements on ``dag`` run while the test runs."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE DAG "):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


def test_unchanged_files_keep_their_dags_and_errors_and_get_parse_time(
        folder: Path, session_factory: SessionFactory, dag_updates: list[str]) -> None:
    good = folder / "good.py"
    good.write_text(TWO_DAGS)
    bad = folder / "bad.py"
    bad.write_text(BROKEN)
    first = parse_files_isolated([good, bad], folder, 30)
    sync(session_factory, first, NOW, [good, bad])
    with session_factory() as session:
        [error] = session.scalars(select(ImportError_)).all()
        error_before = (error.id, error.filename, error.stacktrace, error.timestamp)

    again = parse_files_isolated([good, bad], folder, 30, previous=fingerprints(first))
    assert sorted(again.unchanged) == sorted([str(good), str(bad)])
    dag_updates.clear()
    sync(session_factory, again, LATER, [good, bad])

    assert len(dag_updates) == 1, dag_updates  # one UPDATE for both DAGs of the file
    with session_factory() as session:
        rows = {r.dag_id: r for r in session.scalars(select(DagModel))}
        assert sorted(rows) == ["one", "two"]
        assert all(r.is_active and r.last_parsed_time == LATER for r in rows.values())
        [error] = session.scalars(select(ImportError_)).all()
        assert (error.id, error.filename, error.stacktrace, error.timestamp) == error_before
    recorded = stats(session_factory)
    assert recorded[str(good)].last_parsed_at == LATER
    assert recorded[str(good)].dag_ids == ["one", "two"]
    assert recorded[str(bad)].has_import_error


def test_a_dag_id_another_known_file_still_defines_stays_with_it(
        folder: Path, session_factory: SessionFactory) -> None:
    first = folder / "first.py"
    first.write_text(dag_file("shared"))
    sync(session_factory, parse_files_isolated([first], folder, 30), NOW, [first])

    # a new file defines the same dag_id (and another): only the new file is parsed, as the
    # DAG processor does for a file it has just found
    second = folder / "second.py"
    second.write_text(dag_file("shared", "own"))
    result = parse_files_isolated([second], folder, 30)
    assert sorted(result.serialized) == ["own", "shared"]
    sync(session_factory, result, LATER, [first, second])

    with session_factory() as session:
        shared = session.get_one(DagModel, "shared")
        assert shared.fileloc == str(first) and shared.is_active
        assert not shared.has_import_errors and shared.last_parsed_time == NOW
        own = session.get_one(DagModel, "own")
        assert own.fileloc == str(second) and own.is_active and own.has_import_errors
        [error] = session.scalars(select(ImportError_)).all()
        assert error.filename == str(second)
        assert error.stacktrace == f"dag_id shared is already defined in {first}"
    assert stats(session_factory)[str(second)].has_import_error

    # the first file is gone: the second one takes the dag_id and its error goes
    first.unlink()
    sync(session_factory, parse_files_isolated([second], folder, 30), LATER, [second])
    with session_factory() as session:
        shared = session.get_one(DagModel, "shared")
        assert shared.fileloc == str(second) and shared.is_active
        assert not session.get_one(DagModel, "own").has_import_errors
        assert session.scalars(select(ImportError_)).all() == []
    assert not stats(session_factory)[str(second)].has_import_error


def test_a_dag_id_moved_to_another_file_in_one_pass_goes_with_it(
        folder: Path, session_factory: SessionFactory) -> None:
    first = folder / "first.py"
    first.write_text(dag_file("moving", "stays"))
    sync(session_factory, parse_files_isolated([first], folder, 30), NOW, [first])

    # both files parsed in the same pass: the first no longer defines it
    first.write_text(dag_file("stays"))
    second = folder / "second.py"
    second.write_text(dag_file("moving"))
    sync(session_factory, parse_files_isolated([first, second], folder, 30), LATER,
         [first, second])
    with session_factory() as session:
        moving = session.get_one(DagModel, "moving")
        assert moving.fileloc == str(second) and moving.is_active
        assert session.scalars(select(ImportError_)).all() == []


def test_an_unchanged_file_whose_lost_dag_id_is_free_again_must_be_parsed_in_full(
        folder: Path, session_factory: SessionFactory) -> None:
    first = folder / "first.py"
    first.write_text(dag_file("shared", "kept"))
    second = folder / "second.py"
    second.write_text(dag_file("shared"))
    sync(session_factory, parse_files_isolated([first], folder, 30), NOW, [first])
    lost = parse_files_isolated([second], folder, 30)
    sync(session_factory, lost, NOW, [first, second])  # second: "already defined in first"

    # nothing changed: the dag_id is still held by the first file, nothing to do
    again = parse_files_isolated([first, second], folder, 30,
                                 previous={**fingerprints(lost), str(first): "?"})
    assert again.unchanged == [str(second)]
    with session_factory() as session:
        assert sync_to_db(session, again, paused_at_creation=False, now=LATER,
                          known_files=[str(first), str(second)]) == set()
        session.commit()

    # the first file drops the dag_id: the second file's answer was never decoded, so it is
    # returned to be parsed again without its fingerprint
    first.write_text(dag_file("kept"))
    freed = parse_files_isolated([first, second], folder, 30, previous=fingerprints(lost))
    assert freed.unchanged == [str(second)]
    with session_factory() as session:
        stale = sync_to_db(session, freed, paused_at_creation=False, now=LATER,
                           known_files=[str(first), str(second)])
        session.commit()
    assert stale == {str(second)}
    assert stats(session_factory)[str(second)].fingerprint == ""

    full = parse_files_isolated([second], folder, 30)
    with session_factory() as session:
        assert sync_to_db(session, full, paused_at_creation=False, now=LATER,
                          known_files=[str(first), str(second)]) == set()
        session.commit()
        shared = session.get_one(DagModel, "shared")
        assert shared.fileloc == str(second) and shared.is_active
        assert session.scalars(select(ImportError_)).all() == []
