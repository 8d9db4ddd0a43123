"""Create, upgrade, reset and check the metadata database schema (Alembic).

The Alembic configuration is built in code (there is no ``alembic.ini``): the script location
is the ``squall/migrations`` folder and the database is handed over as an open connection in
``config.attributes["connection"]``, so ``env.py`` never reads Squall's settings.

* :func:`migrate` upgrades to the head revision (a no-op when already there); the default
  pool it creates has ``default_pool_slots`` slots (``[core] default_pool_task_slot_count``);
* :func:`reset` drops every table (``alembic_version`` included) and migrates again;
* :func:`check` lists what is wrong (unreachable, not at head, schema differs from models);
* :func:`current_revision` / :func:`head_revision` report revisions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, MetaData, select, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from squall.common.errors import DatabaseMigrationError
from squall.common.models import DEFAULT_POOL, Base, Pool

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

# Alembic (and Mako) are imported where used: the scheduler and worker processes, which load
# this module through the CLI, never migrate, and should not carry them in memory.

log = logging.getLogger(__name__)

#: the folder holding ``env.py`` and ``versions/``
MIGRATIONS_DIR: Path = Path(__file__).resolve().parent.parent / "migrations"
#: slots of the default pool created by the initial migration, unless told otherwise
DEFAULT_POOL_SLOTS = 128
DEFAULT_POOL_DESCRIPTION = "Default pool"
#: key of the PostgreSQL advisory lock that serialises concurrent migrations
_MIGRATION_LOCK_KEY = 0x5351_4C4C  # "SQLL"


def alembic_config(connection: Connection | None = None, url: str | None = None, *,
                   default_pool_slots: int = DEFAULT_POOL_SLOTS) -> Config:
    """An Alembic :class:`Config` for Squall's migrations.

    Give either an open ``connection`` (used as is; the caller owns its transaction) or a
    ``url`` (``env.py`` then makes its own engine). ``default_pool_slots`` are the slots of
    the default pool if a migration creates it.
    """
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolation: a literal % in a password must be doubled
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    cfg.attributes["default_pool_slots"] = default_pool_slots
    return cfg


def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


#: The revision the migrations end at: what :func:`head_revision` returns without importing
#: Alembic (a test checks it against the migration scripts; update it with a new migration).
HEAD_REVISION = "0012"


def head_revision() -> str:
    """The revision the migrations end at."""
    return HEAD_REVISION


def script_head_revision() -> str:
    """The head revision as the migration scripts say (imports Alembic)."""
    heads = _script().get_heads()
    if len(heads) != 1:
        raise DatabaseMigrationError(f"migrations have {len(heads)} heads: {heads}")
    return heads[0]


def _safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` when it was never migrated.

    Read from ``alembic_version`` with plain SQL, so that every command's start-up check
    (:meth:`squall.cli.common.CliContext.session_factory`) does not import Alembic."""
    with engine.connect() as conn:
        if not sa_inspect(conn).has_table("alembic_version"):
            return None
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(versions) > 1:
        raise DatabaseMigrationError(f"the database has {len(versions)} Alembic heads: "
                                     f"{sorted(versions)}")
    return versions[0] if versions else None


