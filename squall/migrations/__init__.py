"""Alembic migrations of the metadata database (run them with :mod:`squall.common.dbops`)."""
