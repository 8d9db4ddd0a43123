"""Trigger rules (Airflow 2.7+ TriggerRuleDep semantics) and the other pure dependency checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from squall.common.state import TaskInstanceState
from squall.scheduler.readiness import (
    PreviousInstance,
    TriggerDecision,
    UpstreamCounts,
    evaluate_trigger_rule,
    past_wait_reason,
    retry_period_elapsed,
)
from squall.sdk.trigger_rule import TriggerRule

TI = TaskInstanceState
S, F, SK, UF = TI.SUCCESS, TI.FAILED, TI.SKIPPED, TI.UPSTREAM_FAILED
RUN, NONE, Q, RETRY, RM = TI.RUNNING, TI.NONE, TI.QUEUED, TI.UP_FOR_RETRY, TI.REMOVED

#: upstream outcome mixes (the column order of the table below)
MIXES: dict[str, list[str | None]] = {
    "all_success": [S, S, S],
    "success_and_running": [S, S, RUN],
    "failed_and_pending": [F, NONE, S],
    "failed_all_done": [S, F, S],
    "failed_and_running": [F, RUN],
    "success_and_upstream_failed": [S, UF],
    "all_failed": [F, F],
    "failed_and_upstream_failed": [F, UF],
    "only_upstream_failed": [UF, UF],
    "all_skipped": [SK, SK],
    "skipped_and_running": [SK, RUN],
    "success_and_skipped": [S, SK],
    "failed_and_skipped": [F, SK],
    "success_failed_skipped": [S, F, SK],
    "nothing_done": [NONE, Q],
    "success_and_retrying": [S, RETRY],
    "success_and_removed": [S, RM],
    "only_removed": [RM],
    "no_upstreams": [],
    "upstream_without_row": [S, None],
}

# R = READY, W = WAIT, S = SKIP, U = UPSTREAM_FAILED; one letter per mix, in MIXES order:
#   all_success success_and_running failed_and_pending failed_all_done failed_and_running
#   success_and_upstream_failed all_failed failed_and_upstream_failed only_upstream_failed
#   all_skipped skipped_and_running success_and_skipped failed_and_skipped
#   success_failed_skipped nothing_done success_and_retrying success_and_removed
#   only_removed no_upstreams upstream_without_row
EXPECTED: dict[TriggerRule, str] = {
    TriggerRule.ALL_SUCCESS:                 "R W U U U  U U U U  S S S U  U W W R  R R W",
    TriggerRule.ALL_FAILED:                  "S S S S W  S R R R  S S S S  S W S S  R R S",
    TriggerRule.ALL_DONE:                    "R W W R W  R R R R  R W R R  R W W R  R R W",
    TriggerRule.ALL_SKIPPED:                 "S S S S S  S S S S  R W S S  S W S S  R R S",
    TriggerRule.ONE_SUCCESS:                 "R R R R W  R U U U  S W R U  R W R R  R R R",
    TriggerRule.ONE_FAILED:                  "S W R R R  R R R R  S W S R  R W W S  R R W",
    TriggerRule.ONE_DONE:                    "R R R R R  R R R S  S W R R  R W R R  R R R",
    TriggerRule.NONE_FAILED:                 "R W U U U  U U U U  R W R U  U W W R  R R W",
    TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS: "R W U U U  U U U U  S W R U  U W W R  R R W",
    TriggerRule.NONE_SKIPPED:                "R W W R W  R R R R  S S S S  S W W R  R R W",
    TriggerRule.ALWAYS:                      "R R R R R  R R R R  R R R R  R R R R  R R R",
    # without setups among the upstreams a teardown's rule is all_done (test_setup_teardown)
    TriggerRule.ALL_DONE_SETUP_SUCCESS:      "R W W R W  R R R R  R W R R  R W W R  R R W",
}

_CODES = {
    "R": TriggerDecision.READY,
    "W": TriggerDecision.WAIT,
    "S": TriggerDecision.SKIP,
    "U": TriggerDecision.UPSTREAM_FAILED,
}


def _cases() -> list[pytest.ParameterSet]:
    cases = []
    for rule, row in EXPECTED.items():
        codes = row.split()
        assert len(codes) == len(MIXES), f"{rule}: {len(codes)} codes for {len(MIXES)} mixes"
        for (mix, states), code in zip(MIXES.items(), codes, strict=True):
            cases.append(pytest.param(rule, states, _CODES[code], id=f"{rule}-{mix}"))
    return cases


@pytest.mark.parametrize(("rule", "states", "expected"), _cases())
def test_trigger_rule_table(rule: TriggerRule, states: list[str | None],
                            expected: TriggerDecision) -> None:
    assert evaluate_trigger_rule(rule, UpstreamCounts.from_states(states)) is expected


def test_table_covers_every_rule() -> None:
    assert set(EXPECTED) == set(TriggerRule)


def test_rule_given_as_plain_string() -> None:
    counts = UpstreamCounts.from_states([S, SK])
    assert evaluate_trigger_rule("none_failed_min_one_success", counts) is TriggerDecision.READY


def test_one_success_ready_at_first_success_even_with_failures_pending() -> None:
    counts = UpstreamCounts.from_states([F, S, RUN, NONE])
    assert evaluate_trigger_rule(TriggerRule.ONE_SUCCESS, counts) is TriggerDecision.READY


def test_all_success_propagates_before_all_upstreams_are_done() -> None:
    assert evaluate_trigger_rule(
        TriggerRule.ALL_SUCCESS, UpstreamCounts.from_states([SK, RUN, NONE])
    ) is TriggerDecision.SKIP
    assert evaluate_trigger_rule(
        TriggerRule.ALL_SUCCESS, UpstreamCounts.from_states([SK, F, RUN])
    ) is TriggerDecision.UPSTREAM_FAILED  # a failure wins over a skip


def test_upstream_counts() -> None:
    counts = UpstreamCounts.from_states([S, S, F, SK, UF, RM, RUN, None, RETRY])
    assert counts == UpstreamCounts(total=8, success=2, skipped=1, failed=1,
                                    upstream_failed=1, removed=1, done=5)
    assert not counts.all_done
    assert UpstreamCounts.from_states([]).all_done


def test_decision_final_state() -> None:
    assert TriggerDecision.SKIP.final_state is TI.SKIPPED
    assert TriggerDecision.UPSTREAM_FAILED.final_state is TI.UPSTREAM_FAILED
    assert TriggerDecision.READY.final_state is None
    assert TriggerDecision.WAIT.final_state is None


def test_retry_period_elapsed() -> None:
    now = datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert retry_period_elapsed(None, now)
    assert retry_period_elapsed(now, now)
    assert retry_period_elapsed(now - timedelta(seconds=1), now)
    assert not retry_period_elapsed(now + timedelta(seconds=1), now)


PREVIOUS_DATE = datetime(2024, 1, 1, tzinfo=UTC)


def previous(state: str | None, downstream: list[str | None] | None = None) -> PreviousInstance:
    return PreviousInstance(
        dag_id="d", task_id="t", run_id="r1", logical_date=PREVIOUS_DATE, state=state,
        downstream_states={f"u{i}": s for i, s in enumerate(downstream or [])})


@pytest.mark.parametrize(
    ("state", "wait", "downstream", "expected"),
    [
        (None, False, [], True),  # the previous run has no instance of the task
        (S, False, [], True),
        (SK, False, [], True),
        (F, False, [], False),
        (UF, False, [], False),
        (RUN, False, [], False),
        (NONE, False, [], False),
        (RETRY, False, [], False),
        (RM, False, [], False),
        (S, False, [F], True),  # downstreams only matter with wait_for_downstream
        (S, True, [S, SK], True),
        (S, True, [S, F], False),
        (S, True, [S, RUN], False),
        (S, True, [Q], False),
        (S, True, [None, RM], True),  # missing or removed downstreams are not waited for
        (F, True, [S], False),
    ],
)
def test_past_wait_reason(state: str | None, wait: bool, downstream: list[str | None],
                          expected: bool) -> None:
    why = past_wait_reason(previous(state, downstream), wait_for_downstream=wait)
    assert (why is None) is expected


def test_past_wait_reason_names_the_previous_instance_and_its_state() -> None:
    assert past_wait_reason(None) is None  # no previous run
    assert past_wait_reason(previous(F)) == (
        "depends_on_past: waiting for previous task instance d.t of run r1 (failed) to "
        "succeed or be skipped")
    why = past_wait_reason(previous(S, [S, F, RUN]), wait_for_downstream=True)
    assert why == (
        "depends_on_past (wait_for_downstream): waiting for the downstreams of previous "
        "task instance d.t of run r1 to succeed or be skipped: u1 (failed), u2 (running)")


def test_past_wait_reason_ignores_runs_before_the_task_started() -> None:
    assert past_wait_reason(previous(F),
                            task_start_date=PREVIOUS_DATE + timedelta(days=1)) is None
    assert past_wait_reason(previous(F), task_start_date=PREVIOUS_DATE) is not None
