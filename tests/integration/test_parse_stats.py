"""The isolated parse reports each file's stats (time, DAGs, tasks) and a fingerprint of its
answer; an answer the caller already knows is not decoded again."""

from pathlib import Path

from squall.dag_processing.dagbag import parse_files_isolated

GOOD = """\
from squall.sdk.dag import DAG
from squall.sdk.operators.python import PythonOperator

with DAG("x", schedule=None) as dag:
    PythonOperator(task_id="a", python_callable=print) >> PythonOperator(
        task_id="b", python_callable=print)
"""


def test_each_file_reports_its_stats_and_an_unchanged_answer_is_not_decoded(
        tmp_path: Path) -> None:
    good = tmp_path / "d.py"
    good.write_text(GOOD)
    bad = tmp_path / "bad.py"
    bad.write_text("from squall.sdk.dag import DAG\nraise ValueError('boom')\n")

    first = parse_files_isolated([good, bad], tmp_path, 30)
    stat = first.file_stats[str(good)]
    assert (stat.dag_ids, stat.task_count, stat.error) == (("x",), 2, False)
    assert stat.duration > 0
    assert first.file_stats[str(bad)].error and str(bad) in first.import_errors

    known = {path: s.fingerprint for path, s in first.file_stats.items()}
    again = parse_files_isolated([good, bad], tmp_path, 30, previous=known)
    assert sorted(again.unchanged) == sorted([str(good), str(bad)])
    assert not again.serialized and not again.files_parsed and not again.import_errors
    assert again.file_stats[str(bad)].error

    good.write_text(GOOD + "# a comment changes nothing parsed\n")
    commented = parse_files_isolated([good], tmp_path, 30, previous=known)
    assert commented.unchanged == [str(good)]

    good.write_text(GOOD.replace('"x"', '"y"'))
    renamed = parse_files_isolated([good], tmp_path, 30, previous=known)
    assert renamed.unchanged == [] and list(renamed.serialized) == ["y"]
