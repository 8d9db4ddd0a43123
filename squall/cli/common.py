"""What every CLI command shares: settings, the database, output formats."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from squall.common.errors import CliError

if TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy import Engine

    from squall.common.db import SessionFactory
    from squall.common.settings import Settings

# rich is imported where it prints: long-running commands (scheduler, worker) never need it.
# Nor do the database, the settings model or SQLAlchemy load with this module: building the
# argument parser (`squall --help`) imports every command module (issue 26).

log = logging.getLogger(__name__)


@dataclass
class CliContext:
    """Built once in ``main`` and handed to each command."""

    settings: Settings
    #: a service's console without -v: start-up, run outcomes, warnings, errors (ADR 34)
    quiet_console: bool = False
    _checked_factory: SessionFactory | None = None

    @cached_property
    def engine(self) -> Engine:
        from squall.common.db import make_engine

        db = self.settings.database
        return make_engine(self.settings.sql_alchemy_conn, pool_size=db.sql_alchemy_pool_size,
                           max_overflow=db.sql_alchemy_max_overflow,
                           pool_recycle=db.sql_alchemy_pool_recycle,
                           pool_pre_ping=db.sql_alchemy_pool_pre_ping)

    def session_factory(self, *, auto_migrate: bool = True) -> SessionFactory:
        """A session factory on a database at the current schema revision.

        A database with no Squall tables yet (a first run) is migrated on the spot when
        ``auto_migrate``; one at an older revision is an error asking for ``squall db migrate``.
        The check runs once per command.
        """
        from squall.common import dbops
        from squall.common.db import make_session_factory

        if self._checked_factory is not None:
            return self._checked_factory
        self.ensure_home()
        revision = dbops.current_revision(self.engine)
        if revision is None and auto_migrate:
            log.info("Database %s is empty: creating the schema",
                     self.engine.url.render_as_string(hide_password=True))
            dbops.migrate(self.engine,
                          default_pool_slots=self.settings.core.default_pool_task_slot_count)
        elif revision != dbops.head_revision():
            raise CliError(
                f"the database is at schema revision {revision or 'none'}, this Squall needs "
                f"{dbops.head_revision()}: run `squall db migrate`"
            )
        self._checked_factory = make_session_factory(self.engine)
        return self._checked_factory

    def ensure_home(self) -> None:
        if self.settings.sql_alchemy_conn.startswith("sqlite:///"):
            self.settings.home.mkdir(parents=True, exist_ok=True)


def console() -> Console:
    from rich.console import Console

    # Piped output is not cut to 80 columns: nothing a script reads should be ellipsised.
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def print_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], output: str,
               *, title: str | None = None) -> None:
    """Print ``rows`` as a rich table, or as JSON for ``-o json``."""
    if output == "json":
        json.dump(list(rows), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console().print(table)


def add_output_flag(parser: Any) -> None:
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table",
                        help="output format (default: table)")


def confirm(question: str, *, no_terminal: str, cancelled: str) -> None:
    """Ask ``question`` on the terminal; raise :class:`CliError` with ``no_terminal`` when
    there is none to ask on, and with ``cancelled`` unless the answer is yes."""
    if not sys.stdin.isatty():
        raise CliError(no_terminal)
    if not ask_yes(question):
        raise CliError(cancelled)


def ask_yes(question: str) -> bool:
    """Ask ``question`` with ``[y/N]`` on the terminal: whether the answer is yes. The end of
    the input (Ctrl-D) is a no, as an empty answer is."""
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        print()  # end the prompt's line, which the user's Enter would have ended
        return False
    return answer.strip().lower() in ("y", "yes")
