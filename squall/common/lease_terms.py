"""The terms of the supervisor's heartbeat lease: how long a worker may go without a
successful job heartbeat before it stops its try itself (ADR 17). The lease itself, renewed
and lost, is the worker's (:class:`squall.worker.lease.HeartbeatLease`); its terms are here,
in the core, because the settings check them when they load.

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
