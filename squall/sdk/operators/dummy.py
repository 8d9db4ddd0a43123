"""DummyOperator: Airflow's old name for :class:`EmptyOperator`."""

from __future__ import annotations

from squall.sdk.operators.empty import EmptyOperator

DummyOperator = EmptyOperator

__all__ = ["DummyOperator"]
