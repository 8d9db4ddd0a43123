"""``python -m bench cli``: the wall time of short ``squall`` commands (issue 26).

Each command runs ``--repeat`` times as a new process, the way a user types it (the venv's
``squall`` console script, or ``python -m squall`` when there is none), with the commands
interleaved so that a change in the machine's load falls on all of them alike. The DAG
folder is ``bench/dags`` (6 files, examples off); the database is a fresh SQLite file in a
temp ``SQUALL_HOME`` (the default) or ``--db pg``, a PostgreSQL database recreated for the
run. With several ``--tree`` (e.g. main before and after a change), each command runs once
per tree in turn within every round. Before measuring, ``squall db migrate`` and one
``squall dags list`` run unmeasured, so every measured ``dags list`` re-parses an already
known folder (its steady state), and the
tree's bytecode is written (``PYTHONDONTWRITEBYTECODE`` is removed from the commands'
environment, so they run as from a pip install, not compiling every module each time).
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.report import REPO_ROOT, RESULTS, commit_id, fmt, machine_facts

COMMANDS: dict[str, list[str]] = {
    "squall --help": ["--help"],
    "squall version": ["version"],
    "squall dags list": ["dags", "list"],
    "squall dags report": ["dags", "report"],
    "squall pools list": ["pools", "list"],
}
PG_DB = "squall_bench_cli"
PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@dataclass
class CliTimes:
    tree: Path
    commit: str
    db: str
    repeat: int
    #: wall ms of each run, by command
    ms: dict[str, list[float]] = field(default_factory=dict)
    #: CPU ms (user + system, the process and the children it waited for) of each run
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, int, float, float, float, float, float]]:
        """(command, n, wall median, wall p90, wall min, wall max, CPU median), in ms."""
        out = []
        for name, values in self.ms.items():
            out.append((name, len(values), statistics.median(values), p90(values),
                        min(values), max(values), statistics.median(self.cpu_ms[name])))
        return out


def p90(values: list[float]) -> float:
    """The 90th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, -(-9 * len(ordered) // 10) - 1)]


def _squall_cmd() -> list[str]:
    script = Path(sys.executable).parent / "squall"
    return [str(script)] if script.exists() else [sys.executable, "-m", "squall"]


def _tree_commit(tree: Path) -> str:
    if tree.resolve() == REPO_ROOT:
        return commit_id()
    try:
        out = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip() if out.returncode == 0 else "?"


def _recreate_pg(name: str, drop_only: bool = False) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        if not drop_only:
            conn.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``cmd``: its wall time and CPU time in ms. A failing command stops the bench."""
    cpu0 = _cpu_of_children()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=False)
    elapsed = (time.perf_counter() - t0) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"bench cli: {' '.join(cmd)} exited {proc.returncode}:\n"
                         f"{proc.stderr[-2000:]}")
    return elapsed, (_cpu_of_children() - cpu0) * 1000


def _env(tree: Path, home: Path, db_name: str | None) -> dict[str, str]:
    # Bytecode is written and used, as after a pip install: without it (this machine's
    # shells set PYTHONDONTWRITEBYTECODE) every run compiles each Squall module again.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SQUALL") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update({
        "PYTHONPATH": str(tree.resolve()),
        "SQUALL_HOME": str(home),
        "SQUALL__CORE__DAGS_FOLDER": str(REPO_ROOT / "bench" / "dags"),
        "SQUALL__CORE__LOAD_EXAMPLES": "false",
    })
    if db_name is not None:
        env["SQUALL__DATABASE__SQL_ALCHEMY_CONN"] = (
            f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db_name}")
    return env


def run_cli_bench(trees: list[tuple[Path, str | None]], *, repeat: int,
                  db: str) -> list[CliTimes]:
    """Measure each of ``trees`` (a source tree and its commit, None: ask git). With several
    trees, each command runs once per tree in turn within every round, so the trees see the
    same moments of the machine's load; each tree has its own home and database."""
    homes = [Path(tempfile.mkdtemp(prefix="squall-bench-cli-")) for _ in trees]
    db_names = [f"{PG_DB}_{i}" if db == "pg" else None for i in range(len(trees))]
    envs = [_env(tree, home, name) for (tree, _), home, name in zip(trees, homes, db_names,
                                                                    strict=True)]
    squall = _squall_cmd()
    results = [CliTimes(tree=tree, commit=commit or _tree_commit(tree), db=db, repeat=repeat,
                        ms={name: [] for name in COMMANDS},
                        cpu_ms={name: [] for name in COMMANDS})
               for tree, commit in trees]
    try:
        for name in db_names:
            if name is not None:
                _recreate_pg(name)
        for env in envs:
            _run([*squall, "db", "migrate"], env)
            _run([*squall, "dags", "list"], env)  # the first parse: new rows, not measured
        for rep in range(repeat):
            for name, args in COMMANDS.items():
                for env, result in zip(envs, results, strict=True):
                    wall, cpu = _run([*squall, *args], env)
                    result.ms[name].append(wall)
                    result.cpu_ms[name].append(cpu)
            for result in results:
                print(f"bench: cli #{rep + 1} `{result.commit}`: "
                      + ", ".join(f"{n.removeprefix('squall ')} {v[-1]:.0f} ms"
                                  for n, v in result.ms.items()), flush=True)
    finally:
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)
        for name in db_names:
            if name is not None:
                _recreate_pg(name, drop_only=True)
    return results


def title_of(times: CliTimes) -> str:
    db = "SQLite (fresh file)" if times.db == "sqlite" else f"PostgreSQL ({PG_DB}_N, fresh)"
    return (f"bench cli: wall time of short squall commands, tree `{times.commit}`, "
            f"{db}, repeat {times.repeat}")


def print_cli_table(times: CliTimes) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title_of(times))
    for col in ("command", "n", "median ms", "p90 ms", "min ms", "max ms", "CPU median ms"):
        table.add_column(col, justify="left" if col == "command" else "right")
    for name, n, med, p, lo, hi, cpu in times.rows():
        table.add_row(name, str(n), fmt(med), fmt(p), fmt(lo), fmt(hi), fmt(cpu))
    Console().print(table)


def append_cli_results(times: CliTimes, notes: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["| command | n | median ms | p90 ms | min ms | max ms | CPU median ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, n, med, p, lo, hi, cpu in times.rows():
        lines.append(f"| `{name}` | {n} | {fmt(med)} | {fmt(p)} | {fmt(lo)} | {fmt(hi)} | "
                     f"{fmt(cpu)} |")
    text = (f"\n## {title_of(times)}\n\nbench `{commit_id()}`, {stamp}; {machine_facts()}\n\n"
            + "\n".join(lines) + f"\n\n{notes}\n")
    with RESULTS.open("a") as f:
        f.write(text)
