"""on_skipped_callback (Airflow 2.9+), @task.run_if / @task.skip_if (Airflow 2.10),
get_current_context, airflow.macros, SmoothOperator, template_undefined,
jinja_environment_kwargs, the task arguments Squall keeps (doc_*, logger_name,
resources, pre_execute / post_execute)."""

import jinja2
import pendulum
from airflow import DAG, macros
from airflow.decorators import task
from airflow.exceptions import AirflowSkipException
from airflow.operators.bash import BashOperator
from airflow.operators.python import PythonOperator, get_current_context
from airflow.operators.smooth import SmoothOperator


def _note_skip(context):
    context["ti"].xcom_push(key="skipped_callback", value=context["task"].task_id)


def _skip():
    raise AirflowSkipException("nothing to do")


def _pre(context):
    context["ti"].xcom_push(key="pre", value="pre ran")


with DAG("af210_skips", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         template_undefined=jinja2.Undefined,
         jinja_environment_kwargs={"trim_blocks": True}, default_view="graph",
         orientation="TB", access_control={"Viewer": {"can_read"}}):
    skipper = PythonOperator(task_id="skipper", python_callable=_skip,
                             on_skipped_callback=_note_skip)
    after_skip = BashOperator(task_id="after_skip", bash_command="echo never")
    skipper >> after_skip

    @task.run_if(lambda context: context["dag_run"].conf.get("go", False),
                 skip_message="no go")
    @task
    def only_if_go():
        return "went"

    @task.skip_if(lambda context: context["logical_date"].year == 2024)
    @task
    def not_in_2024():
        return "ran"

    @task.run_if(lambda context: True)
    @task
    def always():
        context = get_current_context()
        return f"{context['ds']} {macros.ds_add(context['ds'], 1)}"

    only_if_go()
    not_in_2024()
    always()

    # an undefined name renders empty with jinja2.Undefined (StrictUndefined would fail)
    BashOperator(task_id="lenient", bash_command="echo '[{{ no_such_name }}]'",
                 pre_execute=_pre, doc_json='{"a": 1}', doc_yaml="a: 1", doc_rst="*a*",
                 doc="plain", logger_name="lenient_logger",
                 resources={"cpus": 1}, ignore_first_depends_on_past=True,
                 wait_for_past_depends_before_skipping=False)
    SmoothOperator(task_id="smooth")
