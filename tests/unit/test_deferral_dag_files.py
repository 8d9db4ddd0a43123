"""The Airflow 2.10 DAG files of ``tests/integration/airflow210_deferral_dags`` that need no
other DAG, driven through the whole deferral contract in this process: each task executes;
when it defers, its trigger goes through the trigger table's encoding, is rebuilt as a
triggerer rebuilds it and run under asyncio; the try then resumes with the event (and the
``defer()`` kwargs), or in ``__fail__`` when the deferral's timeout passes first, as
Airflow's scheduler (``check_trigger_timeouts``) and workers (``resume_execution``) do. The
cluster run of the same files is ``tests/integration/test_airflow210_deferral_dags.py``.
"""

from __future__ import annotations

import asyncio
import importlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest

from squall.common.errors import SquallError, TaskDeferred, TaskSkipped
from squall.common.state import TRIGGER_FAIL_METHOD, TRIGGER_TIMEOUT_ERROR
from squall.compat import airflow as compat
from squall.dag_processing.loading import load_file
from squall.sdk.dag import DAG
from squall.sdk.operators.base import BaseOperator
from squall.sdk.triggers import BaseTaskEndEvent, BaseTrigger, TriggerEvent, serde
from tests.integration.test_airflow210_deferral_dags import FILE_STATES, TIME_STATES, TIME_XCOMS
from tests.unit.fake_ti import FakeTI, make_context

DAGS = Path(__file__).resolve().parents[1] / "integration" / "airflow210_deferral_dags"
#: how long a trigger may take here before its deferral counts as timed out (a deferral
#: with a shorter timeout times out sooner)
TRIGGER_WAIT = 5.0


@pytest.fixture(autouse=True)
def _compat() -> Iterator[None]:
    yield
    compat.uninstall()


def _dag(name: str, dag_id: str) -> DAG:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_file(DAGS / f"{name}.py", DAGS, airflow_compat=True)
    assert loaded.error is None, loaded.error
    return next(d for d in loaded.dags if d.dag_id == dag_id)


def _rebuilt(trigger: BaseTrigger) -> BaseTrigger:
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    rebuilt: BaseTrigger = cls(**serde.loads(serde.dumps(kwargs)))
    return rebuilt


async def _first(trigger: BaseTrigger, timeout: float) -> TriggerEvent:
    events = trigger.run()
    try:
        return await asyncio.wait_for(anext(events), timeout)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def drive(task: BaseOperator, ti: FakeTI, **context_kwargs: Any) -> str:
    """Run ``task``'s try through deferral and resumption; its final state."""
    context = make_context(task, ti, **context_kwargs)
    task.render_template_fields(context)
    try:
        try:
            result = task.execute(context)
        except TaskDeferred as deferred:
            limit = TRIGGER_WAIT
            if deferred.timeout is not None:
                limit = min(limit, deferred.timeout.total_seconds())
            try:
                event = asyncio.run(_first(_rebuilt(deferred.trigger), limit))
            except TimeoutError:
                method, kwargs = TRIGGER_FAIL_METHOD, {"error": TRIGGER_TIMEOUT_ERROR}
            else:
                if isinstance(event, BaseTaskEndEvent):
                    return str(event.task_instance_state)
                payload = serde.from_json(serde.to_json(event.payload))
                method, kwargs = deferred.method_name, {**(deferred.kwargs or {}),
                                                        "event": payload}
            result = task.resume_execution(method, kwargs, context)
    except TaskSkipped:
        return "skipped"
    except SquallError:
        return "failed"
    if result is not None:
        ti.xcom_push("return_value", result)
    return "success"


def test_the_time_dag_file() -> None:
    dag = _dag("af210_defer_time", "af210_defer_time")
    states, xcoms = {}, {}
    for task in dag.tasks:
        # a manual run 19.5 s before the task starts: its 20 s delays are 0.5 s away (in a
        # cluster the tasks start together; here one after the other)
        logical = pendulum.now("UTC").subtract(seconds=19.5)
        ti = FakeTI(task)
        states[task.task_id] = drive(task, ti, logical_date=logical,
                                     data_interval_start=logical, data_interval_end=logical)
        xcoms[task.task_id] = ti.xcoms.get((task.task_id, "return_value"))
    assert states == TIME_STATES
    assert xcoms == TIME_XCOMS


def test_the_file_dag_file(tmp_path: Path) -> None:
    dag = _dag("af210_defer_file", "af210_defer_file")
    (tmp_path / "ready.txt").write_text("x")
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "data.csv").write_text("x")
    dag_run = SimpleNamespace(conf={"folder": str(tmp_path)}, run_id="manual__x",
                              external_trigger=True)
    states = {task.task_id: drive(task, FakeTI(task), dag_run=dag_run) for task in dag.tasks}
    assert states == FILE_STATES
