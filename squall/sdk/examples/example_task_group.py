"""TaskGroups (prefixed task ids, a group as one end of ``>>``), ``chain`` and
``cross_downstream``, with default_args inherited from the DAG and the group."""

import pendulum

from squall import DAG, EmptyOperator, TaskGroup, chain, cross_downstream

with DAG(
    dag_id="example_task_group",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="Europe/Amsterdam"),
    catchup=False,
    default_args={"owner": "examples", "queue": "default"},
    tags=["example"],
) as dag:
    start = EmptyOperator(task_id="start")
    with TaskGroup("extract", default_args={"priority_weight": 5}) as extract:
        a = EmptyOperator(task_id="a")
        b = EmptyOperator(task_id="b")
        with TaskGroup("inner"):
            c = EmptyOperator(task_id="c")
        a >> c
    with TaskGroup("load") as load:
        x = EmptyOperator(task_id="x")
        y = EmptyOperator(task_id="y")
    end = EmptyOperator(task_id="end")

    start >> extract >> load
    p1, p2, q1, q2 = (EmptyOperator(task_id=t) for t in ("p1", "p2", "q1", "q2"))
    chain(end, [p1, p2], [q1, q2])
    load >> end
    cross_downstream([q1, q2], [EmptyOperator(task_id="z1"), EmptyOperator(task_id="z2")])
