"""A supervisor's heartbeat lease (ADR 17): renewed by each successful job heartbeat, lost
when its seconds pass without one; its length is :func:`squall.common.lease_terms.lease_terms`.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class HeartbeatLease:
    """A supervisor's lease: renewed by each successful heartbeat, lost when ``seconds``
    pass without one (on ``clock``, monotonic)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._renewed_at = clock()

    def renew(self, sent_at: float) -> None:
        """A heartbeat sent at ``sent_at`` (this clock) succeeded."""
        self._renewed_at = max(self._renewed_at, sent_at)

    def remaining(self) -> float:
        """Seconds left; zero or less: lost."""
        return self._renewed_at + self.seconds - self._clock()

    def lost(self) -> bool:
        return self.remaining() <= 0

    def since_renewed(self) -> float:
        """Seconds since the last successful heartbeat was sent."""
        return self._clock() - self._renewed_at
