"""What a ``squall`` command imports (issue 26): building the argument parser must not load
the API, the database layer, Celery, the settings model or rich, so ``squall --help`` and a
usage error answer at once; each command loads what it needs when it runs.

Each case runs the real command in a subprocess under ``python -X importtime`` and reads the
modules it imported from that report. Nothing here measures time (``python -m bench cli``
does).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: third-party packages no command may import before it runs
HEAVY_PACKAGES = frozenset({
    "alembic", "celery", "cryptography", "fastapi", "httpx", "jinja2", "kombu", "pendulum",
    "psycopg2", "pydantic", "pydantic_core", "redis", "rich", "sqlalchemy", "starlette",
    "uvicorn",
})
#: Squall modules (and packages, with everything under them) likewise
HEAVY_SQUALL = ("squall.api.app", "squall.api.users", "squall.common.celery_app",
                "squall.common.db", "squall.common.models", "squall.common.settings",
                "squall.dag_processing", "squall.runs", "squall.scheduler", "squall.sdk",
                "squall.triggerer", "squall.worker")


def imported_modules(stderr: str) -> set[str]:
    """The modules named in ``python -X importtime``'s report on ``stderr``."""
    found = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            self_us, _, name = line.removeprefix("import time:").split("|")
            if self_us.strip().isdigit():  # not the header line
                found.add(name.strip())
    return found


def heavy(modules: set[str], packages: frozenset[str] = HEAVY_PACKAGES,
          squall: tuple[str, ...] = HEAVY_SQUALL) -> list[str]:
    bad = {m.split(".")[0] for m in modules if m.split(".")[0] in packages}
    bad |= {m for m in modules if any(m == s or m.startswith(s + ".") for s in squall)}
    return sorted(bad)


def run_squall(home: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    env.update(SQUALL_HOME=str(home), SQUALL__CORE__DAGS_FOLDER=str(home / "dags"))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "squall", *args],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120, check=False)
    return proc, imported_modules(proc.stderr)


def test_the_report_is_read() -> None:
    report = textwrap.dedent("""\
        import time: self [us] | cumulative | imported package
        import time:       120 |        120 |   _io
        import time:      2000 |      90000 | sqlalchemy
        import time:       300 |        900 |     squall.common.models.dag
        """)
    modules = imported_modules(report)
    assert modules == {"_io", "sqlalchemy", "squall.common.models.dag"}
    assert heavy(modules) == ["sqlalchemy", "squall.common.models.dag"]
    assert heavy({"squall.runs_x", "rich_extra", "squall.cli.common"}) == []


@pytest.mark.parametrize("args", [
    ["--help"],
    ["dags", "--help"],
    ["dags", "list", "--help"],
    ["users", "create", "--help"],
    ["standalone", "--help"],
])
def test_help_imports_nothing_heavy(tmp_path: Path, args: list[str]) -> None:
    proc, modules = run_squall(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: squall" in proc.stdout
    assert "argparse" in modules and "squall.cli" in modules  # the report was read
    assert heavy(modules) == [], (
        f"`squall {' '.join(args)}` imports these while building its parser: import them in "
        "the command's function instead")


def test_a_usage_error_imports_nothing_heavy(tmp_path: Path) -> None:
    proc, modules = run_squall(tmp_path, "dags", "no-such-command")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
    assert "argparse" in modules
    assert heavy(modules) == []


def test_version_reads_the_settings_and_nothing_of_the_database(tmp_path: Path) -> None:
    proc, modules = run_squall(tmp_path, "version")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()
    assert "squall.common.settings" in modules  # the report was read
    # the settings model (pydantic) and its time zone check (pendulum) are what it loads
    allowed = {"pydantic", "pydantic_core", "pendulum"}
    assert heavy(modules, HEAVY_PACKAGES - allowed,
                 tuple(s for s in HEAVY_SQUALL if s != "squall.common.settings")) == []


def test_dags_list_loads_neither_the_api_nor_celery(tmp_path: Path) -> None:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "one.py").write_text(textwrap.dedent("""\
        from squall import DAG
        from squall.sdk.operators.empty import EmptyOperator

        with DAG("one", schedule=None):
            EmptyOperator(task_id="a")
        """))
    proc, modules = run_squall(tmp_path, "dags", "list", "-o", "json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"dag_id": "one"' in proc.stdout
    assert "sqlalchemy" in modules  # the report was read
    web_and_queue = frozenset({"celery", "kombu", "fastapi", "starlette", "uvicorn", "httpx",
                               "redis"})
    assert heavy(modules, web_and_queue, ("squall.api.app", "squall.common.celery_app",
                                          "squall.scheduler", "squall.worker")) == []
