"""Virtualenvs for ``PythonVirtualenvOperator``, made once per requirement set and reused.

A venv lives in ``<cache>/venv-<hash>``, the hash (as Airflow's ``_calculate_cache_hash``)
taken over the sorted requirements, pip options, index URLs, the base interpreter and
``system_site_packages``. It is made with ``<python> -m venv`` and ``pip install``, under an
exclusive lock on ``venv-<hash>.lock``, so two tries racing on one worker make it once; a
marker file written last (holding the hash's input) says it is complete, and a venv
without it (a try killed half-way) is removed and made again.

``<cache>`` is the operator's ``venv_cache_path``, else ``[core] venv_cache_path`` (default
``$SQUALL_HOME/venv_cache``) of the worker.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from squall.common.errors import SquallError

log = logging.getLogger(__name__)

__all__ = ["VenvSpec", "cache_folder", "ensure_venv", "venv_python"]

MARKER = "install_complete_marker.json"


@dataclass(frozen=True)
class VenvSpec:
    """What a venv is made of."""

    requirements: tuple[str, ...]
    python: str
    system_site_packages: bool = True
    pip_install_options: tuple[str, ...] = ()
    index_urls: tuple[str, ...] = ()

    def hash_text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def key(self) -> str:
        return hashlib.sha256(self.hash_text().encode()).hexdigest()[:12]


def cache_folder() -> Path:
    """``[core] venv_cache_path`` of this process's settings."""
    from squall.common.settings import Settings

    return Settings.load().venv_cache_path


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(cache: Path, spec: VenvSpec) -> Path:
    """The interpreter of the venv for ``spec`` under ``cache``, made first if needed."""
    venv = cache / f"venv-{spec.key()}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = venv / MARKER
        if marker.exists() and marker.read_text(encoding="utf8") == spec.hash_text():
            log.info("Re-using cached Python virtual environment in %s", venv)
            return venv_python(venv)
        if venv.exists():
            log.warning("Python virtual environment %s is incomplete; making it again", venv)
            shutil.rmtree(venv)
        log.info("Making Python virtual environment %s (%s)", venv,
                 ", ".join(spec.requirements) or "no requirements")
        try:
            _make(venv, spec)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        marker.write_text(spec.hash_text(), encoding="utf8")
        return venv_python(venv)


def _make(venv: Path, spec: VenvSpec) -> None:
    cmd = [spec.python, "-m", "venv", str(venv)]
    if spec.system_site_packages:
        cmd.insert(3, "--system-site-packages")
    _run(cmd, "making the virtualenv")
    if not spec.requirements:
        return
    requirements = venv / "requirements.txt"
    requirements.write_text("\n".join(spec.requirements) + "\n")
    pip = [str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check",
           "-r", str(requirements), *spec.pip_install_options]
    for position, url in enumerate(spec.index_urls):
        pip += ["--index-url" if position == 0 else "--extra-index-url", url]
    _run(pip, "installing the requirements")


def _run(cmd: list[str], what: str) -> None:
    log.info("Executing cmd: %s", " ".join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", check=False)
    for line in proc.stdout.splitlines():
        log.info("%s", line)
    if proc.returncode != 0:
        tail = proc.stdout.strip().splitlines()[-1:] or [""]
        raise SquallError(f"virtualenv: {what} failed (exit code {proc.returncode}): {tail[0]}")
