"""Deciding a DAG run, shared by the scheduler and ``squall dags test``.

* :func:`update_dag_run` applies trigger rules (marking ``skipped`` / ``upstream_failed``,
  cascading down chains), lists the task instances that may be scheduled (their
  ``depends_on_past`` and retry / reschedule waits included), and decides the run's state
  (leaves, deadlock, ``dagrun_timeout``);
* expands the mapped tasks whose upstreams are done (:mod:`squall.runs.mapping`: their
  instances are made in the same transaction, and decided at once); a mapped upstream
  counts with all its instances, and inside a mapped task group instance N with instance N;
* the caller then moves the schedulable ones on with
  :func:`squall.runs.ti_updates.schedule_tis`.

Nothing here commits: the caller owns the transaction. The caller is also expected to be the
only one deciding for a given run at a time (the scheduler holds the run's row lock); the
state guards on every bulk UPDATE protect the changes of *other* writers (workers, the API)
from being overwritten, they do not make two deciders safe.

The ``dag`` given is anything shaped like :class:`squall.sdk.dag.DAG` (see
:class:`~squall.runs.dag_shape.DagLike`): the DAG itself, or a stand-in rebuilt from
its serialised form. The pure rules (trigger rules, waits) are in
:mod:`squall.scheduler.readiness`.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.common.console import CONSOLE
from squall.common.models import DagRun, TaskInstance, clip_reason
from squall.common.state import (
    DAGRUN_FINISHED_STATES,
    FAILED_LIKE_STATES,
    IN_FLIGHT_STATES,
    LEAF_SUCCESS_STATES,
    PAST_OK_STATES,
    SCHEDULABLE_STATES,
    TIMEOUT_SKIP_STATES,
    UNFINISHED_STATES,
    DagRunState,
    DagRunType,
    TaskInstanceState,
)
from squall.execution.deferral import NO_RESUME
from squall.runs.dag_shape import (
    DagLike,
    TaskLike,
    downstream_map,
    indirect_setups,
    leaf_ids,
    topological_order,
)
from squall.runs.mapping import expand_all, is_mapped, mapped_group_id, revise_mapped_task
from squall.runs.ti_updates import bulk_set, load_tis
from squall.scheduler.readiness import (
    PreviousInstance,
    TriggerDecision,
    UpstreamCounts,
    evaluate_setup_constraint,
    evaluate_trigger_rule,
    past_wait_reason,
    retry_period_elapsed,
)
from squall.scheduler.run_stops import pause_after_failed_runs, stop_remaining_tasks
from squall.sdk.trigger_rule import TriggerRule

log = logging.getLogger(__name__)

TI = TaskInstanceState

#: how the reason of a run that failed because a leaf failed begins
TASK_FAILURE = "task failure: "

#: How often update_dag_run re-reads and re-decides after a racing writer won a guard.
_MAX_DECISION_ROUNDS = 3


@dataclass
class RunUpdate:
    """What :func:`update_dag_run` decided."""

    #: task instances that may be moved to SCHEDULED now, highest priority first
    schedulable: list[TaskInstance]
    #: the run's state after this update
    state: DagRunState
    #: the run reached SUCCESS or FAILED in this very update
    finished_now: bool = False
    #: why the run finished (or ``None``)
    reason: str | None = None
    #: task ids marked SKIPPED / UPSTREAM_FAILED / REMOVED by this update, by new state
    changed: dict[str, list[str]] = field(default_factory=dict)
    #: task id -> why ``depends_on_past`` holds it back (also its ``state_reason``)
    waiting_on_past: dict[str, str] = field(default_factory=dict)
    #: the run's task instances as this update read them (none when it read nothing);
    #: the scheduler sees from them which tries it tracks are over (ADR 22). One may be
    #: expired (a racing writer won a guard): its attributes are then not loaded
    tis: Sequence[TaskInstance] = ()


def update_dag_run(
    session: Session,
    dag: DagLike,
    dag_run: DagRun,
    *,
    now: datetime,
    may_start: bool = True,
    ignore_depends_on_past: bool = False,
) -> RunUpdate:
    """Apply trigger rules to the run's task instances and decide the run's state.

    * A finished run is left alone. A queued run becomes running (``start_date = now``)
      when ``may_start`` (admission under ``max_active_runs`` is the caller's business);
      otherwise it stays queued and nothing else is looked at.
    * A running run past its ``dagrun_timeout`` fails (reason ``"timed out"``); its task
      instances that are not queued or running are marked skipped.
    * Otherwise every task instance in state ``none`` whose trigger rule can no longer be
      met is marked ``skipped`` / ``upstream_failed`` (cascading down chains within this
      call); those whose rule is met (and whose ``depends_on_past`` is satisfied) are
      returned as schedulable, as are ``up_for_retry`` / ``up_for_reschedule`` ones whose
      wait is over. Rows of tasks no longer in the DAG are marked ``removed``.
    * A task instance whose rule is met but which ``depends_on_past`` holds back waits, with
      the reason (which previous task instance, in what state) in its ``state_reason``; the
      run goes on waiting, as in Airflow 2, however the previous instance ended: it may be
      cleared or set to success. ``ignore_depends_on_past`` leaves the past out (a
      backfill's ``-I`` for its first run).
    * When every task instance has finished the run succeeds if every leaf succeeded or was
      skipped, and fails if a leaf failed or is upstream_failed (Airflow 2's rule). When
      some have not finished but none can make progress (nothing schedulable, nothing in
      flight, nothing held back by ``depends_on_past``) it fails as deadlocked.

    One SELECT loads the run's task instances; state changes are a few bulk UPDATEs, each
    guarded by the state the row was seen in. The run's own changes are left to the flush.
    """
    state = DagRunState(dag_run.state)
    if state in DAGRUN_FINISHED_STATES:
        return RunUpdate(schedulable=[], state=state)
    if state == DagRunState.QUEUED and not may_start:
        return RunUpdate(schedulable=[], state=state)
    # read first, so that autoflush does not write the run twice
    tis = load_tis(session, dag_run)
    if state == DagRunState.QUEUED:
        dag_run.state = DagRunState.RUNNING.value
        dag_run.start_date = now
        dag_run.end_date = None
        log.info("DagRun %s %s: running", dag_run.dag_id, dag_run.run_id)
    dag_run.last_scheduling_decision = now
    timeout = dag.dagrun_timeout
    if timeout is not None and dag_run.start_date is not None and (
        now - dag_run.start_date > timeout
    ):
        return _time_out(session, dag_run, tis, now)

    changed: dict[str, list[str]] = stop_remaining_tasks(session, dag, dag_run, tis, now)
    if changed:
        tis = load_tis(session, dag_run)
    plan = _Plan()
    races = expansions = 0
    revised: set[str] = set()
    while True:
        plan = _decide(session, dag, dag_run, tis, now,
                       ignore_past=ignore_depends_on_past)
        if not _apply(session, plan, now, changed):
            races += 1
            if races >= _MAX_DECISION_ROUNDS:
                # still racing: report nothing schedulable this time and keep the run running
                return RunUpdate(schedulable=[], state=DagRunState.RUNNING, changed=changed,
                                 tis=tis)
            log.info("DagRun %s %s: task instances changed under us; deciding again",
                     dag_run.dag_id, dag_run.run_id)
            tis = load_tis(session, dag_run)
            continue
        revise = sorted(plan.to_revise - revised)
        if not plan.to_expand and revise:
            revised.update(revise)
            if any([revise_mapped_task(session, dag, dag_run, task_id, now=now)
                    for task_id in revise]):
                tis = load_tis(session, dag_run)
                continue
        if not plan.to_expand or expansions > len(dag.task_dict):
            break
        # mapped tasks whose upstreams are done: make their instances, then decide again
        expansions += 1
        for expansion in expand_all(session, dag, dag_run, plan.to_expand, now=now):
            if expansion.state is not None:
                changed.setdefault(expansion.state.value, []).append(expansion.task_id)
        tis = load_tis(session, dag_run)

    final, reason = _run_outcome(dag, dag_run, tis, plan)
    if final is None:
        _record_past_waits(session, plan.waiting_on_past, now)
        return RunUpdate(schedulable=plan.schedulable, state=DagRunState.RUNNING,
                         changed=changed, waiting_on_past={
                             ti.task_id: why for ti, why in plan.waiting_on_past}, tis=tis)
    _finish(dag_run, final, now)
    log.info("DagRun %s %s: %s%s", dag_run.dag_id, dag_run.run_id, final.value,
             f" ({reason})" if reason else "", extra=CONSOLE)
    if final == DagRunState.FAILED and reason and reason.startswith(TASK_FAILURE):
        paused = pause_after_failed_runs(session, dag, dag_run)
        reason = f"{reason}; {paused}" if paused else reason
    return RunUpdate(schedulable=[], state=final, finished_now=True, reason=reason,
                     changed=changed, tis=tis)


@dataclass
class _Plan:
    """What one round of :func:`_decide` wants: new states and the schedulable instances."""

    #: new state -> task instances to move there (with the states they are expected in)
    moves: dict[TaskInstanceState, list[TaskInstance]] = field(default_factory=dict)
    schedulable: list[TaskInstance] = field(default_factory=list)
    #: held back by depends_on_past, and why: a wait, not a deadlock
    waiting_on_past: list[tuple[TaskInstance, str]] = field(default_factory=list)
    #: unexpanded mapped task instances (map index -1) whose trigger rule is met
    to_expand: list[TaskInstance] = field(default_factory=list)
    #: mapped tasks with expanded instances about to be scheduled from ``none`` (after a
    #: clear): their length is looked at again
    to_revise: set[str] = field(default_factory=set)


def _decide(session: Session, dag: DagLike, dag_run: DagRun, tis: Sequence[TaskInstance],
            now: datetime, *, ignore_past: bool = False) -> _Plan:
    plan = _Plan()
    tasks = dag.task_dict
    by_task: dict[str, list[TaskInstance]] = {}
    # the states as they will be after this update's own changes: task id -> map index ->
    # state (a mapped task's upstream counts are over all its instances, as in Airflow)
    states: dict[str, dict[int, str]] = {}
    for ti in tis:
        by_task.setdefault(ti.task_id, []).append(ti)
        states.setdefault(ti.task_id, {})[ti.map_index] = ti.state

    orphans = [ti for ti in tis if ti.task_id not in tasks and ti.state != TI.REMOVED]
    if orphans:
        plan.moves[TI.REMOVED] = orphans
        for ti in orphans:
            states[ti.task_id][ti.map_index] = TI.REMOVED.value

    downstream = downstream_map(tasks)
    setups_of = _indirect_setups_cache(dag) if any(t.is_setup for t in tasks.values()) else None
    # Airflow's wait_for_past_depends_before_skipping: a skip waits for depends_on_past
    hold_skip = {} if ignore_past else _past_reasons(session, dag, dag_run, [
        ti for ti in tis if ti.state == TI.NONE and ti.task_id in tasks
        and getattr(tasks[ti.task_id], "wait_for_past_depends_before_skipping", False)],
        downstream)
    candidates: list[TaskInstance] = []
    # In topological order every upstream's state is final for this call before its
    # downstreams are looked at, so a single pass reaches the fixed point: a skip or an
    # upstream_failed cascades down a whole chain.
    for task_id in topological_order(tasks, downstream):
        task = tasks[task_id]
        decision: TriggerDecision | None = None
        group = mapped_group_id(task)
        for ti in by_task.get(task_id, ()):
            current = ti.state
            if current not in SCHEDULABLE_STATES:
                continue
            if decision is None or group is not None:  # upstreams do not change here
                decision = _trigger_decision(tasks, downstream, ti, states, setups_of, group)
            final_state = decision.final_state
            if final_state is not None:
                if final_state == TI.SKIPPED and task_id in hold_skip:
                    plan.waiting_on_past.append((ti, "Task should be skipped but the past "
                                                 f"depends are not met: {hold_skip[task_id]}"))
                    continue
                if current == TI.NONE:
                    plan.moves.setdefault(final_state, []).append(ti)
                    states[task_id][ti.map_index] = final_state.value
                continue
            if decision is not TriggerDecision.READY:
                continue
            if current != TI.NONE and not retry_period_elapsed(ti.next_retry_at, now):
                continue
            if current == TI.NONE and is_mapped(task):
                if ti.map_index == -1:
                    plan.to_expand.append(ti)
                    continue
                plan.to_revise.add(task_id)
            candidates.append(ti)

    plan.schedulable = (candidates if ignore_past else _filter_depends_on_past(
        session, dag, dag_run, candidates, downstream, plan))
    plan.schedulable.sort(key=lambda t: (-t.priority_weight, t.task_id, t.map_index))
    return plan


#: per DAG object (the scheduler keeps one per DAG version): task id -> its indirect setups
_INDIRECT_SETUPS: weakref.WeakKeyDictionary[Any, dict[str, set[str]]] = (
    weakref.WeakKeyDictionary())


def _indirect_setups_cache(dag: DagLike) -> dict[str, set[str]]:
    try:
        return _INDIRECT_SETUPS.setdefault(dag, {})
    except TypeError:  # not weakly referable: no cache
        return {}


def _trigger_decision(tasks: Mapping[str, TaskLike], downstream: Mapping[str, AbstractSet[str]],
                      ti: TaskInstance, states: Mapping[str, Mapping[int, str]],
                      setups_of: dict[str, set[str]] | None, group: str | None
                      ) -> TriggerDecision:
    """``ti``'s trigger rule on its task's direct upstreams (:func:`_upstream_counts`) and,
    in a DAG with setup tasks (``setups_of`` caches their walk), the setups it waits for
    besides them (Airflow's ``TriggerRuleDep``: both are checked, a verdict that marks the
    task instance wins, then both must be met)."""
    task_id = ti.task_id
    task = tasks[task_id]
    ups = task.upstream_task_ids
    decision = evaluate_trigger_rule(task.trigger_rule,
                                     _upstream_counts(tasks, task, ti, states, group))
    if setups_of is None or not ups or task.trigger_rule == TriggerRule.ALWAYS:
        return decision
    setups = setups_of.get(task_id)
    if setups is None:
        setups = setups_of[task_id] = indirect_setups(tasks, downstream, task_id)
    if not setups:
        return decision
    constraint = evaluate_setup_constraint(_instance_states(states, setups))
    if constraint.final_state is not None:
        return constraint
    if decision.final_state is not None or constraint is TriggerDecision.READY:
        return decision
    return TriggerDecision.WAIT


def _instance_states(states: Mapping[str, Mapping[int, str]],
                     task_ids: Iterable[str]) -> Iterator[str | None]:
    """The state of every instance of these tasks; ``None`` for a task without one."""
    for task_id in task_ids:
        found = states.get(task_id)
        if found:
            yield from found.values()
        else:
            yield None


def _upstream_counts(tasks: Mapping[str, Any], task: Any, ti: TaskInstance,
                     states: Mapping[str, Mapping[int, str]], group: str | None
                     ) -> UpstreamCounts:
    """How ``ti``'s upstreams stand: every instance of each, but inside a mapped task group
    an expanded instance N looks at instance N of the group's other tasks, and the
    unexpanded instance only at their unexpanded one (Airflow's
    ``_get_relevant_upstream_map_indexes``: index -1 of an expanded upstream is no
    instance, so it waits for nothing). The setup tasks among the upstreams are counted
    again on their own."""
    def of(up: str) -> Iterable[str | None]:
        found = states.get(up)
        if found is None:
            return (None,)
        if group is not None and up in tasks and mapped_group_id(tasks[up]) == group:
            if ti.map_index >= 0 and ti.map_index in found:
                return (found[ti.map_index],)
            if -1 in found:  # not expanded yet (or skipped / upstream_failed whole)
                return (found[-1],)
            if ti.map_index < 0:
                return ()  # the upstream is expanded: so may this one be (Airflow's rule)
        return found.values()

    ups = task.upstream_task_ids
    setups = [up for up in ups if up in tasks and tasks[up].is_setup]
    return UpstreamCounts.from_states((s for up in ups for s in of(up)),
                                      (s for up in setups for s in of(up)))


def _filter_depends_on_past(session: Session, dag: DagLike, dag_run: DagRun,
                            candidates: list[TaskInstance],
                            downstream: Mapping[str, AbstractSet[str]],
                            plan: _Plan) -> list[TaskInstance]:
    """The candidates ``depends_on_past`` lets run; the others go to ``plan.waiting_on_past``."""
    reasons = _past_reasons(session, dag, dag_run, candidates, downstream)
    kept: list[TaskInstance] = []
    for ti in candidates:
        why = reasons.get(ti.task_id)
        if why is None:
            kept.append(ti)
        else:
            plan.waiting_on_past.append((ti, why))
    return kept


def _past_reasons(session: Session, dag: DagLike, dag_run: DagRun,
                  tis: Sequence[TaskInstance],
                  downstream: Mapping[str, AbstractSet[str]]) -> dict[str, str]:
    """Task id -> why ``depends_on_past`` holds it back, for those of ``tis`` it holds.

    The previous run is Airflow 2's: the latest run of the DAG with an earlier logical
    date, leaving out manual runs when the DAG catches up (``catchup``).
    """
    tasks = dag.task_dict
    if not any(tasks[ti.task_id].depends_on_past for ti in tis):
        return {}
    stmt = (
        select(DagRun.run_id, DagRun.logical_date)
        .where(DagRun.dag_id == dag_run.dag_id, DagRun.logical_date < dag_run.logical_date)
        .order_by(DagRun.logical_date.desc())
        .limit(1)
    )
    if dag.catchup:
        stmt = stmt.where(DagRun.run_type != DagRunType.MANUAL.value)
    previous = session.execute(stmt).first()
    if previous is None:
        return {}
    # a mapped task's instances all count: one that did not succeed (or was not skipped)
    # holds every instance of the next run back (Airflow 2.10's PrevDagrunDep counts them)
    previous_states: dict[str, str] = {}
    for row in session.execute(
        select(TaskInstance.task_id, TaskInstance.state).where(
            TaskInstance.dag_id == dag_run.dag_id,
            TaskInstance.run_id == previous.run_id,
        )
    ):
        seen = previous_states.get(row.task_id)
        if seen is None or (seen in PAST_OK_STATES and row.state not in PAST_OK_STATES):
            previous_states[row.task_id] = row.state
    reasons: dict[str, str] = {}
    for ti in tis:
        task = tasks[ti.task_id]
        if not task.depends_on_past:
            continue
        why = past_wait_reason(
            PreviousInstance(
                dag_id=dag_run.dag_id, task_id=ti.task_id, run_id=previous.run_id,
                logical_date=previous.logical_date, state=previous_states.get(ti.task_id),
                downstream_states={d: previous_states.get(d)
                                   for d in downstream.get(ti.task_id, ())},
            ),
            wait_for_downstream=task.wait_for_downstream, task_start_date=task.start_date,
            ignore_first=getattr(task, "ignore_first_depends_on_past", True),
        )
        if why is not None:
            reasons[ti.task_id] = why
    return reasons


def _record_past_waits(session: Session, waits: Sequence[tuple[TaskInstance, str]],
                       now: datetime) -> None:
    """Write why each task instance waits on the past into its ``state_reason``, when that
    changed (guarded by the state it was seen in; a racing writer wins)."""
    for ti, why in waits:
        why = clip_reason(why)
        if ti.state_reason == why:
            continue
        if bulk_set(session, [ti], expected={ti.state}, values={"state_reason": why},
                     now=now):
            log.info("TaskInstance %s: waits (%s)", ti.key, why)


def _apply(session: Session, plan: _Plan, now: datetime,
           changed: dict[str, list[str]]) -> bool:
    """Write the plan's state changes; False when a guard lost to another writer."""
    all_moved = True
    for new_state, tis in plan.moves.items():
        if new_state == TI.REMOVED:
            values: dict[str, Any] = {"state": new_state.value,
                                      "state_reason": "task is no longer in the DAG"}
            expected = {ti.state for ti in tis}
        else:
            values = {"state": new_state.value, "start_date": now, "end_date": now,
                      "duration": 0.0, "state_reason": _TRIGGER_REASONS[new_state]}
            expected = {TI.NONE.value}
        moved = bulk_set(session, tis, expected=expected, values=values, now=now)
        if moved == len(tis):
            changed.setdefault(new_state.value, []).extend(ti.task_id for ti in tis)
        else:
            all_moved = False
    return all_moved


_TRIGGER_REASONS: dict[TaskInstanceState, str] = {
    TI.SKIPPED: "skipped by its trigger rule (upstream outcome)",
    TI.UPSTREAM_FAILED: "an upstream task failed",
}


def _run_outcome(dag: DagLike, dag_run: DagRun, tis: Sequence[TaskInstance],
                 plan: _Plan) -> tuple[DagRunState | None, str | None]:
    """The run's final state and why, or ``(None, None)`` while it goes on."""
    unfinished = [ti for ti in tis if ti.state in UNFINISHED_STATES]
    if not unfinished:
        leaves = leaf_ids(dag.task_dict)
        leaf_tis = [ti for ti in tis if ti.task_id in leaves and ti.state != TI.REMOVED]
        # a task id once, however many of its mapped instances failed
        failed = sorted({ti.task_id for ti in leaf_tis if ti.state in FAILED_LIKE_STATES})
        if failed:
            return DagRunState.FAILED, f"{TASK_FAILURE}{', '.join(failed)}"
        if all(ti.state in LEAF_SUCCESS_STATES for ti in leaf_tis):
            return DagRunState.SUCCESS, None
        odd = sorted(f"{ti.task_id}={ti.state}" for ti in leaf_tis
                     if ti.state not in LEAF_SUCCESS_STATES)
        return DagRunState.FAILED, f"leaves in unexpected states: {', '.join(odd)}"
    if plan.schedulable or plan.waiting_on_past:
        return None, None
    if any(ti.state in IN_FLIGHT_STATES for ti in unfinished):
        return None, None
    stuck = sorted({ti.task_id for ti in unfinished})
    return (DagRunState.FAILED,
            f"deadlock: no task instance can make progress ({_short_list(stuck)} waiting)")


def _time_out(session: Session, dag_run: DagRun, tis: Sequence[TaskInstance],
              now: datetime) -> RunUpdate:
    to_skip = [ti for ti in tis if ti.state in TIMEOUT_SKIP_STATES]
    changed: dict[str, list[str]] = {}
    if to_skip:
        bulk_set(session, to_skip, expected=TIMEOUT_SKIP_STATES, values={
            "state": TI.SKIPPED.value, "end_date": now, "state_reason": "the DAG run timed out",
            **NO_RESUME,  # a deferred one's trigger row goes with the watchdog's sweep
        }, now=now)
        changed[TI.SKIPPED.value] = sorted(ti.task_id for ti in to_skip)
    _finish(dag_run, DagRunState.FAILED, now)
    log.warning("DagRun %s %s: timed out (started %s); %d task instance(s) skipped",
                dag_run.dag_id, dag_run.run_id, dag_run.start_date, len(to_skip))
    return RunUpdate(schedulable=[], state=DagRunState.FAILED, finished_now=True,
                     reason="timed out", changed=changed, tis=tis)


def _finish(dag_run: DagRun, state: DagRunState, now: datetime) -> None:
    dag_run.state = state.value
    dag_run.end_date = now


def _short_list(items: Iterable[str], limit: int = 10) -> str:
    items = list(items)
    text = ", ".join(items[:limit])
    if len(items) > limit:
        text += f", ... ({len(items)} in all)"
    return text
