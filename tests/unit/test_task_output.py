"""A try's output captured into its log (:mod:`squall.execution.task_output`), in this
process, with real descriptors and subprocesses: order, masking of a secret read during the
try, output larger than a pipe holds, partial and non-UTF-8 lines, a handler that writes to
the captured streams, and everything put back afterwards."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from squall.execution.task_output import capture_task_output
from squall.secrets.masking import RedactingFilter, SecretsMasker


@pytest.fixture
def records() -> Iterator[tuple[io.StringIO, SecretsMasker]]:
    """A root handler as the try's log has one (masking with its own masker)."""
    text, secrets = io.StringIO(), SecretsMasker()
    handler = logging.StreamHandler(text)
    handler.setFormatter(logging.Formatter("{%(name)s} %(levelname)s - %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield text, secrets
    root.removeHandler(handler)
    root.setLevel(old_level)


def _fd_identity(fd: int) -> tuple[int, int]:
    stat = os.fstat(fd)
    return stat.st_dev, stat.st_ino


def test_output_is_logged_in_order_masked_and_everything_is_put_back(
        records: tuple[io.StringIO, SecretsMasker]) -> None:
    text, secrets = records
    before = (sys.stdout, sys.stderr, warnings.showwarning, _fd_identity(1), _fd_identity(2))
    log = logging.getLogger("the_task")
    with capture_task_output():
        secrets.add("pw-1234567")  # read during the try: masked in what follows
        print("one pw-1234567")
        log.info("two")
        print("three", file=sys.stderr)
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # not an error, as pytest has it
            warnings.warn("four", stacklevel=1)
        subprocess.run(["echo", "five pw-1234567"], check=True)
        os.write(2, b"six \xff\xfe\n")
        subprocess.run(["seq", "1", "20000"], check=True)  # more than a pipe holds
        subprocess.run(["printf", "seven, no newline"], check=True)
        log.info("eight")
        sys.stdout.write("nine, partial")
    assert (sys.stdout, sys.stderr, warnings.showwarning, _fd_identity(1),
            _fd_identity(2)) == before
    lines = text.getvalue().splitlines()
    numbers = [line for line in lines if line.removeprefix("{squall.task} INFO - ").isdigit()]
    assert len(numbers) == 20000
    wanted = [
        "{squall.task} INFO - one ***",
        "{the_task} INFO - two",
        "{squall.task} WARNING - three",
        f"{{squall.task}} WARNING - {__file__}:",
        "{squall.task} INFO - five ***",
        "{squall.task} INFO - six \\xff\\xfe",
        "{squall.task} INFO - 1",
        "{squall.task} INFO - 20000",
        "{squall.task} INFO - seven, no newline",
        "{the_task} INFO - eight",
        "{squall.task} INFO - nine, partial",
    ]
    at = [next(i for i, line in enumerate(lines) if line.startswith(w)) for w in wanted]
    assert at == sorted(at), lines[:12]
    assert "UserWarning: four" in lines[at[3]]
    assert "pw-1234567" not in text.getvalue()


def test_a_handler_writing_to_the_captured_streams_does_not_loop(
        records: tuple[io.StringIO, SecretsMasker]) -> None:
    text, _ = records
    root = logging.getLogger()
    with capture_task_output():
        echo = logging.StreamHandler(sys.stdout)  # e.g. a task calling logging.basicConfig
        root.addHandler(echo)
        try:
            logging.getLogger("the_task").warning("once")
            print("printed")
        finally:
            root.removeHandler(echo)
    logged = text.getvalue().splitlines()
    assert logged.count("{the_task} WARNING - once") == 1
    assert logged.count("{squall.task} INFO - once") == 1  # what the handler wrote
    assert logged.count("{squall.task} INFO - printed") == 1


def test_a_process_left_writing_does_not_hold_up_the_end_of_the_try(tmp_path: Path) -> None:
    """A try that leaves ``yes`` running: the capture ends all the same (in a child
    interpreter, so that a hang is a timeout here), and ``yes`` loses its pipe."""
    script = tmp_path / "left.py"
    script.write_text(
        "import logging, subprocess, sys, threading\n"
        "from squall.execution.task_output import capture_task_output\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "seen = threading.Event()\n"
        "class Seen(logging.Handler):\n"
        "    def emit(self, record):\n"
        "        if record.getMessage() == 'left running': seen.set()\n"
        "logging.getLogger('squall.task').addHandler(Seen())\n"
        "with capture_task_output():\n"
        "    left = subprocess.Popen(['yes', 'left running'])\n"
        "    assert seen.wait(30)\n"
        "print('ended', left.wait(), flush=True)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.stdout == f"ended {-signal.SIGPIPE}\n", done.stderr[-2000:]
    assert "INFO:squall.task:left running\n" in done.stderr
