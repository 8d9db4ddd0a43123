"""Whether a task instance may run: trigger rules, retry periods, ``depends_on_past``.

Pure decisions, no database: the caller (``squall.common.dagrun_ops``) loads the states and
applies the verdicts. Trigger rules follow Airflow 2.7+'s ``TriggerRuleDep`` (with the
scheduler's ``flag_upstream_failed``): besides "ready" and "wait", a rule can decide that the
task instance will never run and must be marked ``skipped`` or ``upstream_failed`` now, even
before every upstream is done.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from squall.common.state import FINISHED_STATES, UNFINISHED_STATES, TaskInstanceState
from squall.common.trigger_rule import TriggerRule

TI = TaskInstanceState

#: What ``depends_on_past`` accepts of the previous run's task instance (and its downstreams).
PAST_OK_STATES: frozenset[str] = frozenset({TI.SUCCESS.value, TI.SKIPPED.value})


@dataclass(frozen=True)
class UpstreamCounts:
    """How the direct upstreams of one task instance stand.

    ``total`` and ``done`` leave out removed upstreams (counted in ``removed`` only): a task
    that was taken out of the DAG neither blocks nor satisfies anything. ``done`` counts the
    finished upstreams (success, failed, skipped, upstream_failed); an upstream still in
    flight, or with no task instance row at all, is counted in ``total`` only.
    """

    total: int
    success: int
    skipped: int
    failed: int
    upstream_failed: int
    removed: int
    done: int

    @classmethod
    def from_states(cls, states: Iterable[str | None]) -> UpstreamCounts:
        """Count upstream states; ``None`` stands for an upstream without a task instance."""
        total = success = skipped = failed = upstream_failed = removed = done = 0
        for state in states:
            if state == TI.REMOVED:
                removed += 1
                continue
            total += 1
            if state is None or state not in FINISHED_STATES:
                continue
            done += 1
            if state == TI.SUCCESS:
                success += 1
            elif state == TI.SKIPPED:
                skipped += 1
            elif state == TI.FAILED:
                failed += 1
            elif state == TI.UPSTREAM_FAILED:
                upstream_failed += 1
        return cls(total=total, success=success, skipped=skipped, failed=failed,
                   upstream_failed=upstream_failed, removed=removed, done=done)

    @property
    def all_done(self) -> bool:
        return self.done >= self.total


class TriggerDecision(StrEnum):
    #: the trigger rule is met: the task instance may be scheduled
    READY = "ready"
    #: not yet decidable: wait for more upstreams to finish
    WAIT = "wait"
    #: the rule can no longer be met this way: mark the task instance skipped
    SKIP = "skip"
    #: the rule can no longer be met because of a failure: mark it upstream_failed
    UPSTREAM_FAILED = "upstream_failed"

    @property
    def final_state(self) -> TaskInstanceState | None:
        """The task instance state this decision writes, if any."""
        if self is TriggerDecision.SKIP:
            return TI.SKIPPED
        if self is TriggerDecision.UPSTREAM_FAILED:
            return TI.UPSTREAM_FAILED
        return None


def evaluate_trigger_rule(rule: TriggerRule | str, counts: UpstreamCounts) -> TriggerDecision:
    """Airflow 2's verdict of ``rule`` on the direct upstreams described by ``counts``.

    A task instance without (non-removed) upstreams is always ready, as is ``always``.
    """
    rule = TriggerRule(str(rule))
    if counts.total == 0 or rule is TriggerRule.ALWAYS:
        return TriggerDecision.READY
    c = counts
    any_failed = c.failed + c.upstream_failed > 0
    ready: bool
    if rule is TriggerRule.ALL_SUCCESS:
        if any_failed:
            return TriggerDecision.UPSTREAM_FAILED
        if c.skipped:
            return TriggerDecision.SKIP
        ready = c.success >= c.total
    elif rule is TriggerRule.ALL_FAILED:
        if c.success or c.skipped:
            return TriggerDecision.SKIP
        ready = c.failed + c.upstream_failed >= c.total
    elif rule is TriggerRule.ALL_DONE:
        ready = c.all_done
    elif rule is TriggerRule.ALL_SKIPPED:
        if c.success or any_failed:
            return TriggerDecision.SKIP
        ready = c.skipped >= c.total
    elif rule is TriggerRule.ONE_SUCCESS:
        if c.success:
            return TriggerDecision.READY
        if c.all_done:
            return (TriggerDecision.SKIP if c.done == c.skipped
                    else TriggerDecision.UPSTREAM_FAILED)
        ready = False
    elif rule is TriggerRule.ONE_FAILED:
        if any_failed:
            return TriggerDecision.READY
        if c.all_done:
            return TriggerDecision.SKIP
        ready = False
    elif rule is TriggerRule.ONE_DONE:
        # upstream_failed does not count as "done" for one_done (Airflow: success or failed)
        if c.success + c.failed:
            return TriggerDecision.READY
        if c.all_done:
            return TriggerDecision.SKIP
        ready = False
    elif rule is TriggerRule.NONE_FAILED:
        if any_failed:
            return TriggerDecision.UPSTREAM_FAILED
        ready = c.success + c.skipped >= c.total
    elif rule is TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS:
        if any_failed:
            return TriggerDecision.UPSTREAM_FAILED
        if c.skipped >= c.total:
            return TriggerDecision.SKIP
        ready = c.success + c.skipped >= c.total
    elif rule is TriggerRule.NONE_SKIPPED:
        if c.skipped:
            return TriggerDecision.SKIP
        ready = c.all_done
    else:  # pragma: no cover - every TriggerRule member is handled above
        raise ValueError(f"no strategy for trigger rule {rule!r}")
    return TriggerDecision.READY if ready else TriggerDecision.WAIT


def retry_period_elapsed(ti_next_retry_at: datetime | None, now: datetime) -> bool:
    """Whether an up_for_retry / up_for_reschedule task instance may be scheduled again."""
    return ti_next_retry_at is None or ti_next_retry_at <= now


def past_ok(
    previous_ti_state: str | None,
    wait_for_downstream: bool = False,
    previous_downstream_states: Iterable[str | None] = (),
    *,
    task_start_date: datetime | None = None,
    previous_logical_date: datetime | None = None,
) -> bool:
    """Whether ``depends_on_past`` lets a task instance run.

    ``previous_ti_state`` is the state of the same task in the previous run (``None``: there
    is no previous run, or it has no task instance of this task, e.g. the task is newer).
    When the task's ``start_date`` is later than the previous run's logical date the
    previous run is not looked at. Otherwise the previous task instance must have succeeded
    or been skipped, and with ``wait_for_downstream`` so must the previous run's task
    instances of the task's direct downstreams (rows that do not exist, ``None``, or were
    removed are not waited for).
    """
    if (task_start_date is not None and previous_logical_date is not None
            and task_start_date > previous_logical_date):
        return True
    if previous_ti_state is None:
        return True
    if previous_ti_state not in PAST_OK_STATES:
        return False
    if wait_for_downstream:
        return all(
            state is None or state == TI.REMOVED or state in PAST_OK_STATES
            for state in previous_downstream_states
        )
    return True


def past_pending(
    previous_ti_state: str | None,
    wait_for_downstream: bool = False,
    previous_downstream_states: Iterable[str | None] = (),
) -> bool:
    """Whether a ``depends_on_past`` refusal may still turn into a yes on its own.

    True when the previous run's task instance (or, with ``wait_for_downstream``, one of its
    downstreams) has not finished yet; false when it finished in a state that does not
    satisfy ``depends_on_past`` (a clear of the previous run is then the only way out).
    """
    if previous_ti_state is not None and previous_ti_state in UNFINISHED_STATES:
        return True
    return wait_for_downstream and any(
        state is not None and state in UNFINISHED_STATES for state in previous_downstream_states
    )
