"""Whether a task instance may run: trigger rules, retry periods, ``depends_on_past``.

Pure decisions, no database: the caller (``squall.scheduler.decisions``) loads the states and
applies the verdicts. Trigger rules follow Airflow 2.7+'s ``TriggerRuleDep`` (with the
scheduler's ``flag_upstream_failed``): besides "ready" and "wait", a rule can decide that the
task instance will never run and must be marked ``skipped`` or ``upstream_failed`` now, even
before every upstream is done.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from squall.common.state import FINISHED_STATES, PAST_OK_STATES, TaskInstanceState
from squall.sdk.trigger_rule import TriggerRule

TI = TaskInstanceState


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
    #: of them, setup tasks (Airflow 2.7+): how many, how many succeeded, were skipped
    setups: int = 0
    setup_success: int = 0
    setup_skipped: int = 0

    @classmethod
    def from_states(cls, states: Iterable[str | None],
                    setup_states: Iterable[str | None] = ()) -> UpstreamCounts:
        """Count upstream states; ``None`` stands for an upstream without a task instance.
        ``setup_states`` are those of the upstreams that are setup tasks (also counted in
        ``states``)."""
        setup_states = list(setup_states)
        setups = sum(1 for s in setup_states if s != TI.REMOVED)
        setup_success = sum(1 for s in setup_states if s == TI.SUCCESS)
        setup_skipped = sum(1 for s in setup_states if s == TI.SKIPPED)
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
                   upstream_failed=upstream_failed, removed=removed, done=done,
                   setups=setups, setup_success=setup_success, setup_skipped=setup_skipped)

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
    elif rule is TriggerRule.ALL_DONE_SETUP_SUCCESS:
        # a teardown: once everything upstream is done it runs if one of its setups
        # succeeded; all setups skipped skips it, none succeeded makes it upstream_failed
        if c.all_done and c.setups and c.setup_skipped >= c.setups:
            return TriggerDecision.SKIP
        if c.all_done and c.setups and not c.setup_success:
            return TriggerDecision.UPSTREAM_FAILED
        ready = c.all_done
    else:  # pragma: no cover - every TriggerRule member is handled above
        raise ValueError(f"no strategy for trigger rule {rule!r}")
    return TriggerDecision.READY if ready else TriggerDecision.WAIT


def evaluate_setup_constraint(setup_states: Iterable[str | None]) -> TriggerDecision:
    """Airflow 2.7+'s verdict on the *indirect* setups of a work task (the relevant setups
    upstream of it that are not its direct upstreams; ``squall.runs.dag_shape
    .indirect_setups``), checked before its own trigger rule whatever that rule is: one
    failed (or upstream_failed) makes it upstream_failed, one skipped skips it, and it waits
    until they have all succeeded (``TriggerRuleDep._evaluate_setup_constraint``)."""
    states = [s for s in setup_states if s != TI.REMOVED]
    if any(s in (TI.FAILED, TI.UPSTREAM_FAILED) for s in states):
        return TriggerDecision.UPSTREAM_FAILED
    if any(s == TI.SKIPPED for s in states):
        return TriggerDecision.SKIP
    if all(s == TI.SUCCESS for s in states):
        return TriggerDecision.READY
    return TriggerDecision.WAIT


def retry_period_elapsed(ti_next_retry_at: datetime | None, now: datetime) -> bool:
    """Whether an up_for_retry / up_for_reschedule task instance may be scheduled again."""
    return ti_next_retry_at is None or ti_next_retry_at <= now


@dataclass(frozen=True)
class PreviousInstance:
    """The same task's instance in the previous run, as ``depends_on_past`` looks at it."""

    dag_id: str
    task_id: str
    run_id: str
    logical_date: datetime
    #: its state; ``None`` when that run has no instance of the task (the task is newer)
    state: str | None
    #: the states of the task's direct downstreams in that run (``None``: no row)
    downstream_states: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.dag_id}.{self.task_id} of run {self.run_id}"


def past_wait_reason(
    previous: PreviousInstance | None,
    *,
    wait_for_downstream: bool = False,
    task_start_date: datetime | None = None,
    ignore_first: bool = True,
) -> str | None:
    """Why ``depends_on_past`` holds a task instance back, or ``None`` when it may run.

    ``previous`` is the task's instance in the previous run (``None``: there is no previous
    run). The first instance of a task is never held back: with no previous run, when the
    previous run has no instance of the task (unless ``ignore_first``, Airflow 2.10's
    ``ignore_first_depends_on_past``, is False: then it waits), or when the task's
    ``start_date`` is later than the previous run's logical date. Otherwise the previous
    instance must have succeeded or been skipped, and with ``wait_for_downstream`` so must
    the previous run's instances of the task's direct downstreams (rows that do not exist
    or were removed are not waited for).

    A task instance held back waits; it is never a deadlock. The previous instance may
    still be on its way, and one that failed can be cleared or set to success by hand.
    """
    if previous is None:
        return None
    if task_start_date is not None and task_start_date > previous.logical_date:
        return None
    if previous.state is None:
        if ignore_first:
            return None
        # Airflow's PrevDagrunDep with ignore_first_depends_on_past=False
        return ("depends_on_past is true for this task's DAG, but the previous task "
                f"instance {previous.name} has not run yet (ignore_first_depends_on_past "
                "is False)")
    if previous.state not in PAST_OK_STATES:
        return (f"depends_on_past: waiting for previous task instance {previous.name} "
                f"({previous.state}) to succeed or be skipped")
    if wait_for_downstream:
        pending = sorted(
            f"{task_id} ({state})" for task_id, state in previous.downstream_states.items()
            if state is not None and state != TI.REMOVED and state not in PAST_OK_STATES
        )
        if pending:
            shown = ", ".join(pending[:10])
            if len(pending) > 10:
                shown += f", ... ({len(pending)} in all)"
            return (f"depends_on_past (wait_for_downstream): waiting for the downstreams of "
                    f"previous task instance {previous.name} to succeed or be skipped: "
                    f"{shown}")
    return None
