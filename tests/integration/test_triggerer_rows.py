"""The triggerer's database side (:mod:`squall.triggerer.trigger_rows`) on SQLite and
PostgreSQL: claiming up to a capacity, renewing, taking over an expired lease and only
then, firing and failing only while holding the row, cleaning up unused rows.

Airflow's rules: ``Trigger.assign_unassigned`` / ``get_sorted_triggers`` (claim free triggers
of DEFERRED task instances up to the capacity, highest priority first),
``TriggerEvent.handle_submit`` (``next_kwargs["event"] = payload``, ``trigger_id = None``,
state SCHEDULED), ``Trigger.submit_failure`` (``next_method="__fail__"``, ``next_kwargs =
{"error": "Trigger failure", "traceback": ...}``), ``Trigger.clean_unused``.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.models import TaskInstance, Trigger
from squall.common.state import TaskInstanceState
from squall.sdk.triggers import serde
from squall.triggerer import trigger_rows
from tests.support.triggers import Deferred, SleepTrigger, defer

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
LEASE = 30.0


def _defer_many(factory: SessionFactory, n: int, **kw: object) -> list[Deferred]:
    with session_scope(factory) as session:
        return [defer(session, SleepTrigger(seconds=60, tag=f"t{i}"), task_id=f"t{i}",
                      **kw) for i in range(n)]  # type: ignore[arg-type]


def _claim(factory: SessionFactory, me: int, capacity: int = 10,
           now: datetime = T0) -> trigger_rows.Beat:
    with session_scope(factory) as session:
        return trigger_rows.renew_and_claim(session, triggerer_id=me, capacity=capacity,
                                            take_over_after=LEASE, now=now)


def _ti(factory: SessionFactory, d: Deferred) -> TaskInstance:
    with session_scope(factory) as session:
        ti = session.scalar(select(TaskInstance).where(TaskInstance.task_id == d.task_id,
                                                       TaskInstance.run_id == d.run_id))
        assert ti is not None
        return ti


def _trigger(factory: SessionFactory, trigger_id: int) -> Trigger | None:
    with session_scope(factory) as session:
        return session.get(Trigger, trigger_id)


def test_claims_up_to_the_capacity_and_renews_what_it_holds(
        session_factory: SessionFactory) -> None:
    deferred = _defer_many(session_factory, 5)
    first = _claim(session_factory, 1, capacity=3)
    assert len(first.claimed) == 3 and first.held == first.claimed == first.runnable
    held = _trigger(session_factory, sorted(first.held)[0])
    assert held is not None and held.triggerer_id == 1
    assert held.lease_expires_at == T0 + timedelta(seconds=LEASE)
    # a later beat renews the three and claims nothing more (full)
    later = T0 + timedelta(seconds=5)
    second = _claim(session_factory, 1, capacity=3, now=later)
    assert second.held == first.held and not second.claimed
    renewed = _trigger(session_factory, sorted(first.held)[0])
    assert renewed is not None and renewed.lease_expires_at == later + timedelta(seconds=LEASE)
    # another triggerer gets the other two, not one of the held
    other = _claim(session_factory, 2, capacity=10, now=later)
    assert other.claimed == {d.trigger_id for d in deferred} - first.held


def test_the_highest_priority_is_claimed_first(session_factory: SessionFactory) -> None:
    with session_scope(session_factory) as session:
        low = defer(session, SleepTrigger(tag="low"), task_id="low", priority_weight=1)
        high = defer(session, SleepTrigger(tag="high"), task_id="high", priority_weight=9)
    assert _claim(session_factory, 1, capacity=1).claimed == {high.trigger_id}
    assert _claim(session_factory, 2, capacity=1).claimed == {low.trigger_id}


def test_a_lease_is_taken_over_only_once_it_has_expired(
        session_factory: SessionFactory) -> None:
    [d] = _defer_many(session_factory, 1)
    assert _claim(session_factory, 1).claimed == {d.trigger_id}
    just_before = T0 + timedelta(seconds=LEASE - 0.001)
    assert not _claim(session_factory, 2, now=just_before).claimed
    after = T0 + timedelta(seconds=LEASE + 0.001)
    assert _claim(session_factory, 2, now=after).claimed == {d.trigger_id}
    # the old holder's renewal no longer finds it, and it can no longer fire it
    assert not _claim(session_factory, 1, now=after).held
    with session_scope(session_factory) as session:
        assert trigger_rows.fire(session, d.trigger_id, triggerer_id=1, payload=1) is None
    assert _ti(session_factory, d).state == TaskInstanceState.DEFERRED


def test_a_trigger_whose_task_instance_is_not_deferred_is_not_claimed_nor_runnable(
        session_factory: SessionFactory) -> None:
    a, b = _defer_many(session_factory, 2)
    with session_scope(session_factory) as session:
        session.execute(update(TaskInstance).where(TaskInstance.task_id == a.task_id)
                        .values(state=TaskInstanceState.NONE.value))
    assert _claim(session_factory, 1).claimed == {b.trigger_id}
    # held, then cleared: held still (until cleaned up) but not runnable
    with session_scope(session_factory) as session:
        session.execute(update(TaskInstance).where(TaskInstance.task_id == b.task_id)
                        .values(state=TaskInstanceState.NONE.value))
    beat = _claim(session_factory, 1)
    assert beat.held == {b.trigger_id} and not beat.runnable


def test_firing_schedules_the_task_instance_with_the_event_and_deletes_the_row(
        session_factory: SessionFactory) -> None:
    with session_scope(session_factory) as session:
        d = defer(session, SleepTrigger(tag="x"), next_kwargs={"keep": (1, 2)})
    _claim(session_factory, 7)
    payload = {"tag": "x", "at": T0, "n": 3}
    with session_scope(session_factory) as session:
        moved = trigger_rows.fire(session, d.trigger_id, triggerer_id=7, payload=payload)
    assert moved is not None and [k.task_id for k in moved] == [d.task_id]
    ti = _ti(session_factory, d)
    assert ti.state == TaskInstanceState.SCHEDULED and ti.trigger_id is None
    assert ti.next_method == "execute_complete" and ti.try_number == 1
    assert serde.from_json(ti.next_kwargs) == {"keep": (1, 2), "event": payload}
    assert _trigger(session_factory, d.trigger_id) is None
    # a second firing (a duplicate) writes nothing
    with session_scope(session_factory) as session:
        assert trigger_rows.fire(session, d.trigger_id, triggerer_id=7, payload=2) is None
    assert serde.from_json(_ti(session_factory, d).next_kwargs)["event"] == payload


def test_firing_does_not_touch_a_task_instance_that_moved_on(
        session_factory: SessionFactory) -> None:
    [d] = _defer_many(session_factory, 1)
    _claim(session_factory, 7)
    with session_scope(session_factory) as session:
        session.execute(update(TaskInstance).values(state=TaskInstanceState.FAILED.value))
        assert trigger_rows.fire(session, d.trigger_id, triggerer_id=7, payload=1) == []
    assert _ti(session_factory, d).state == TaskInstanceState.FAILED


def test_failing_schedules_the_task_instance_to_fail_with_the_traceback(
        session_factory: SessionFactory) -> None:
    a, b = _defer_many(session_factory, 2)
    _claim(session_factory, 7)
    try:
        raise ValueError("boom")
    except ValueError as exc:
        error = exc
    with session_scope(session_factory) as session:
        assert trigger_rows.fail(session, a.trigger_id, triggerer_id=7, exc=error)
        assert trigger_rows.fail(session, b.trigger_id, triggerer_id=7, exc=None)
    ti = _ti(session_factory, a)
    assert (ti.state, ti.next_method, ti.trigger_id) == (TaskInstanceState.SCHEDULED,
                                                         "__fail__", None)
    assert ti.next_kwargs is not None and ti.next_kwargs["error"] == "Trigger failure"
    assert "ValueError: boom" in "".join(ti.next_kwargs["traceback"])
    # ended without an event: no exception, no traceback (Airflow: submit_failure(exc=None))
    assert _ti(session_factory, b).next_kwargs == {"error": "Trigger failure",
                                                   "traceback": None}


def test_release_frees_the_rows_for_another_triggerer_at_once(
        session_factory: SessionFactory) -> None:
    _defer_many(session_factory, 2)
    _claim(session_factory, 1)
    with session_scope(session_factory) as session:
        assert trigger_rows.release(session, triggerer_id=1) == 2
    assert len(_claim(session_factory, 2).claimed) == 2


def test_clean_unused_deletes_the_triggers_no_deferred_task_instance_waits_on(
        session_factory: SessionFactory) -> None:
    a, b = _defer_many(session_factory, 2)
    with session_scope(session_factory) as session:
        session.execute(update(TaskInstance).where(TaskInstance.task_id == a.task_id)
                        .values(state=TaskInstanceState.NONE.value))
        assert trigger_rows.clean_unused(session) == 1
    assert _trigger(session_factory, a.trigger_id) is None
    assert _ti(session_factory, a).trigger_id is None
    assert _trigger(session_factory, b.trigger_id) is not None


@pytest.mark.postgres
def test_two_triggerers_claiming_at_once_never_take_the_same_row(
        pg_engine: object) -> None:
    from squall.common.db import make_session_factory

    factory = make_session_factory(pg_engine)  # type: ignore[arg-type]
    _defer_many(factory, 40)
    results: dict[int, frozenset[int]] = {}
    barrier = threading.Barrier(4)

    def claim(me: int) -> None:
        barrier.wait()
        with session_scope(factory) as session:
            results[me] = trigger_rows.renew_and_claim(
                session, triggerer_id=me, capacity=15, take_over_after=LEASE).claimed

    threads = [threading.Thread(target=claim, args=(me,)) for me in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    claimed = [tid for ids in results.values() for tid in ids]
    assert len(claimed) == len(set(claimed)) == 40, results
    with session_scope(factory) as session:
        owners = dict(session.execute(select(Trigger.id, Trigger.triggerer_id)).all())
    for me, ids in results.items():
        assert all(owners[tid] == me for tid in ids)


def test_db_now_is_the_databases_clock(session_factory: SessionFactory) -> None:
    with session_scope(session_factory) as session:
        now = trigger_rows.db_now(session)
    assert now.tzinfo is not None
    assert abs((now - datetime.now(UTC)).total_seconds()) < 5
