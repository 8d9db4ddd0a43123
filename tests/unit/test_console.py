"""A service's quiet console and ``-v`` (ADR 34): which records reach it, and who gets one."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from squall.cli import build_parser, configure_logging, log_level, quiet_console
from squall.common.celery_app import create_celery_app
from squall.common.console import (
    CONSOLE,
    QUIET_ENV,
    ConsoleFilter,
    make_quiet,
    quiet_if_inherited,
    tries_off_console,
)
from squall.common.settings import Settings


def _quiet(argv: list[str], tmp_path: Path, **env: str) -> bool:
    args = build_parser().parse_args(argv)
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path), **env})
    level = log_level(settings.logging.logging_level, verbose=args.verbose,
                      service=getattr(args, "service", False))
    return quiet_console(args, settings, level)


@pytest.mark.parametrize("argv", [["scheduler"], ["celery", "worker"], ["triggerer"],
                                  ["api"], ["standalone"]])
def test_the_services_consoles_are_quiet_unless_asked(argv: list[str], tmp_path: Path) -> None:
    assert _quiet(argv, tmp_path)
    assert not _quiet(["-v", *argv], tmp_path)  # -v: everything, at DEBUG
    assert not _quiet(argv, tmp_path, SQUALL__LOGGING__QUIET_CONSOLE="false")
    assert not _quiet(argv, tmp_path, SQUALL__LOGGING__LOGGING_LEVEL="DEBUG")


def test_standalone_and_the_triggerer_take_v_after_the_command_too(tmp_path: Path) -> None:
    assert not _quiet(["standalone", "-v"], tmp_path)
    assert not _quiet(["standalone", "--verbose"], tmp_path)
    assert not _quiet(["triggerer", "-v"], tmp_path)


def test_one_shot_commands_have_no_quiet_console(tmp_path: Path) -> None:
    assert not _quiet(["dags", "list"], tmp_path)
    assert not _quiet(["dags", "test", "some_dag"], tmp_path)  # prints the task logs


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """A quiet console on the root logger, taken off again afterwards."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    make_quiet(handler)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_a_quiet_console_shows_warnings_errors_and_what_is_marked(console: io.StringIO) -> None:
    log = logging.getLogger("squall.test_console")
    log.debug("detail")
    log.info("TaskInstance t: queued -> running")
    log.info("DagRun d r: success", extra=CONSOLE)
    log.warning("something odd")
    log.error("something wrong")
    assert console.getvalue().splitlines() == [
        "DagRun d r: success", "something odd", "something wrong"]


def test_a_try_s_records_stay_off_a_quiet_console(console: io.StringIO) -> None:
    log = logging.getLogger("squall.test_console")
    with tries_off_console():
        log.info("the task's output", extra=CONSOLE)
        log.warning("the task's warning")
    log.warning("the worker's warning")
    assert console.getvalue().splitlines() == ["the worker's warning"]


def test_other_handlers_see_a_try_s_records() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # a task log's, or -v's console
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with tries_off_console():
            logging.getLogger("squall.test_console").warning("the task's warning")
    finally:
        root.removeHandler(handler)
    assert stream.getvalue() == "the task's warning\n"


def test_configure_logging_installs_a_quiet_console_and_passes_it_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(QUIET_ENV, raising=False)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = []
    try:
        configure_logging("INFO", quiet=True)
        (handler,) = root.handlers
        assert any(isinstance(f, ConsoleFilter) for f in handler.filters)
        assert os.environ[QUIET_ENV] == "1"  # for the DAG processor it starts
        root.handlers = []
        configure_logging("DEBUG")  # -v
        (handler,) = root.handlers
        assert not any(isinstance(f, ConsoleFilter) for f in handler.filters)
        assert QUIET_ENV not in os.environ
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)


def test_a_started_process_inherits_the_quiet_console(monkeypatch: pytest.MonkeyPatch) -> None:
    handler = logging.StreamHandler(io.StringIO())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        monkeypatch.setenv(QUIET_ENV, "1")
        quiet_if_inherited()
        assert sum(isinstance(f, ConsoleFilter) for f in handler.filters) == 1
        quiet_if_inherited()  # once only
        assert sum(isinstance(f, ConsoleFilter) for f in handler.filters) == 1
    finally:
        root.removeHandler(handler)


def test_the_embedded_broker_names_no_host(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """kombu warned "No hostname was supplied" on every connection to it."""
    app = create_celery_app(Settings.load(env={"SQUALL_HOME": str(tmp_path)}))
    with caplog.at_level(logging.WARNING, logger="kombu"), app.connection_for_write() as conn:
        assert conn.info()["hostname"] is None
    assert "No hostname was supplied" not in caplog.text
