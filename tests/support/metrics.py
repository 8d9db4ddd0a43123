"""A :class:`~squall.common.metrics.Metrics` that counts what it is sent, for tests."""

from __future__ import annotations

from collections import Counter


class RecordingMetrics:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def incr(self, name: str, count: int = 1) -> None:
        self.counts[name] += count

    def gauge(self, name: str, value: float) -> None:
        pass

    def timing(self, name: str, ms: float) -> None:
        pass
