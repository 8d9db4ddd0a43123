"""squall.common.metrics: the StatsD line protocol over UDP, the log fallback, the factory."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from squall.common.metrics import (
    ZOMBIES_KILLED,
    LogMetrics,
    StatsdMetrics,
    metrics_from_settings,
)
from squall.common.settings import Settings


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_statsd_sends_counters_gauges_and_timers(udp: socket.socket) -> None:
    port = udp.getsockname()[1]
    metrics = StatsdMetrics("127.0.0.1", port, prefix="squall")
    try:
        metrics.incr(ZOMBIES_KILLED)
        metrics.incr("scheduler.tasks.adopted", 3)
        metrics.gauge("executor.running", 7)
        metrics.timing("scheduler.loop", 12.5)
        received = [udp.recv(1024).decode() for _ in range(4)]
    finally:
        metrics.close()
    assert received == ["squall.zombies_killed:1|c", "squall.scheduler.tasks.adopted:3|c",
                        "squall.executor.running:7|g", "squall.scheduler.loop:12.5|ms"]


def test_statsd_never_raises_on_a_bad_address(caplog: pytest.LogCaptureFixture) -> None:
    metrics = StatsdMetrics("no-such-host.invalid", 8125)
    with caplog.at_level(logging.WARNING, logger="squall.common.metrics"):
        metrics.incr("x")
        metrics.incr("x")
    metrics.close()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) <= 1


def test_log_metrics_logs_counts_with_the_name(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="squall.common.metrics"):
        LogMetrics().incr(ZOMBIES_KILLED, 2)
    assert "zombies_killed" in caplog.text and "+2" in caplog.text


def test_metrics_from_settings(tmp_path: Path) -> None:
    env = {"SQUALL_HOME": str(tmp_path)}
    assert isinstance(metrics_from_settings(Settings.load(env=env)), LogMetrics)
    on = Settings.load(env=env, overrides={"metrics": {"statsd_on": True, "statsd_port": 9125}})
    assert isinstance(metrics_from_settings(on), StatsdMetrics)
