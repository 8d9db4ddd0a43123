"""Every trigger rule against the same mixed upstream outcomes: one success, one failure
(no retries) and one skip. Each rule task is a leaf, so the run ends FAILED (a failed or
upstream_failed leaf fails the run) while each task shows what its rule decided.

``skip`` runs after ``fail`` (trigger rule all_done) so the outcome does not depend on which
finishes first: under all_success a task is skipped as soon as one upstream is skipped,
before a later upstream failure could make it upstream_failed."""

import pendulum

from squall import DAG, BashOperator, EmptyOperator, TriggerRule

with DAG(
    dag_id="example_trigger_rules",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    tags=["example"],
) as dag:
    ok = EmptyOperator(task_id="ok")
    fail = BashOperator(task_id="fail", bash_command="exit 1", retries=0)
    skip = BashOperator(task_id="skip", bash_command="exit 99",
                        trigger_rule=TriggerRule.ALL_DONE)
    fail >> skip
    upstreams = [ok, fail, skip]

    for rule in TriggerRule:
        upstreams >> EmptyOperator(task_id=f"rule_{rule.value}", trigger_rule=rule)

    # and against all-skipped / all-succeeded upstreams
    skip_a = BashOperator(task_id="skip_a", bash_command="exit 99")
    skip_b = BashOperator(task_id="skip_b", bash_command="exit 99")
    [skip_a, skip_b] >> EmptyOperator(task_id="all_skipped_yes",
                                      trigger_rule=TriggerRule.ALL_SKIPPED)
    [skip_a, skip_b] >> EmptyOperator(task_id="none_failed_min_one_success_no",
                                      trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    ok_a = EmptyOperator(task_id="ok_a")
    [ok, ok_a] >> EmptyOperator(task_id="all_failed_no", trigger_rule=TriggerRule.ALL_FAILED)
    [ok, ok_a] >> EmptyOperator(task_id="one_failed_no", trigger_rule=TriggerRule.ONE_FAILED)
