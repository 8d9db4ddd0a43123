"""Alembic environment for Squall's metadata database.

This file is run by Alembic only, never imported by Squall. It reads nothing from Squall's
settings: the database comes from the :class:`alembic.config.Config` built by
:mod:`squall.common.dbops`, either as an open connection in
``config.attributes["connection"]`` (preferred; the caller owns its transaction) or as the
``sqlalchemy.url`` main option.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from squall.common.db import make_engine, normalise_url
from squall.common.models import Base

config = context.config
target_metadata = Base.metadata


def _is_sqlite(dialect_name: str) -> bool:
    return dialect_name == "sqlite"


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "squall migrations: no database given; put a connection in "
            'config.attributes["connection"] or set the sqlalchemy.url option'
        )
    return normalise_url(url)


def run_migrations_offline() -> None:
    """Emit the SQL to stdout instead of running it (``alembic upgrade --sql``)."""
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_with_connection(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=_is_sqlite(connection.dialect.name),
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with_connection(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _run_with_connection(conn)
            if conn.in_transaction():
                conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
