"""Every ``record_event`` call in Squall names its event by one of :mod:`squall.runs.audit`'s
constants (or its ``*_event`` helpers), so the event names stay the documented few
(docs/adr/0033-audit-log.md), and the helpers map each state to a known event."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from squall.runs import audit

SQUALL = Path(audit.__file__).resolve().parents[1]
HELPERS = {"task_mark_event", "run_mark_event", "paused_event"}


def _calls() -> list[tuple[str, ast.Call]]:
    found = []
    for path in sorted(SQUALL.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name)
                    and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
                    == "record_event"):
                found.append((f"{path.relative_to(SQUALL)}:{node.lineno}", node))
    return found


def _known(event: ast.expr) -> bool:
    """``audit.NAME`` of a known event, an ``audit.*_event(...)`` helper, or a choice of
    those (``a if x else b``)."""
    if isinstance(event, ast.IfExp):
        return _known(event.body) and _known(event.orelse)
    if isinstance(event, ast.Attribute):
        return getattr(audit, event.attr, None) in audit.EVENTS
    if isinstance(event, ast.Name):  # from squall.runs.audit import NAME
        return getattr(audit, event.id, None) in audit.EVENTS
    return (isinstance(event, ast.Call) and isinstance(event.func, ast.Attribute)
            and event.func.attr in HELPERS)


def test_every_call_names_a_known_event() -> None:
    calls = _calls()
    assert len(calls) >= 15, calls  # the API's, the UI's and the CLI's actions
    for where, call in calls:
        assert _known(call.args[1]), where
        source = next((k.value for k in call.keywords if k.arg == "source"), None)
        # a constant, or the parameter of a helper the API and the UI share (its callers name
        # theirs; record_event refuses an unknown one)
        assert ((isinstance(source, ast.Constant) and source.value in audit.SOURCES)
                or (isinstance(source, ast.Name) and source.id == "source")), where


@pytest.mark.parametrize("state, event", [
    ("success", "success"), ("failed", "failed"), ("skipped", "skipped")])
def test_task_marks(state: str, event: str) -> None:
    assert audit.task_mark_event(state) == event in audit.EVENTS


@pytest.mark.parametrize("state, event", [
    ("success", "dagrun_success"), ("failed", "dagrun_failed"), ("queued", "dagrun_queued")])
def test_run_marks(state: str, event: str) -> None:
    assert audit.run_mark_event(state) == event in audit.EVENTS


def test_cli_owner_names_the_os_user() -> None:
    assert audit.cli_owner().startswith("cli:") and len(audit.cli_owner()) > 4
