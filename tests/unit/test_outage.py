"""Outage bookkeeping (squall.common.outage): an outage is counted once, logged once when it
begins and once when it is over, with its length; failures in between at DEBUG."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from squall.common.outage import Outage
from tests.support.metrics import RecordingMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records]


def test_an_outage_is_counted_once_and_logged_once_each_way(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics, clock = RecordingMetrics(), Clock()
    logger = logging.getLogger("squall.test.outage")
    outage = Outage("scheduler", metrics, "scheduler.outage", logger=logger, clock=clock)
    with caplog.at_level(logging.DEBUG, logger="squall.test.outage"):
        assert outage.ok() is None and not outage.down  # no outage: nothing logged
        assert outage.failed("%s; retrying", "refused") is True
        clock.now += 2.5
        assert outage.failed("%s; retrying", "refused again") is False
        assert outage.down
        assert outage.ok() == 2.5
        assert outage.ok() is None
    assert metrics.counts == Counter({"scheduler.outage": 1})
    assert lines(caplog) == [
        (logging.ERROR, "scheduler: database unreachable: refused; retrying"),
        (logging.DEBUG, "scheduler: database still unreachable: refused again; retrying"),
        (logging.ERROR, "scheduler: database reachable again after 2.5 s"),
    ]


def test_a_notice_is_logged_during_an_outage_and_a_silent_failure_only_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics, clock = RecordingMetrics(), Clock()
    logger = logging.getLogger("squall.test.outage")
    outage = Outage("CeleryExecutor", metrics, "celery.result_backend_outage",
                    what="result backend", logger=logger, level=logging.INFO, clock=clock)
    with caplog.at_level(logging.DEBUG, logger="squall.test.outage"):
        assert outage.failed() is True  # the failing read logged it already
        assert outage.failed("the outcome is not written", notice=True) is False
        clock.now += 1
        assert outage.ok("; outcome written") == 1.0
        assert outage.failed() is True  # a second outage: counted again
    assert metrics.counts["celery.result_backend_outage"] == 2
    assert lines(caplog) == [
        (logging.INFO, "CeleryExecutor: result backend unreachable: the outcome is not written"),
        (logging.INFO, "CeleryExecutor: result backend reachable again after 1.0 s; outcome "
                       "written"),
    ]
