"""Branching in Airflow 2.10 idioms: @task.branch, @task.short_circuit (both settings of
ignore_downstream_trigger_rules), BranchDayOfWeekOperator, BranchDateTimeOperator, edge
labels. Run for 2024-01-03T12:00:00+00:00 (a Wednesday, noon)."""

import datetime

import pendulum
from airflow import DAG
from airflow.decorators import task
from airflow.operators.datetime import BranchDateTimeOperator
from airflow.operators.empty import EmptyOperator
from airflow.operators.weekday import BranchDayOfWeekOperator
from airflow.utils.edgemodifier import Label
from airflow.utils.task_group import TaskGroup
from airflow.utils.weekday import WeekDay

with DAG("af210_branch", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None,
         catchup=False):

    @task.branch
    def pick(ds=None):
        return "left" if ds == "2024-01-03" else "right"

    left = EmptyOperator(task_id="left")
    right = EmptyOperator(task_id="right")
    join = EmptyOperator(task_id="join", trigger_rule="none_failed_min_one_success")
    chosen = pick()
    chosen >> Label("on the 3rd") >> left >> join
    chosen >> Label("otherwise") >> right >> join

    @task.branch(task_id="to_group")
    def to_group():
        return "grp"

    with TaskGroup("grp") as grp:
        EmptyOperator(task_id="inner") >> EmptyOperator(task_id="inner2")
    not_grp = EmptyOperator(task_id="not_grp")
    to_group() >> [grp, not_grp]

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def gate_direct():
        return False

    sc_direct = EmptyOperator(task_id="sc_direct")
    sc_after = EmptyOperator(task_id="sc_after", trigger_rule="all_done")
    gate_direct() >> sc_direct >> sc_after

    @task.short_circuit
    def gate_all():
        return 0

    sc_all_1 = EmptyOperator(task_id="sc_all_1")
    sc_all_2 = EmptyOperator(task_id="sc_all_2", trigger_rule="all_done")
    gate_all() >> sc_all_1 >> sc_all_2

    @task.short_circuit
    def gate_open():
        return "yes"

    gate_open() >> EmptyOperator(task_id="sc_open")

    weekday = BranchDayOfWeekOperator(
        task_id="weekday", week_day={"Wednesday", WeekDay.SATURDAY},
        use_task_logical_date=True, follow_task_ids_if_true="midweek",
        follow_task_ids_if_false="other_day")
    weekday >> [EmptyOperator(task_id="midweek"), EmptyOperator(task_id="other_day")]

    weekend = BranchDayOfWeekOperator(
        task_id="weekend", week_day=WeekDay.SUNDAY, use_task_logical_date=True,
        follow_task_ids_if_true="sunday", follow_task_ids_if_false=["not_sunday"])
    weekend >> [EmptyOperator(task_id="sunday"), EmptyOperator(task_id="not_sunday")]

    hours = BranchDateTimeOperator(
        task_id="hours", target_lower=datetime.time(9), target_upper=datetime.time(17),
        use_task_logical_date=True, follow_task_ids_if_true="office",
        follow_task_ids_if_false="night")
    hours >> [EmptyOperator(task_id="office"), EmptyOperator(task_id="night")]

    window = BranchDateTimeOperator(
        task_id="window", target_lower=datetime.datetime(2024, 1, 1),
        target_upper=datetime.datetime(2024, 1, 2), use_task_logical_date=True,
        follow_task_ids_if_true="in_window", follow_task_ids_if_false="late")
    window >> [EmptyOperator(task_id="in_window"), EmptyOperator(task_id="late")]
