"""The heartbeat lease's terms (ADR 17) and the settings that leave no room for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from squall.common.errors import SettingsError
from squall.common.lease_terms import check_lease, lease_terms
from squall.common.settings import Settings
from squall.worker.lease import HeartbeatLease


def test_the_default_lease_keeps_two_heartbeats_and_the_kill_grace(tmp_path: Path) -> None:
    scheduler = Settings.load(env={"SQUALL_HOME": str(tmp_path)}).scheduler
    assert (scheduler.zombie_threshold, scheduler.job_heartbeat_sec) == (60, 5)
    terms = lease_terms(scheduler.zombie_threshold, scheduler.job_heartbeat_sec)
    assert terms.kill_grace == 2.5
    assert terms.margin == 12.5 and terms.lease == 47.5
    assert terms.drift_covered == 10
    # issue 22: a dead worker's try is a zombie within the threshold and the detection
    # interval of its last heartbeat, leaving 20 s of 90 for the retry to be scheduled and
    # started; a database outage shorter than the lease (a restart, a fail-over) leaves
    # running tries alone
    assert scheduler.zombie_threshold + scheduler.zombie_detection_interval <= 70
    assert terms.lease >= 45


def test_a_long_threshold_keeps_a_tenth_of_it_and_the_kill_grace() -> None:
    terms = lease_terms(300, 5)  # Airflow 2's default threshold
    assert terms.margin == 32.5 and terms.lease == 267.5
    assert terms.drift_covered == 30


def test_short_settings_keep_two_heartbeats_and_the_kill_grace() -> None:
    terms = lease_terms(3, 0.5)
    assert terms.margin == 1.25 and terms.lease == 1.75
    assert check_lease(3, 0.5) is None


def test_settings_without_room_for_a_lease_are_refused(tmp_path: Path) -> None:
    assert check_lease(1.75, 0.5) is not None  # the lease would be one heartbeat
    with pytest.raises(SettingsError, match=r"zombie_threshold .* too short"):
        Settings.load(env={"SQUALL_HOME": str(tmp_path),
                           "SQUALL__SCHEDULER__ZOMBIE_THRESHOLD": "1.5",
                           "SQUALL__SCHEDULER__JOB_HEARTBEAT_SEC": "0.5"})


def test_the_lease_counts_from_the_last_successful_heartbeat_sent() -> None:
    now = [100.0]
    lease = HeartbeatLease(2.0, clock=lambda: now[0])
    now[0] = 101.5
    lease.renew(sent_at=101.0)
    now[0] = 102.9
    assert not lease.lost() and lease.remaining() == pytest.approx(0.1)
    lease.renew(sent_at=100.5)  # an older send never moves it back
    now[0] = 103.0
    assert lease.lost() and lease.since_renewed() == pytest.approx(2.0)
