"""The terms of the heartbeat leases: how long a worker may go without a successful job
heartbeat before it stops its try itself (ADR 17), and how long a triggerer may go without
renewing its triggers' leases before it stops them (ADR 28). The terms are here, in the core,
because the settings check them when they load; so is the lease itself,
:class:`HeartbeatLease` (renewed and lost), which both the supervisor and the triggerer keep.

The scheduler's watchdog may fail a try whose job row has not heartbeated for ``[scheduler]
zombie_threshold`` seconds and start the next one. A supervisor cut off from the database
must therefore have ended every process of its try before that, by its own clock. The lease
is the threshold less a safety margin::

    kill_grace = min(5 s, job_heartbeat_sec / 2)          # SIGTERM -> SIGKILL
    margin     = max(2 * job_heartbeat_sec, zombie_threshold / 10) + kill_grace
    lease      = zombie_threshold - margin

The lease counts (on the monotonic clock) from the moment the last *successful* heartbeat
was sent, which is no later than the ``latest_heartbeat`` that heartbeat wrote. When it runs
out the supervisor kills the try's processes, which takes at most ``kill_grace`` (plus the
reaping); so the processes are gone ``max(2 * job_heartbeat_sec, zombie_threshold / 10)``
seconds before the watchdog may act, and that is what covers the scheduler's clock running
ahead of the worker's (clock drift between hosts) and a heartbeat that was slow to fail.
The watchdog's ``zombie_detection_interval`` only ever delays it, so it is not relied on.

Settings whose lease would not leave room for one heartbeat (``zombie_threshold`` up to
about 3.5 heartbeats) are refused when the settings are loaded: :func:`check_lease`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

#: at most this long between SIGTERM and SIGKILL for a task process
KILL_GRACE_SECONDS = 5.0


def kill_grace_for(heartbeat: float) -> float:
    """How long a supervisor lets its task process take to exit after SIGTERM before it
    sends SIGKILL: at most half a heartbeat, so that a try Squall ends is gone, with every
    process it started, within two heartbeats (one to notice, one to end it)."""
    return min(KILL_GRACE_SECONDS, heartbeat / 2)


@dataclass(frozen=True)
class LeaseTerms:
    """The lease and the margin it keeps below ``zombie_threshold``, in seconds."""

    zombie_threshold: float
    heartbeat: float
    kill_grace: float
    margin: float
    lease: float

    @property
    def drift_covered(self) -> float:
        """How far the scheduler's clock may run ahead of the worker's (plus how long a
        failing heartbeat may take) with the try's processes still gone in time."""
        return self.margin - self.kill_grace


def lease_terms(zombie_threshold: float, heartbeat: float) -> LeaseTerms:
    """The lease for these settings (see the module docstring); not checked."""
    grace = kill_grace_for(heartbeat)
    margin = max(2 * heartbeat, zombie_threshold / 10) + grace
    return LeaseTerms(zombie_threshold=zombie_threshold, heartbeat=heartbeat,
                      kill_grace=grace, margin=margin, lease=zombie_threshold - margin)


def check_lease(zombie_threshold: float, heartbeat: float) -> str | None:
    """Why these settings leave no usable lease (one that outlasts a heartbeat), or None."""
    terms = lease_terms(zombie_threshold, heartbeat)
    if terms.lease > heartbeat:
        return None
    return (f"[scheduler] zombie_threshold ({zombie_threshold:g} s) is too short for "
            f"job_heartbeat_sec ({heartbeat:g} s): a supervisor's heartbeat lease "
            f"(zombie_threshold less a safety margin of {terms.margin:g} s) would be "
            f"{terms.lease:g} s, not more than one heartbeat; raise zombie_threshold above "
            f"{3 * heartbeat + terms.kill_grace:g} s or shorten job_heartbeat_sec")


# --------------------------------------------------------------------------- triggers
#
# A triggerer holds each of its triggers by a lease written on the trigger's row
# (``lease_expires_at``): every heartbeat renews it to the database's "now" plus ``[triggerer]
# triggerer_health_check_threshold`` (the take-over bound), and another triggerer may claim
# the row once that time has passed by the database's clock. The holder counts its own lease
# on its monotonic clock from the moment before that renewal was sent, and when it runs out
# without a newer renewal it cancels the triggers itself. The same formula as above keeps the
# holder's lease below the take-over bound, so the holder has stopped them (cancellation and
# ``cleanup()`` within ``kill_grace``) ``margin - kill_grace`` seconds before anyone may claim
# them. Both times on the row come from one clock (the database's on PostgreSQL; on SQLite, a
# single host's), so that margin only has to cover a renewal that was slow to fail and a
# loop slow to run the cancellations, not clocks apart (see docs/guarantees.md, promise 11).


def trigger_lease_terms(take_over_after: float, heartbeat: float) -> LeaseTerms:
    """A triggerer's lease on its triggers for ``[triggerer]
    triggerer_health_check_threshold`` and ``job_heartbeat_sec`` (``zombie_threshold`` in
    the result is the take-over bound)."""
    return lease_terms(take_over_after, heartbeat)


def check_trigger_lease(take_over_after: float, heartbeat: float) -> str | None:
    """Why these ``[triggerer]`` settings leave no usable trigger lease, or None."""
    terms = trigger_lease_terms(take_over_after, heartbeat)
    if terms.lease > heartbeat:
        return None
    return (f"[triggerer] triggerer_health_check_threshold ({take_over_after:g} s) is too "
            f"short for job_heartbeat_sec ({heartbeat:g} s): a triggerer's lease on its "
            f"triggers (the threshold less a safety margin of {terms.margin:g} s) would be "
            f"{terms.lease:g} s, not more than one heartbeat; raise the threshold above "
            f"{3 * heartbeat + terms.kill_grace:g} s or shorten job_heartbeat_sec")


class HeartbeatLease:
    """A lease renewed by each successful heartbeat, lost when ``seconds`` pass without one
    (on ``clock``, monotonic). Read from any thread."""

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
