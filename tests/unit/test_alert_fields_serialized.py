"""What the scheduler and the DAG processor know of e-mail and SLAs without the DAG file:
``email``, ``email_on_failure``, ``email_on_retry``, ``sla`` and ``sla_miss_callback``
survive serialization; a DAG serialized before they were carried reads as Airflow's
defaults; the SLA view of a serialized DAG."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pendulum

from squall.common.state import TaskInstanceState
from squall.dag_processing.serialization import deserialize_dag, serialize_dag
from squall.execution.callbacks import CallbackKind, task_wants_request
from squall.execution.email_alerts import wants_email
from squall.scheduler.sla import sla_dag_from_serialized
from squall.sdk.dag import DAG
from squall.sdk.operators.empty import EmptyOperator

TI = TaskInstanceState


def _missed(*args: Any) -> None:
    pass


def _dag() -> DAG:
    with DAG("alerts", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
             sla_miss_callback=_missed,
             default_args={"email": ["a@example.com", "b@example.com"]}) as dag:
        EmptyOperator(task_id="loud", sla=timedelta(minutes=30))
        EmptyOperator(task_id="retry_only", email_on_failure=False)
        EmptyOperator(task_id="silent", email=None, sla=timedelta(hours=2))
    return dag


def test_alert_fields_round_trip() -> None:
    data = json.loads(json.dumps(serialize_dag(_dag())))
    rebuilt = deserialize_dag(data)
    loud, retry_only, silent = (rebuilt.get_task(t) for t in ("loud", "retry_only", "silent"))
    assert loud.email == ["a@example.com", "b@example.com"]
    assert loud.sla == timedelta(minutes=30) and silent.sla == timedelta(hours=2)
    assert retry_only.sla is None
    assert getattr(rebuilt, "has_sla_miss_callback") is True  # noqa: B009
    assert wants_email(loud, TI.FAILED) and wants_email(loud, TI.UP_FOR_RETRY)
    assert not wants_email(retry_only, TI.FAILED) and wants_email(retry_only, TI.UP_FOR_RETRY)
    assert not wants_email(silent, TI.FAILED) and not wants_email(loud, TI.SUCCESS)
    # the scheduler asks the DAG processor for a try ending so, callback or not
    assert task_wants_request(loud, CallbackKind.TASK_FAILURE)
    assert not task_wants_request(retry_only, CallbackKind.TASK_FAILURE)
    assert not task_wants_request(silent, CallbackKind.TASK_RETRY)
    assert serialize_dag(rebuilt) == data


def test_a_dag_serialized_before_has_airflows_defaults() -> None:
    data = json.loads(json.dumps(serialize_dag(_dag())))
    for task in data["dag"]["tasks"]:
        for key in ("email_on_failure", "email_on_retry", "sla"):
            task.pop(key)
    data["dag"].pop("has_sla_miss_callback")
    rebuilt = deserialize_dag(data)
    assert rebuilt.get_task("retry_only").email_on_failure is True
    assert rebuilt.get_task("loud").sla is None
    assert getattr(rebuilt, "has_sla_miss_callback") is False  # noqa: B009


def test_sla_view_of_a_serialized_dag() -> None:
    data = serialize_dag(_dag())
    view = sla_dag_from_serialized(data, "/dags/alerts.py")
    assert view is not None
    assert dict(view.slas) == {"loud": timedelta(minutes=30), "silent": timedelta(hours=2)}
    assert dict(view.emails) == {"loud": ("a@example.com", "b@example.com"), "silent": ()}
    assert view.has_callback and view.notifies and view.fileloc == "/dags/alerts.py"
    with DAG("plain", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")) as p:
        EmptyOperator(task_id="t")
    assert sla_dag_from_serialized(serialize_dag(p), "/dags/p.py") is None
