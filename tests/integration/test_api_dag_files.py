"""``GET /api/v1/dagFiles`` through a real uvicorn on PostgreSQL (answers checked against the
served OpenAPI document), after a real parse recorded by ``sync_to_db``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from squall.common.db import SessionFactory
from squall.common.models import utcnow
from squall.common.settings import Settings
from squall.dag_processing.dagbag import parse_files_isolated
from squall.dag_processing.sync import sync_to_db
from tests.support.api import Api, serve

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgres"],
                                                           indirect=True)]

TWO = """\
from squall.sdk.dag import DAG
from squall.sdk.operators.empty import EmptyOperator

with DAG("one", schedule=None):
    EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")
with DAG("two", schedule=None):
    EmptyOperator(task_id="c")
"""
ONE = TWO.split("with DAG(\"two\"")[0]
BROKEN = "from squall.sdk.dag import DAG\nraise ValueError('broken on purpose')\n"


@pytest.fixture
def api(tmp_path: Path, session_factory: SessionFactory) -> Iterator[Api]:
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)},
                             overrides={"api": {"page_size": 2, "maximum_page_limit": 5}})
    with serve(settings, session_factory) as client:
        yield client


def _ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def test_dag_files_lists_the_last_parses(api: Api, session_factory: SessionFactory,
                                         tmp_path: Path) -> None:
    assert _ok(api.get("/api/v1/dagFiles")) == {"dag_files": [], "total_entries": 0}
    folder = tmp_path / "dags"
    folder.mkdir()
    files = {"two.py": TWO, "one.py": ONE.replace('"one"', '"solo"'), "bad.py": BROKEN}
    for name, text in files.items():
        (folder / name).write_text(text)
    result = parse_files_isolated(sorted(folder.iterdir()), folder, 30)
    with session_factory() as session:
        sync_to_db(session, result, paused_at_creation=False, now=utcnow())
        session.commit()

    page = _ok(api.get("/api/v1/dagFiles", user="viewer"))
    assert page["total_entries"] == 3 and len(page["dag_files"]) == 2  # page_size 2
    everything = _ok(api.get("/api/v1/dagFiles", params={"limit": 5}))["dag_files"]
    durations = [f["last_duration"] for f in everything]
    assert durations == sorted(durations, reverse=True)  # slowest first by default
    assert page["dag_files"] == everything[:2]
    by_name = {Path(f["fileloc"]).name: f for f in everything}
    assert {k: (v["dag_ids"], v["dag_count"], v["task_count"], v["has_import_error"])
            for k, v in by_name.items()} == {
        "two.py": (["one", "two"], 2, 3, False),
        "one.py": (["solo"], 1, 2, False),
        "bad.py": ([], 0, 0, True),
    }
    assert by_name["two.py"]["fileloc"] == str(folder / "two.py")
    assert datetime.fromisoformat(by_name["two.py"]["last_parsed_at"]).tzinfo is not None

    by_path = _ok(api.get("/api/v1/dagFiles", params={"order_by": "fileloc", "offset": 1}))
    assert [Path(f["fileloc"]).name for f in by_path["dag_files"]] == ["one.py", "two.py"]
    assert api.get("/api/v1/dagFiles", params={"order_by": "nope"}).status_code == 400
    assert api.get("/api/v1/dagFiles", user=None).status_code == 401
