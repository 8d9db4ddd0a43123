"""Airflow 2.7+ idiom: setup and teardown tasks (as_setup / as_teardown, @setup /
@teardown, the context-manager form)."""
import pendulum
from airflow import DAG
from airflow.decorators import setup, task, teardown
from airflow.operators.bash import BashOperator
from airflow.operators.empty import EmptyOperator
from airflow.utils.trigger_rule import TriggerRule

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def _bash(task_id, code=0):
    return BashOperator(task_id=task_id, bash_command=f"echo {task_id}; exit {code}")


# the work fails: the teardown still runs, the run fails because of the work
with DAG("af210_st_work_fails", schedule=None, start_date=START, tags=["airflow210"]):
    create = _bash("create_cluster")
    work = _bash("work", 1)
    delete = _bash("delete_cluster")
    create >> work >> delete.as_teardown(setups=create)

# everything succeeds but the teardown: a teardown's failure does not fail the run
with DAG("af210_st_teardown_fails", schedule=None, start_date=START, tags=["airflow210"]):
    create = _bash("create_cluster")
    work = _bash("work")
    delete = _bash("delete_cluster", 1)
    create >> work >> delete.as_teardown(setups=create)

# ... unless the teardown has on_failure_fail_dagrun
with DAG("af210_st_fail_dagrun", schedule=None, start_date=START, tags=["airflow210"]):
    create = _bash("create_cluster")
    work = _bash("work")
    delete = _bash("delete_cluster", 1)
    create >> work >> delete.as_teardown(setups=create, on_failure_fail_dagrun=True)

# the setup fails: its work is upstream_failed, even a work task that would run whatever
# its direct upstreams did (all_done) but that is in the setup's scope, and so is its
# teardown (no setup succeeded)
with DAG("af210_st_setup_fails", schedule=None, start_date=START, tags=["airflow210"]):
    create = _bash("create_cluster", 1)
    work = _bash("work")
    report = EmptyOperator(task_id="report", trigger_rule=TriggerRule.ALL_DONE)
    delete = _bash("delete_cluster")
    create >> work >> report >> delete.as_teardown(setups=create)

# two setups, one fails: the teardown runs since one of its setups succeeded
with DAG("af210_st_two_setups", schedule=None, start_date=START, tags=["airflow210"]):
    ok = _bash("create_bucket")
    broken = _bash("create_cluster", 1)
    work = _bash("work")
    delete = _bash("delete_all")
    [ok, broken] >> work >> delete.as_teardown(setups=[ok, broken])


# the decorators and the context-manager forms
@setup
def make_table():
    return "tmp_table"


@teardown
def drop_table(name):
    print(f"dropping {name}")


@task
def load(name):
    return f"loaded {name}"


@task
def check(result):
    if not result.startswith("loaded"):
        raise ValueError(result)


with DAG("af210_st_decorators", schedule=None, start_date=START, tags=["airflow210"]):
    table = make_table()
    with drop_table(table):
        check(load(table))
    stop = _bash("stop_server")
    with stop.as_teardown(setups=_bash("start_server")):
        _bash("query_a") >> _bash("query_b")


# a short circuit before the setup: everything below is skipped, but the teardown, left to
# its trigger rule, is skipped because its only setup was
with DAG("af210_st_short_circuit", schedule=None, start_date=START, tags=["airflow210"]):
    from airflow.operators.python import ShortCircuitOperator

    gate = ShortCircuitOperator(task_id="gate", python_callable=lambda: False)
    create = _bash("create_cluster")
    work = _bash("work")
    delete = _bash("delete_cluster")
    gate >> create >> work >> delete.as_teardown(setups=create)
    # a short circuit inside a setup's scope: the work below it is skipped, the teardown
    # runs (its setup succeeded)
    create2 = _bash("create_bucket")
    check = ShortCircuitOperator(task_id="check", python_callable=lambda: False)
    load = _bash("load")
    delete2 = _bash("delete_bucket")
    create2 >> check >> load >> delete2.as_teardown(setups=create2)
