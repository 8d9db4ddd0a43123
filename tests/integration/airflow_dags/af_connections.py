"""Airflow 2 idiom: connections through ``BaseHook``, ``Connection`` and ``{{ conn }}``.

Under Airflow 2 (with the connections the test sets) every task succeeds but
missing_connection, which is skipped.
"""

import logging

import pendulum
from airflow.decorators import dag, task
from airflow.exceptions import AirflowException, AirflowSkipException
from airflow.hooks.base import BaseHook
from airflow.models.connection import Connection
from airflow.operators.bash import BashOperator

log = logging.getLogger(__name__)


@dag(start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False)
def af_connections():
    @task
    def read_db():
        conn = BaseHook.get_connection("my_db")
        assert conn.conn_type == "postgres", conn.conn_type
        assert (conn.host, conn.port, conn.schema) == ("db.example.com", 5432, "appdb")
        assert conn.extra_dejson["sslmode"] == "require"
        log.info("connecting with password %s", conn.password)
        return conn.host

    @task
    def from_env():
        conn = BaseHook.get_connection("http_api")
        assert conn.host == "api.example.com", conn.host
        assert conn.extra_dejson == {"timeout": "30"}, conn.extra
        return conn.get_uri()

    @task
    def round_trip():
        conn = Connection(conn_id="x", conn_type="http", host="h.example.com", login="u",
                          password="p w/?", port=8080, extra={"verify": "false"})
        back = Connection(uri=conn.get_uri())
        assert (back.password, back.port, back.extra_dejson) == ("p w/?", 8080,
                                                                  {"verify": "false"})

    @task
    def missing_connection():
        try:
            BaseHook.get_connection("not_defined")
        except AirflowException as exc:
            raise AirflowSkipException(f"no connection: {exc}") from None

    templated = BashOperator(
        task_id="templated",
        bash_command='test "{{ conn.my_db.host }}" = db.example.com '
        '&& test "{{ conn.my_db.login }}" = app_user',
    )
    read_db() >> templated
    from_env()
    round_trip()
    missing_connection()


af_connections()
