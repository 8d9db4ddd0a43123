"""ShortCircuitOperator: a falsy result skips everything downstream; a truthy one lets it run.
With ignore_downstream_trigger_rules=False only the direct downstream is skipped and later
tasks follow their own trigger rules."""

import pendulum

from squall import DAG, EmptyOperator, ShortCircuitOperator, TriggerRule

with DAG(
    dag_id="example_short_circuit",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    tags=["example"],
) as dag:
    go = ShortCircuitOperator(task_id="go", python_callable=lambda: True)
    stop = ShortCircuitOperator(task_id="stop", python_callable=lambda: 0)
    after_go = EmptyOperator(task_id="after_go")
    after_stop = EmptyOperator(task_id="after_stop")
    after_stop_2 = EmptyOperator(task_id="after_stop_2")

    soft_stop = ShortCircuitOperator(task_id="soft_stop", python_callable=lambda: False,
                                     ignore_downstream_trigger_rules=False)
    soft_next = EmptyOperator(task_id="soft_next")
    soft_all_done = EmptyOperator(task_id="soft_all_done", trigger_rule=TriggerRule.ALL_DONE)

    go >> after_go
    stop >> after_stop >> after_stop_2
    soft_stop >> soft_next >> soft_all_done
