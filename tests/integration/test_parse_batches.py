"""The isolated parse runs several files per child, niced: a file that hangs, exits or is
killed costs only its own answer, each file gets its own time limit, one file's changes to
the process are undone before the next, and the settings reach the children."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from squall.common.settings import Settings
from squall.dag_processing.dagbag import DagBag, parse_files_isolated

pytestmark = pytest.mark.integration

#: a DAG file that reports the process parsing it (pid, niceness, what it sees) into
#: ``{reports}/{name}.json`` and defines one DAG ``{name}``
PROBE = '''\
import json, os, sys
from squall.sdk.dag import DAG, DagContext
from squall.sdk.operators.empty import EmptyOperator

with open({report!r}, "w") as handle:
    json.dump({{"pid": os.getpid(), "nice": os.nice(0), "env": os.environ.get("SQUALL_LEAK"),
               "path": "/squall-leaked-path" in sys.path, "cwd": os.getcwd(),
               "stack": len(DagContext._stack)}}, handle)

with DAG({name!r}, schedule=None) as dag:
    EmptyOperator(task_id="t")
'''

BAD: dict[str, str] = {
    "hangs": "import time\nfrom squall.sdk.dag import DAG\ntime.sleep(120)\n",
    "exits": "import os\nfrom squall.sdk.dag import DAG\nos._exit(3)\n",
    "killed": "import os, signal\nfrom squall.sdk.dag import DAG\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n",
    "leaks": '''\
import os, sys
from squall.sdk.dag import DAG, DagContext
os.environ["SQUALL_LEAK"] = "1"
sys.path.insert(0, "/squall-leaked-path")
os.chdir("/")
DagContext.push(DAG("left_open", schedule=None))
''',
}


def probe(folder: Path, name: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(PROBE.format(report=str(folder / "reports" / f"{name}.json"), name=name))
    return path


def bad(folder: Path, kind: str) -> Path:
    path = folder / f"{kind}.py"
    report = folder / "reports" / f"{kind}.json"
    path.write_text(f"import json, os\nwith open({str(report)!r}, 'w') as handle:\n"
                    "    json.dump({'pid': os.getpid()}, handle)\n" + BAD[kind])
    return path


def reports(folder: Path) -> dict[str, dict[str, object]]:
    return {p.stem: json.loads(p.read_text()) for p in (folder / "reports").glob("*.json")}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "dags" / "reports").mkdir(parents=True)
    return tmp_path / "dags"


def test_a_bad_file_costs_only_its_own_answer(folder: Path) -> None:
    paths = [probe(folder, "good_0"), bad(folder, "hangs"), probe(folder, "good_1"),
             bad(folder, "exits"), probe(folder, "good_2"), bad(folder, "killed"),
             probe(folder, "good_3")]

    result = parse_files_isolated(paths, folder, 5, parallelism=1, files_per_child=len(paths))

    assert sorted(result.serialized) == ["good_0", "good_1", "good_2", "good_3"]
    assert sorted(result.import_errors) == sorted(str(folder / f"{k}.py")
                                                  for k in ("hangs", "exits", "killed"))
    hangs = result.import_errors[str(folder / "hangs.py")]
    assert "took longer than 5 s" in hangs and "dagbag_import_timeout" in hangs
    exits = result.import_errors[str(folder / "exits.py")]
    assert "died without an answer" in exits and "exit code 3" in exits
    killed = result.import_errors[str(folder / "killed.py")]
    assert "died without an answer" in killed and "SIGKILL" in killed
    assert result.files_parsed == [str(p) for p in paths]
    assert set(result.file_stats) == {str(p) for p in paths}
    # one child for the batch, a new one for the rest after each of the three bad files
    seen = reports(folder)
    assert {"good_0", "hangs", "good_3"} <= set(seen)
    assert len({r["pid"] for name, r in seen.items() if name.startswith("good")}) == 4


def test_each_file_of_a_batch_gets_the_whole_timeout(folder: Path) -> None:
    # four files of 1.5 s in one child with a 4 s limit: the batch takes longer than the
    # limit, no file does
    paths = []
    for n in range(4):
        path = folder / f"slow_{n}.py"
        path.write_text("import time\nfrom squall.sdk.dag import DAG\ntime.sleep(1.5)\n"
                        f"dag = DAG('slow_{n}', schedule=None)\n")
        paths.append(path)

    result = parse_files_isolated(paths, folder, 4, parallelism=1, files_per_child=4)

    assert result.import_errors == {}
    assert sorted(result.serialized) == [f"slow_{n}" for n in range(4)]


def test_children_are_niced_and_parse_several_files_each(folder: Path) -> None:
    paths = [probe(folder, f"p{n}") for n in range(6)]
    base = os.nice(0)

    result = parse_files_isolated(paths, folder, 30, parallelism=2, nice=5)

    assert sorted(result.serialized) == [f"p{n}" for n in range(6)]
    seen = reports(folder)
    assert {r["nice"] for r in seen.values()} == {min(base + 5, 19)}
    pids = {r["pid"] for r in seen.values()}
    assert os.getpid() not in pids
    assert len(pids) == 2  # the six files spread over the two children


def test_files_per_child_one_is_a_child_per_file_not_niced(folder: Path) -> None:
    paths = [probe(folder, f"p{n}") for n in range(4)]

    parse_files_isolated(paths, folder, 30, parallelism=2, files_per_child=1)

    seen = reports(folder)
    assert len({r["pid"] for r in seen.values()}) == 4
    assert {r["nice"] for r in seen.values()} == {os.nice(0)}


def test_what_a_file_changes_in_its_child_is_undone_for_the_next(folder: Path) -> None:
    paths = [bad(folder, "leaks"), probe(folder, "after")]

    result = parse_files_isolated(paths, folder, 30, parallelism=1, files_per_child=2)

    assert sorted(result.serialized) == ["after", "left_open"]
    seen = reports(folder)
    after = seen["after"]
    assert (after["env"], after["path"], after["cwd"], after["stack"]) == (
        None, False, os.getcwd(), 0)
    # both files were parsed by the same child: what was undone was there to undo
    assert seen["leaks"]["pid"] == after["pid"]


def test_a_file_that_writes_to_the_answer_pipe_does_not_answer_for_another(
        folder: Path) -> None:
    # a well-formed answer, for some other file: the parent must not take the real answer
    # that follows for the next file's
    forger = folder / "forger.py"
    forger.write_text('''\
import gc
from multiprocessing.connection import Connection
from squall.sdk.dag import DAG
pipe = next(o for o in gc.get_objects() if isinstance(o, Connection) and o.writable
            and not o.closed)
pipe.send_bytes(b'{"path": "/elsewhere.py", "duration": 0}\\n{"dags": [], "error": null}')
dag = DAG("forged", schedule=None)
''')
    paths = [forger, probe(folder, "after")]

    result = parse_files_isolated(paths, folder, 30, parallelism=1, files_per_child=2)

    assert list(result.serialized) == ["after"]
    assert result.serialized["after"]["dag"]["fileloc"] == str(folder / "after.py")
    assert "sent something else than its answer" in result.import_errors[str(forger)]
    assert list(result.import_errors) == [str(forger)]


def test_duplicate_dag_id_in_paths_order_across_batches(folder: Path) -> None:
    first = folder / "b_first.py"
    second = folder / "a_second.py"
    for path in (first, second):
        path.write_text("from squall.sdk.dag import DAG\ndag = DAG('same', schedule=None)\n")
    fillers = [probe(folder, f"f{n}") for n in range(3)]

    # the two files land in different children (one file per child, two at a time)
    result = parse_files_isolated([first, *fillers, second], folder, 30, parallelism=2,
                                  files_per_child=1)

    assert result.serialized["same"]["dag"]["fileloc"] == str(first)
    assert result.import_errors == {
        str(second): f"dag_id same is already defined in {first}"}


def test_bag_from_settings_parses_with_the_parsing_settings(folder: Path,
                                                            tmp_path: Path) -> None:
    paths = [probe(folder, f"p{n}") for n in range(3)]
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path / "home")}, overrides={
        "core": {"dags_folder": str(folder)},
        "scheduler": {"parsing_processes": 1, "parsing_nice": 7}})
    base = os.nice(0)

    bag = DagBag.from_settings(settings)
    result = bag.parse_isolated(files=[(p, folder) for p in paths])

    assert sorted(result.serialized) == ["p0", "p1", "p2"]
    seen = reports(folder)
    assert {r["nice"] for r in seen.values()} == {min(base + 7, 19)}
    assert len({r["pid"] for r in seen.values()}) == 1  # one process, so one child


def test_parsing_settings_are_checked(tmp_path: Path) -> None:
    home = {"SQUALL_HOME": str(tmp_path)}
    defaults = Settings.load(env=home).scheduler
    assert (defaults.parsing_processes, defaults.parsing_nice) == (2, 10)
    for key, value in (("parsing_processes", 0), ("parsing_nice", 20), ("parsing_nice", -1)):
        with pytest.raises(Exception, match=key):
            Settings.load(env=home, overrides={"scheduler": {key: value}})
