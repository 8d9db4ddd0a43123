"""BashOperator: templated commands, environment, working directory, skip by exit code 99,
and the last line of output pushed to XCom."""

import pendulum

from squall import DAG, BashOperator, EmptyOperator, TriggerRule

with DAG(
    dag_id="example_bash_operator",
    schedule="0 0 * * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example"],
    default_args={"owner": "examples", "retries": 0},
) as dag:
    hello = BashOperator(
        task_id="hello",
        bash_command='echo "run {{ run_id }} for {{ ds }}"; echo "$GREETING"',
        env={"GREETING": "hello from {{ dag.dag_id }}"},
    )
    in_tmp = BashOperator(task_id="in_tmp", bash_command="pwd", cwd="/tmp")
    skipped = BashOperator(task_id="skipped", bash_command="echo skipping; exit 99")
    after_skip = EmptyOperator(task_id="after_skip")
    done = EmptyOperator(task_id="done", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)

    hello >> [in_tmp, skipped]
    skipped >> after_skip
    [in_tmp, after_skip] >> done