def migrate(engine: Engine, *, default_pool_slots: int = DEFAULT_POOL_SLOTS) -> None:
    """Upgrade the database to the head revision; safe to call when it already is there.

    A database migrated from nothing gets a default pool of ``default_pool_slots`` slots
    (Airflow's ``[core] default_pool_task_slot_count``); an existing pool keeps its slots.

    On PostgreSQL concurrent callers are serialised by an advisory lock (SQLite takes its
    write lock at ``BEGIN IMMEDIATE``), so two processes starting at once do not both try to
    create the tables.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    log.debug("migrating %s to head", _safe_url(engine))
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                             {"k": _MIGRATION_LOCK_KEY})
            before = MigrationContext.configure(conn).get_current_revision()
            command.upgrade(
                alembic_config(connection=conn, default_pool_slots=default_pool_slots), "head")
            after = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise DatabaseMigrationError(
            f"cannot migrate the database {_safe_url(engine)}: {exc}"
        ) from exc
    if before != after:
        log.info("migrated database %s from %s to %s", _safe_url(engine), before, after)


def drop_all(engine: Engine) -> None:
    """Drop every table of the database, ``alembic_version`` included."""
    try:
        with engine.begin() as conn:
            meta = MetaData()
            meta.reflect(bind=conn)
            if conn.dialect.name == "postgresql":
                for table in reversed(meta.sorted_tables):
                    conn.execute(text(f'DROP TABLE IF EXISTS "{table.name}" CASCADE'))
            else:
                meta.drop_all(bind=conn)
    except SQLAlchemyError as exc:
        raise DatabaseMigrationError(
            f"cannot drop the tables of {_safe_url(engine)}: {exc}"
        ) from exc
    log.info("dropped all tables of %s", _safe_url(engine))


def reset(engine: Engine, *, default_pool_slots: int = DEFAULT_POOL_SLOTS) -> None:
    """Drop everything and build the schema again from the migrations: all data is lost
    (the default pool is created anew with ``default_pool_slots`` slots)."""
    drop_all(engine)
    migrate(engine, default_pool_slots=default_pool_slots)


def _describe_diff(diff: Any) -> str:
    """One readable line for an entry of :func:`alembic.autogenerate.compare_metadata`.

    Alembic words differences as the operation that would bring the database to the models:
    ``add_*`` is in the models only, ``remove_*`` in the database only.
    """
    if isinstance(diff, list):  # the modify_* entries of one column come grouped
        return "; ".join(_describe_diff(d) for d in diff)
    op: str = diff[0]
    if op.startswith("modify_"):
        # (op, schema, table, column, existing_kw, database value, models value)
        what = op.removeprefix("modify_")
        return (f"{what} of column {diff[2]}.{diff[3]}: database has {diff[5]!r},"
                f" models have {diff[6]!r}")
    action, _, kind = op.partition("_")
    if kind == "table":
        name = diff[1].name
    elif kind == "column":
        name = f"{diff[2]}.{diff[3].name}"
    elif kind in ("index", "constraint", "fk"):
        obj = diff[1]
        table = getattr(getattr(obj, "table", None), "name", None) or getattr(
            getattr(obj, "parent", None), "name", "?")
        name = f"{obj.name or '<unnamed>'} on {table}"
        kind = {"fk": "foreign key"}.get(kind, kind)
    else:
        return repr(diff)
    if action == "add":
        return f"{kind} {name} is in the models but not in the database"
    if action == "remove":
        return f"{kind} {name} is in the database but not in the models"
    return repr(diff)


def schema_diff(conn: Connection) -> list[str]:
    """How the database schema differs from the models, one readable line per difference."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return [_describe_diff(d) for d in compare_metadata(ctx, Base.metadata)]


def check(engine: Engine) -> list[str]:
    """What is wrong with the database; an empty list means it is usable.

    Reports an unreachable database, a revision other than the head one, and (at head) any
    difference between the tables in the database and the models.
    """
    from alembic.runtime.migration import MigrationContext

    url = _safe_url(engine)
    try:
        head = head_revision()
    except DatabaseMigrationError as exc:
        return [str(exc)]
    try:
        with engine.connect() as conn:
            heads = MigrationContext.configure(conn).get_current_heads()
            if not heads:
                return [f"database {url} has not been initialised (no Alembic revision):"
                        " run the migrations"]
            if heads != (head,):
                return [f"database {url} is at revision {', '.join(heads)},"
                        f" the migrations are at {head}: run the migrations"]
            diffs = schema_diff(conn)
    except SQLAlchemyError as exc:
        return [f"cannot connect to the database {url}: {exc}"]
    return [f"schema differs from the models: {d}" for d in diffs]


def ensure_default_pool(session: Session, slots: int = DEFAULT_POOL_SLOTS) -> Pool:
    """The default pool, created with ``slots`` slots if missing (an existing one is kept)."""
    pool = session.scalar(select(Pool).where(Pool.pool == DEFAULT_POOL))
    if pool is None:
        pool = Pool(pool=DEFAULT_POOL, slots=slots, description=DEFAULT_POOL_DESCRIPTION)
        session.add(pool)
        session.flush()
        log.info("created %s with %d slots", DEFAULT_POOL, slots)
    return pool
