"""``squall datasets list | details | events`` as a user runs them: ``python -m squall`` in a
subprocess on the SQLite database under SQUALL_HOME, holding the datasets, references and
events of tests/support/datasets.py (written as the DAG processor and the scheduler write
them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from squall.common.db import make_engine, make_session_factory
from tests.integration.test_cli import as_json, assert_clean_error, ok, squall, words
from tests.support.datasets import CLEAN, RAW, REPORT, UNUSED, World, build_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    ok(squall(tmp_path, "db", "migrate"))
    engine = make_engine(f"sqlite:///{tmp_path / 'squall.db'}")
    try:
        yield build_world(make_session_factory(engine))
    finally:
        engine.dispose()


def test_list_shows_producers_consumers_and_the_last_event(tmp_path: Path,
                                                           world: World) -> None:
    rows = as_json(ok(squall(tmp_path, "datasets", "list", "-o", "json")))
    by_uri = {r["uri"]: r for r in rows}
    assert [r["uri"] for r in rows] == sorted([RAW, CLEAN, REPORT, UNUSED])
    assert by_uri[RAW]["producers"] == ["ingest.extract"]
    assert by_uri[RAW]["consumers"] == ["report_all", "report_any"]
    # a DAG scheduled on an alias consumes what the alias resolved to
    assert by_uri[CLEAN]["consumers"] == ["by_alias", "report_all"]
    assert by_uri[RAW]["last_event"]["id"] == world.raw_event
    assert by_uri[RAW]["last_event"]["created_dagruns"][0]["dag_run_id"] == world.run_id
    assert by_uri[REPORT]["last_event"] is None
    assert by_uri[UNUSED] == {"uri": UNUSED, "producers": [], "consumers": [],
                              "last_event": None, "orphaned": True}
    assert not by_uri[RAW]["orphaned"]

    table = words(ok(squall(tmp_path, "datasets", "list")).stdout)
    for fragment in ("uri", "producers", "consumers", "last_event", RAW, "ingest.extract",
                     "report_all, report_any",
                     "2024-01-01T01:00:00+00:00 by ingest.extract in manual__1", "never",
                     f"{UNUSED} (orphaned)"):
        assert fragment in table, fragment

    lake = as_json(ok(squall(tmp_path, "datasets", "list", "--uri-pattern", "CLEAN",
                             "-o", "json")))
    assert [r["uri"] for r in lake] == [CLEAN]
    published = as_json(ok(squall(tmp_path, "datasets", "list", "--dag-id", "publish",
                                  "--dag-id", "report_all", "-o", "json")))
    assert [r["uri"] for r in published] == sorted([RAW, CLEAN, REPORT])


def test_details_of_one_dataset(tmp_path: Path, world: World) -> None:
    got = as_json(ok(squall(tmp_path, "datasets", "details", CLEAN, "-o", "json")))
    assert got["uri"] == CLEAN
    assert [(p["dag_id"], p["task_id"]) for p in got["producing_tasks"]] == [
        ("ingest", "transform")]
    # by_alias's alias resolved to CLEAN (its event): by_alias references CLEAN as Airflow
    # 2.10.5's reparse of it does (DatasetManager.register_dataset_change), so no consumer
    # is left to name through the alias alone
    assert [c["dag_id"] for c in got["consuming_dags"]] == ["by_alias", "report_all"]
    assert [a["name"] for a in got["aliases"]] == ["lake-clean"]
    assert got["consumers_through_aliases"] == []
    assert sorted(q["dag_id"] for q in got["queued_events"]) == ["by_alias", "report_all"]
    assert got["last_event"]["id"] == world.clean_event and got["total_events"] == 1
    assert got["orphaned"] is False

    table = words(ok(squall(tmp_path, "datasets", "details", CLEAN)).stdout)
    for fragment in ("ingest.transform", "lake-clean", "by_alias", "queued for",
                     '{"format": "parquet"}', "by ingest.transform in manual__1"):
        assert fragment in table, fragment
    assert_clean_error(squall(tmp_path, "datasets", "details", "s3://nowhere"), 1,
                       "dataset 's3://nowhere' is not known")


def test_events_newest_first_filtered(tmp_path: Path, world: World) -> None:
    events = as_json(ok(squall(tmp_path, "datasets", "events", "-o", "json")))
    assert [e["id"] for e in events] == [world.clean_event, world.raw_event]
    assert events[1]["extra"] == {"rows": 10}
    assert [e["id"] for e in as_json(ok(squall(tmp_path, "datasets", "events", RAW,
                                               "-o", "json")))] == [world.raw_event]
    assert as_json(ok(squall(tmp_path, "datasets", "events", "--dag-id", "publish",
                             "-o", "json"))) == []
    assert [e["id"] for e in as_json(ok(squall(
        tmp_path, "datasets", "events", "--dag-id", "ingest", "--limit", "1",
        "-o", "json")))] == [world.clean_event]
    table = words(ok(squall(tmp_path, "datasets", "events")).stdout)
    for fragment in ("ingest.extract in manual__1", '{"rows": 10}',
                     f"report_all/{world.run_id}", CLEAN):
        assert fragment in table, fragment
    assert_clean_error(squall(tmp_path, "datasets", "events", "s3://nowhere"), 1,
                       "dataset 's3://nowhere' is not known")
    bad = squall(tmp_path, "datasets", "events", "--limit", "0")
    assert bad.returncode == 2 and "must be 1 or more" in bad.stderr
