"""Branching: BranchPythonOperator and ``@task.branch`` follow one path and skip the others;
a join with none_failed_min_one_success runs after whichever path ran."""

import pendulum

from squall import DAG, BranchPythonOperator, EmptyOperator, TriggerRule, task

with DAG(
    dag_id="example_branch",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    tags=["example"],
) as dag:
    choose = BranchPythonOperator(task_id="choose", python_callable=lambda: "path_a")
    path_a = EmptyOperator(task_id="path_a")
    path_b = EmptyOperator(task_id="path_b")
    after_b = EmptyOperator(task_id="after_b")
    join = EmptyOperator(task_id="join", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)

    @task.branch
    def pick_many():
        return ["left", "middle"]

    left = EmptyOperator(task_id="left")
    middle = EmptyOperator(task_id="middle")
    right = EmptyOperator(task_id="right")
    all_ok = EmptyOperator(task_id="all_ok")  # all_success: skipped because `right` was

    choose >> [path_a, path_b]
    path_b >> after_b
    [path_a, after_b] >> join
    join >> pick_many() >> [left, middle, right]
    [left, middle, right] >> all_ok
