"""The triggerer's pieces in one process: the lease terms and the settings that refuse a
lease too short, the event loop (first event taken, failures, cancellation and cleanup),
the watchdog naming a trigger that blocks the loop, the lease guard (cancel on a lost
lease; end the process when the loop cannot), building a trigger from its row.

Airflow's rules: ``TriggerRunner.run_trigger`` (events pushed, ``cleanup()`` in a
``finally``), ``cleanup_finished_triggers`` (an exception, or an exit without an event,
fails the trigger), ``block_watchdog`` (a tick more than 0.2 s late is a blocked loop).
Checked against Airflow 2.10.5's ``TriggerRunner`` itself (the reference virtualenv, its
``create_triggers`` / ``cleanup_finished_triggers`` on an eventless trigger and one that
yields twice): the eventless one lands in ``failed_triggers`` as ``(id, None)``, and of the
two events only the first can move the task instance (``submit_event`` touches only a
DEFERRED one), so Squall takes the first and closes the generator.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from squall.common.errors import SettingsError, TriggerLoadError
from squall.common.lease_terms import HeartbeatLease, trigger_lease_terms
from squall.common.settings import Settings
from squall.sdk.triggers import BaseTrigger, TriggerEvent, serde
from squall.triggerer.job import EXIT_LEASE_LOST, TriggererJob
from squall.triggerer.runner import Failed, Fired, LoopWatchdog, Outcome, TriggerRunner
from squall.triggerer.trigger_rows import HeldTrigger, TaskInstanceRef
from tests.support.triggers import (
    BlockingTrigger,
    NoEventTrigger,
    RaisingTrigger,
    SleepTrigger,
    read_records,
)


class TwiceTrigger(BaseTrigger):
    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{__name__}.TwiceTrigger", {}

    async def run(self) -> Any:
        yield TriggerEvent(1)
        yield TriggerEvent(2)


def _held(trigger_id: int, trigger: BaseTrigger) -> HeldTrigger:
    classpath, kwargs = trigger.serialize()
    return HeldTrigger(trigger_id, classpath, serde.dumps(kwargs),
                       TaskInstanceRef("d", f"t{trigger_id}", "r", -1, 1))


@pytest.fixture
def runner() -> Any:
    made = TriggerRunner(cleanup_timeout=1.0).start()
    yield made
    made.stop()


def _next(runner: TriggerRunner, timeout: float = 5.0) -> Outcome:
    return runner.outcomes.get(timeout=timeout)


def test_lease_terms_at_the_defaults_and_at_the_fault_suites_settings() -> None:
    defaults = trigger_lease_terms(30, 5)
    assert (defaults.lease, defaults.margin, defaults.kill_grace) == (17.5, 12.5, 2.5)
    fast = trigger_lease_terms(3, 0.5)
    assert (fast.lease, fast.kill_grace) == (1.75, 0.25)


def test_settings_refuse_a_take_over_bound_that_leaves_no_lease(tmp_path: Path) -> None:
    env = {"SQUALL_HOME": str(tmp_path),
           "SQUALL__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "3",
           "SQUALL__TRIGGERER__JOB_HEARTBEAT_SEC": "1"}
    with pytest.raises(SettingsError, match=r"\[triggerer\] triggerer_health_check_threshold"):
        Settings.load(env=env)
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)})
    assert settings.triggerer.default_capacity == 1000
    assert (settings.triggerer.job_heartbeat_sec,
            settings.triggerer.triggerer_health_check_threshold) == (5.0, 30.0)


def test_the_first_event_is_taken_and_cleanup_runs(runner: TriggerRunner,
                                                   tmp_path: Path) -> None:
    record = tmp_path / "r.txt"
    trigger = SleepTrigger(seconds=0.05, tag="a", record=str(record))
    runner.add(_held(1, trigger), trigger)
    outcome = _next(runner)
    assert isinstance(outcome, Fired) and outcome.payload == {"tag": "a", "slept": 0.05}
    assert trigger.trigger_id == 1 and trigger.task_instance.task_id == "t1"
    twice = TwiceTrigger()
    runner.add(_held(2, twice), twice)
    outcome = _next(runner)
    assert isinstance(outcome, Fired) and (outcome.trigger_id, outcome.payload) == (2, 1)
    time.sleep(0.3)
    assert runner.outcomes.empty()  # the second event is ignored


def test_raising_and_eventless_triggers_fail(runner: TriggerRunner, tmp_path: Path) -> None:
    record = tmp_path / "r.txt"
    bad = RaisingTrigger(tag="bad", record=str(record))
    runner.add(_held(1, bad), bad)
    outcome = _next(runner)
    assert isinstance(outcome, Failed) and isinstance(outcome.exc, ValueError)
    silent = NoEventTrigger(tag="silent", record=str(record))
    runner.add(_held(2, silent), silent)
    outcome = _next(runner)
    assert isinstance(outcome, Failed) and outcome.exc is None
    deadline = time.monotonic() + 5
    while runner.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    counts = read_records(record)
    assert counts[("cleanup", "bad")] == counts[("cleanup", "silent")] == 1


def test_a_trigger_cancelled_before_it_ran_is_forgotten(runner: TriggerRunner) -> None:
    trigger = SleepTrigger(seconds=60)
    runner.add(_held(1, trigger), trigger)
    runner.cancel({1})  # queued right behind its start: the task never runs a step
    deadline = time.monotonic() + 5
    while runner.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runner.running() == set() and runner.outcomes.empty()


def test_a_cancelled_trigger_sends_nothing_and_cleans_up(runner: TriggerRunner,
                                                         tmp_path: Path) -> None:
    record = tmp_path / "r.txt"
    trigger = SleepTrigger(seconds=60, tag="long", record=str(record))
    runner.add(_held(1, trigger), trigger)
    deadline = time.monotonic() + 5
    while read_records(record)[("start", "long")] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runner.known() == {1}
    runner.cancel({1}, "test")
    while runner.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not runner.running() and runner.outcomes.empty()
    assert read_records(record)[("cleanup", "long")] == 1


def test_an_outcome_keeps_its_trigger_known_until_settled(runner: TriggerRunner) -> None:
    trigger = SleepTrigger(seconds=0)
    runner.add(_held(5, trigger), trigger)
    _next(runner)
    deadline = time.monotonic() + 5
    while runner.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runner.known() == {5}  # not started again before its outcome is written
    runner.settled(5)
    assert runner.known() == set()


def test_the_watchdog_names_the_trigger_blocking_the_loop(
        runner: TriggerRunner, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="squall.triggerer.runner")
    watchdog = LoopWatchdog(runner).start()
    try:
        trigger = BlockingTrigger(block=0.8, after=0.1, tag="b")
        runner.add(_held(9, trigger), trigger)
        assert isinstance(_next(runner), Fired)
        deadline = time.monotonic() + 3
        while "was blocked for" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        watchdog.stop()
    lines = [r.getMessage() for r in caplog.records]
    blocking = [m for m in lines if "is blocked" in m]
    assert len(blocking) == 1 and "trigger 9 (" in blocking[0] and "d.t9[r] try 1" in blocking[0]
    ended = [m for m in lines if "was blocked for" in m]
    assert len(ended) == 1 and "trigger 9 (" in ended[0]
    assert 0.7 <= float(ended[0].split("for ")[1].split(" s")[0]) <= 1.2


def test_an_idle_loop_is_not_reported_blocked(runner: TriggerRunner,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="squall.triggerer.runner")
    watchdog = LoopWatchdog(runner).start()
    time.sleep(0.6)
    watchdog.stop()
    assert "blocked" not in caplog.text


def _job(tmp_path: Path, exits: list[int]) -> TriggererJob:
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path),
                                  "SQUALL__TRIGGERER__JOB_HEARTBEAT_SEC": "0.5",
                                  "SQUALL__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "3"})
    job = TriggererJob(settings, None, exit_process=exits.append)  # type: ignore[arg-type]
    job.runner.start()
    return job


def test_a_lost_lease_cancels_every_trigger(tmp_path: Path) -> None:
    exits: list[int] = []
    job = _job(tmp_path, exits)
    try:
        record = tmp_path / "r.txt"
        trigger = SleepTrigger(seconds=60, tag="held", record=str(record))
        job.runner.add(_held(1, trigger), trigger)
        deadline = time.monotonic() + 5
        while read_records(record)[("start", "held")] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        job._keep_lease()
        assert job.runner.running() == {1}  # the lease holds
        job.lease = HeartbeatLease(0.0)
        job._keep_lease()
        while job.runner.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        job._keep_lease()
        assert not job.runner.running() and not exits
        assert read_records(record)[("cleanup", "held")] == 1
    finally:
        job.runner.stop()


def test_a_lost_lease_with_a_blocked_loop_ends_the_process(tmp_path: Path) -> None:
    exits: list[int] = []
    job = _job(tmp_path, exits)
    try:
        record = tmp_path / "r.txt"
        trigger = BlockingTrigger(block=1.5, after=0.0, tag="b", record=str(record))
        job.runner.add(_held(1, trigger), trigger)
        deadline = time.monotonic() + 5
        # "start" is written just before the trigger blocks the loop
        while read_records(record)[("start", "b")] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert read_records(record)[("start", "b")] == 1
        time.sleep(0.05)  # past the await of asyncio.sleep(0): in time.sleep now
        job.lease = HeartbeatLease(0.0)
        job._keep_lease()  # asks the loop to cancel; it cannot
        assert not exits
        time.sleep(job.terms.kill_grace + 0.1)
        job._keep_lease()
        assert exits == [EXIT_LEASE_LOST]
    finally:
        job.runner.stop()


def test_building_a_trigger_from_its_row(tmp_path: Path) -> None:
    job = _job(tmp_path, [])
    try:
        built = job.build(_held(1, SleepTrigger(seconds=2.5, tag="x")))
        assert isinstance(built, SleepTrigger) and (built.seconds, built.tag) == (2.5, "x")
        bad = HeldTrigger(2, "tests.support.triggers.Nope", "{}",
                          TaskInstanceRef("d", "t", "r", -1, 1))
        with pytest.raises(TriggerLoadError, match=r"cannot import tests\.support\.triggers\.Nope"):
            job.build(bad)
        not_trigger = HeldTrigger(3, "pathlib.Path", "{}", TaskInstanceRef("d", "t", "r", -1, 1))
        with pytest.raises(TriggerLoadError, match="not a BaseTrigger subclass"):
            job.build(not_trigger)
    finally:
        job.runner.stop()
