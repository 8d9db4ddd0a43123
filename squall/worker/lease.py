"""A supervisor's heartbeat lease (ADR 17): renewed by each successful job heartbeat, lost
when its seconds pass without one; its length is :func:`squall.common.lease_terms.lease_terms`.
The class lives beside its terms (the triggerer keeps one too); it is imported here under its
old name.
"""

from __future__ import annotations

from squall.common.lease_terms import HeartbeatLease

__all__ = ["HeartbeatLease"]
