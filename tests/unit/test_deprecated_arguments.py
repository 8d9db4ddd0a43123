"""Arguments Airflow 2.10 still accepts with a deprecation warning (issue 22 item 3): each is
accepted with a DeprecatedArgumentWarning naming it and its replacement, and has Airflow's
effect; an argument that is not accepted at all is still an error; and a DAG file that uses
them loads (its warnings recorded, never an import error)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest

from squall.common.errors import DagDefinitionError
from squall.compat import airflow as compat
from squall.dag_processing.loading import load_file
from squall.sdk.dag import DAG
from squall.sdk.deprecation import DeprecatedArgumentWarning
from squall.sdk.operators.base import BaseOperator
from squall.sdk.operators.bash import BashOperator
from squall.sdk.operators.empty import EmptyOperator
from squall.sdk.operators.python import PythonOperator, ShortCircuitOperator
from squall.sdk.operators.trigger_dagrun import TriggerDagRunOperator
from squall.sdk.timetables import timetable_from_schedule
from squall.sdk.trigger_rule import TriggerRule

START = pendulum.datetime(2024, 1, 1, tz="UTC")
AF2_DEPRECATED = Path(__file__).parents[1] / "integration" / "airflow2_dags" / "af2_deprecated.py"


def _noop() -> None:
    return None


def _dag(**kwargs: Any) -> DAG:
    return DAG("d", start_date=START, **kwargs)


def _op(factory: Callable[..., BaseOperator], **kwargs: Any) -> Callable[[], Any]:
    def make() -> BaseOperator:
        with DAG("d", start_date=START, schedule=None):
            return factory(task_id="t", **kwargs)
    return make


# (what is built, the warning's words, what the result must look like)
CASES: list[tuple[str, Callable[[], Any], str, Callable[[Any], object]]] = [
    ("task_concurrency", _op(EmptyOperator, task_concurrency=3),
     "EmptyOperator('t'): task_concurrency is deprecated; use max_active_tis_per_dag",
     lambda t: t.max_active_tis_per_dag == 3),
    ("task_concurrency with max_active_tis_per_dag",
     _op(EmptyOperator, task_concurrency=3, max_active_tis_per_dag=5),
     "task_concurrency is deprecated", lambda t: t.max_active_tis_per_dag == 5),
    ("trigger_rule dummy", _op(EmptyOperator, trigger_rule="dummy"),
     "trigger_rule 'dummy' is deprecated; use 'always'",
     lambda t: t.trigger_rule is TriggerRule.ALWAYS),
    ("trigger_rule none_failed_or_skipped", _op(EmptyOperator,
                                                trigger_rule="none_failed_or_skipped"),
     "'none_failed_or_skipped' is deprecated; use 'none_failed_min_one_success'",
     lambda t: t.trigger_rule is TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS),
    ("provide_context", _op(PythonOperator, python_callable=_noop, provide_context=True),
     "PythonOperator('t'): provide_context is deprecated and has no effect",
     lambda t: t.python_callable is _noop),
    ("provide_context on a subclass", _op(ShortCircuitOperator, python_callable=_noop,
                                          provide_context=True),
     "ShortCircuitOperator('t'): provide_context is deprecated", lambda t: True),
    ("skip_exit_code", _op(BashOperator, bash_command="exit 3", skip_exit_code=3),
     "BashOperator('t'): skip_exit_code is deprecated; use skip_on_exit_code",
     lambda t: tuple(t.skip_on_exit_code) == (3,)),
    ("execution_date", _op(TriggerDagRunOperator, trigger_dag_id="x",
                           execution_date="2024-02-01", logical_date="2024-03-01"),
     "TriggerDagRunOperator('t'): execution_date is deprecated; use logical_date",
     lambda t: t.logical_date == "2024-02-01"),  # it wins, as in Airflow
    ("schedule_interval", lambda: _dag(schedule_interval="@hourly"),
     "DAG d: schedule_interval is deprecated; use schedule",
     lambda d: d.schedule == "@hourly"),
    ("schedule_interval wins over schedule=None",
     lambda: _dag(schedule=None, schedule_interval="@hourly"),
     "schedule_interval is deprecated", lambda d: d.schedule == "@hourly"),
    ("timetable", lambda: _dag(timetable=timetable_from_schedule("@daily", START.tz)),
     "DAG d: timetable is deprecated; use schedule",
     lambda d: d.timetable.summary == timetable_from_schedule("@daily", START.tz).summary),
    ("concurrency", lambda: _dag(concurrency=7),
     "DAG d: concurrency is deprecated; use max_active_tasks",
     lambda d: d.max_active_tasks == 7),
    ("concurrency wins over max_active_tasks", lambda: _dag(concurrency=3, max_active_tasks=5),
     "concurrency is deprecated", lambda d: d.max_active_tasks == 3),
    ("full_filepath", lambda: _dag(full_filepath="/elsewhere.py"),
     "DAG d: full_filepath is deprecated and has no effect",
     lambda d: d.fileloc == __file__),
]


@pytest.mark.parametrize(("make", "words", "check"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_deprecated_argument_is_accepted_with_a_warning(
        make: Callable[[], Any], words: str, check: Callable[[Any], object]) -> None:
    with pytest.warns(DeprecatedArgumentWarning) as caught:
        built = make()
    assert any(words in str(w.message) for w in caught), [str(w.message) for w in caught]
    # the warning points at the caller's line, not at the SDK's
    assert {w.filename for w in caught} == {__file__}
    assert check(built)


def test_dag_decorator_passes_deprecated_arguments_on() -> None:
    from squall.sdk.dag import dag

    @dag(start_date=START, schedule=None, concurrency=2)
    def flow() -> None:
        EmptyOperator(task_id="t")

    with pytest.warns(DeprecatedArgumentWarning, match="concurrency"):
        built = flow()
    assert built.max_active_tasks == 2


def test_unknown_arguments_are_still_errors() -> None:
    with DAG("d", start_date=START, schedule=None), pytest.raises(
            DagDefinitionError, match=r"PythonOperator\('t'\): unexpected argument\(s\) "
                                      r"provide_contxt"):
        PythonOperator(task_id="t", python_callable=_noop, provide_contxt=True)
    with pytest.raises(TypeError, match="concurency"):
        DAG("d", start_date=START, concurency=2)  # type: ignore[call-arg]
    with pytest.raises(DagDefinitionError, match="only one of schedule, schedule_interval"):
        DAG("d", start_date=START, schedule="@daily", schedule_interval="@hourly")


@pytest.fixture
def _no_airflow_modules() -> Iterator[None]:
    compat.uninstall()
    yield
    compat.uninstall()


def test_a_dag_file_with_deprecated_arguments_loads(
        tmp_path: Path, _no_airflow_modules: None) -> None:
    """Under pytest's filterwarnings=error too: the loader records the warnings instead of
    letting them fail the import."""
    path = tmp_path / AF2_DEPRECATED.name
    shutil.copy(AF2_DEPRECATED, path)
    loaded = load_file(path, tmp_path, airflow_compat=True)
    assert loaded.error is None
    (dag,) = loaded.dags
    assert (dag.schedule, dag.max_active_tasks) == (None, 4)
    assert {t.task_id: (t.max_active_tis_per_dag, t.trigger_rule.value)
            for t in dag.tasks} == {
        "greet": (2, "all_success"), "skipped": (2, "all_success"), "ok": (1, "all_success"),
        "joined": (2, "none_failed_min_one_success"), "after_skip": (2, "always")}
    text = "\n".join(loaded.warnings)
    for words in ("schedule_interval is deprecated", "concurrency is deprecated",
                  "full_filepath is deprecated", "provide_context is deprecated",
                  "skip_exit_code is deprecated", "'dummy' is deprecated",
                  "'none_failed_or_skipped' is deprecated", "task_concurrency is deprecated"):
        assert words in text
    assert all(w.startswith(f"{path}:") for w in loaded.warnings)


def test_a_dag_file_may_silence_them_as_in_airflow(
        tmp_path: Path, _no_airflow_modules: None) -> None:
    path = tmp_path / "quiet.py"
    path.write_text(
        "import warnings\n"
        "from airflow import DAG\n"
        "from airflow.exceptions import RemovedInAirflow3Warning\n"
        "warnings.filterwarnings('ignore', category=RemovedInAirflow3Warning)\n"
        "DAG('quiet', schedule_interval=None)\n")
    loaded = load_file(path, tmp_path, airflow_compat=True)
    assert (loaded.error, [d.dag_id for d in loaded.dags], loaded.warnings) == (
        None, ["quiet"], [])
