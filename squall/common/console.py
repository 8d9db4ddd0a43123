"""What a service's console shows (ADR 34).

Without ``-v``, the console (standard error) of a long-running service (``squall
scheduler``, ``squall celery worker``, ``squall triggerer``, ``squall api``, ``squall
standalone``) says what a person needs there: its start-up and shut-down, each DAG run's
outcome, warnings and errors. Every other record still exists at its level, for ``-v`` and
for the task logs:

- an INFO record reaches the quiet console only when it is logged with ``extra=CONSOLE``
  (``log.info("scheduler: job %d started", job_id, extra=CONSOLE)``);
- a try's records (what the task logs or prints, and what the runner logs about it) go to
  the try's log file only: the quiet consoles are detached from the root logger while a try
  runs in the process (:func:`tries_off_console`, entered by the runner with the log file).

``-v`` shows everything, at DEBUG. The CLI installs the handler (``squall.cli``) and says
in the environment (``SQUALL_QUIET_CONSOLE``) whether it is quiet, for the fresh
interpreters a service starts that set up their own (the DAG processor:
:func:`quiet_if_inherited`).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

#: ``extra=`` of an INFO record meant for a service's quiet console
CONSOLE: dict[str, object] = {"squall_console": True}

#: set to ``1`` by a quiet service for the processes it starts
QUIET_ENV = "SQUALL_QUIET_CONSOLE"

_QUIET_CONSOLES: weakref.WeakSet[logging.Handler] = weakref.WeakSet()


class ConsoleFilter(logging.Filter):
    """A quiet console's filter: warnings and errors, and INFO records marked ``CONSOLE``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or bool(getattr(record, "squall_console",
                                                                 False))


def make_quiet(handler: logging.Handler) -> None:
    """``handler`` becomes a quiet console: the :class:`ConsoleFilter`, and no record of a
    try (:func:`tries_off_console`)."""
    handler.addFilter(ConsoleFilter())
    _QUIET_CONSOLES.add(handler)


def pass_on(quiet: bool) -> None:
    """Tell the processes this one starts whether its console is quiet."""
    if quiet:
        os.environ[QUIET_ENV] = "1"
    else:
        os.environ.pop(QUIET_ENV, None)


def quiet_if_inherited() -> None:
    """The root logger's handlers become quiet consoles when the process that started this
    one has a quiet console."""
    if os.environ.get(QUIET_ENV) == "1":
        for handler in logging.getLogger().handlers:
            if handler not in _QUIET_CONSOLES:
                make_quiet(handler)


@contextmanager
def tries_off_console() -> Iterator[None]:
    """The quiet consoles take no record for the ``with`` block (a try running in this
    process: its records go to its log file)."""
    root = logging.getLogger()
    off = [h for h in root.handlers if h in _QUIET_CONSOLES]
    for handler in off:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in off:
            if handler not in root.handlers:
                root.addHandler(handler)
