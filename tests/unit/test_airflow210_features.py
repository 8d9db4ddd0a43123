"""docs/airflow-compat.md's table of every Airflow 2.10 core authoring feature is true: each
feature it calls supported imports cleanly under ``[core] airflow_compat``; each it calls
unsupported fails at import with the one-line error it quotes (issue 24 item 6). The probes
are in ``tests/unit/airflow210_features.py``."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from squall.compat import airflow as compat
from squall.dag_processing.loading import load_file
from tests.unit.airflow210_features import FEATURES, HEADER

DOC = Path(__file__).resolve().parents[2] / "docs" / "airflow-compat.md"
SECTION = "## Every Airflow 2.10 core authoring feature"


def _table() -> dict[str, str]:
    """feature -> its "in Squall" cell, from the doc's table."""
    text = DOC.read_text()
    assert SECTION in text, f"{DOC} has no section {SECTION!r}"
    rows: dict[str, str] = {}
    for line in text.split(SECTION, 1)[1].splitlines():
        if line.startswith("## "):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or len(cells) < 2 or cells[0] in ("feature", "---"):
            continue
        rows[cells[0].replace("\\|", "|")] = cells[1]
    return rows


@pytest.fixture(autouse=True)
def _no_compat_left() -> Iterator[None]:
    yield
    compat.uninstall()


def test_the_table_lists_every_probe_and_nothing_else() -> None:
    rows = _table()
    assert sorted(set(FEATURES) - set(rows)) == [], "features missing from the doc's table"
    assert sorted(set(rows) - set(FEATURES)) == [], "rows of the doc's table with no probe"


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_the_table_is_true(feature: str, tmp_path: Path) -> None:
    cell = _table()[feature]
    path = tmp_path / "probe.py"
    path.write_text(HEADER + FEATURES[feature] + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_file(path, tmp_path, airflow_compat=True)
    if cell.startswith("supported"):
        assert loaded.error is None, loaded.error
        assert loaded.dags
        return
    quoted = re.search(r"`([^`]+)`", cell)
    assert cell.startswith("not supported") and quoted, (
        f"{feature!r}: the cell must say 'supported', or 'not supported' with "
        f"the error in backquotes; got {cell!r}")
    assert loaded.error is not None, f"{feature!r} imported, but the doc says {cell!r}"
    last = loaded.error.strip().splitlines()[-1]
    assert quoted.group(1) in last, last
    assert len(last) < 300, f"not a one-line error: {last}"
