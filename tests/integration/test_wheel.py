"""An installed (not editable) Squall has its examples: the wheel ships ``squall/sdk/examples``
and ``[core] load_examples`` finds them there, not in a source checkout.

The wheel is built from a copy of the sources (so the checkout gets no ``build/`` folder) and
installed with ``pip install --no-deps --target`` into a folder of its own; the CLI then runs
from a folder outside the checkout with only that folder on ``PYTHONPATH``, so ``squall`` is
imported from the installed copy (the test checks that it is) and its dependencies from this
virtualenv. Building needs setuptools >= 68 and wheel: from this environment when it has
them, else from the package index pip is configured with (skipped when that fails, an error
under CI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import in_ci
from tests.integration.test_examples import EXPECTED

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _build_isolation_needed() -> bool:
    """Whether pip must fetch the build requirements (this environment lacks them)."""
    try:
        major = int(metadata.version("setuptools").split(".")[0])
        metadata.version("wheel")
    except metadata.PackageNotFoundError:
        return True
    return major < 68


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the wheel built from this checkout installed in it."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "squall", src / "squall",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = base / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
             "-w", str(dist), str(src)]
    if not _build_isolation_needed():
        build.insert(4, "--no-build-isolation")
    built = _run(build, cwd=base)
    if built.returncode != 0:
        message = f"cannot build the wheel:\n{built.stdout}\n{built.stderr}"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    (wheel,) = dist.glob("squall-*.whl")
    target = base / "site"
    done = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                 "--disable-pip-version-check", "--target", str(target), str(wheel)], cwd=base)
    assert done.returncode == 0, done.stderr
    return target


def squall(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    env.update({"PYTHONPATH": str(installed), "SQUALL_HOME": str(cwd / "home"),
                "SQUALL__CORE__LOAD_EXAMPLES": "true"})
    return _run([sys.executable, "-m", "squall", *args], cwd=cwd, env=env)


def test_the_wheel_ships_the_examples_and_load_examples_finds_them(
        installed: Path, tmp_path: Path) -> None:
    examples = installed / "squall" / "sdk" / "examples"
    assert {p.stem for p in examples.glob("example_*.py")} == set(EXPECTED)

    where = _run([sys.executable, "-c", "import squall; print(squall.__file__)"], cwd=tmp_path,
                 env={**os.environ, "PYTHONPATH": str(installed)})
    assert Path(where.stdout.strip()).is_relative_to(installed), where

    listed = squall(installed, tmp_path, "dags", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    filelocs = {d["dag_id"]: Path(d["fileloc"]) for d in json.loads(listed.stdout)}
    assert set(filelocs) == set(EXPECTED)
    for dag_id, fileloc in filelocs.items():
        assert fileloc == examples.resolve() / f"{dag_id}.py"
        assert not fileloc.is_relative_to(REPO)

    run_state, _ = EXPECTED["example_taskflow"]
    tested = squall(installed, tmp_path, "dags", "test", "example_taskflow", "2024-03-01",
                    "-o", "json")
    assert tested.returncode == 0, tested.stderr
    assert json.loads(tested.stdout)["state"] == run_state
