"""Fixtures of the container tests: the Docker engine, the images, a running compose project.

``compose_cluster`` (one per test module, so it is down once its tests are) builds the base
images when missing or out of date (:mod:`tests.compose.images`), builds
``deploy/Dockerfile`` on them, and brings ``docker-compose.yml`` up as a project of its own
(postgres, redis, squall-init, two schedulers, two workers, a triggerer, the API and, profile
``flower``, Flower) with every secret and host port chosen here, waits until every health
check passes, and takes it all down again (containers, networks and volumes) at the end,
whatever happened. Without a reachable
Docker daemon or docker-compose the tests skip on a laptop and fail under ``CI``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.compose import images
from tests.conftest import in_ci

log = logging.getLogger(__name__)

COMPOSE_FILE = images.REPO / "docker-compose.yml"
ENV_EXAMPLE = images.REPO / ".env.example"
# each project's containers' logs are kept here after it is taken down
LOG_DIR = Path(tempfile.gettempdir()) / "squall-compose-logs"
UP_TIMEOUT = 300.0
HEALTHY_TIMEOUT = 300.0
LONG_RUNNING = ("postgres", "redis", "scheduler", "worker", "triggerer", "api", "flower")
WORKERS = 2
SCHEDULERS = 2
WORKER_CONCURRENCY = 2

# A DAG of the test's own, put in the project's DAG folder: six parallel tasks that each
# take a few seconds, so that two workers of two task slots each must share them.
FANOUT_DAG_ID = "compose_fanout"
FANOUT_TASKS = 6
FANOUT_DAG = f'''
import pendulum

from squall import DAG, BashOperator

with DAG("{FANOUT_DAG_ID}", schedule=None, catchup=False,
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC")) as dag:
    start = BashOperator(task_id="start", bash_command="echo start on $(hostname)")
    done = BashOperator(task_id="done", bash_command="echo done on $(hostname)")
    for i in range({FANOUT_TASKS}):
        start >> BashOperator(task_id=f"sleep_{{i}}",
                              bash_command=f"sleep 3; echo slept {{i}} on $(hostname)") >> done
'''


def unavailable(message: str) -> None:
    """Skip the test, or fail it under CI (never a silent skip there)."""
    if in_ci():
        pytest.fail(f"{message}; CI is set, so this is an error, not a skip", pytrace=False)
    pytest.skip(message)


def compose_binary() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        unavailable("docker-compose is not installed (apt-get install -y docker-compose, or "
                    "run .ci/docker.sh)")
        raise AssertionError("unreachable")
    return path


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """The Docker CLI and a daemon that answers."""
    if shutil.which("docker") is None:
        unavailable("docker is not installed (apt-get install -y docker.io, or run "
                    ".ci/docker.sh)")
    proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        reason = (proc.stderr.strip().splitlines() or ["no answer"])[-1]
        unavailable(f"the Docker daemon is unreachable ({reason}); start it with "
                    ".ci/docker.sh (as root), or `dockerd &`")


@pytest.fixture(scope="session")
def squall_image(docker_engine: None) -> str:
    """The Squall image, built from deploy/Dockerfile on the locally built Python image."""
    built = images.ensure_base_images()
    if built:
        log.info("built base images %s", ", ".join(built))
    seconds = images.build_squall_image(images.SQUALL)
    log.info("built %s in %.0f s", images.SQUALL, seconds)
    return images.SQUALL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class ComposeProject:
    """A docker-compose project made from the repository's docker-compose.yml."""

    name: str
    env_file: Path
    env: dict[str, str]
    workdir: Path
    profiles: tuple[str, ...] = ("flower",)
    created: bool = field(default=False)

    def command(self, *args: str) -> list[str]:
        argv = [compose_binary(), "--project-name", self.name, "--file", str(COMPOSE_FILE),
                "--env-file", str(self.env_file)]
        for profile in self.profiles:
            argv += ["--profile", profile]
        return [*argv, *args]

    def run(self, *args: str, timeout: float = 120.0, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.command(*args), capture_output=True, text=True,
                              timeout=timeout, check=False, cwd=self.workdir,
                              env=_compose_environ())
        if check and proc.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{_tail(proc.stdout + proc.stderr)}")
        return proc

    def containers(self) -> list[dict[str, Any]]:
        """`docker inspect` of every container of the project (stopped ones too)."""
        proc = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.name}"],
            capture_output=True, text=True, timeout=60, check=True)
        ids = proc.stdout.split()
        if not ids:
            return []
        proc = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True,
                              timeout=60, check=True)
        return list(json.loads(proc.stdout))

    def service_containers(self, service: str) -> list[dict[str, Any]]:
        return [c for c in self.containers()
                if c["Config"]["Labels"].get("com.docker.compose.service") == service]

    def logs(self) -> str:
        return self.run("logs", "--no-color", "--tail", "200", check=False).stdout

    def down(self) -> None:
        self.run("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300,
                 check=False)


def _compose_environ() -> dict[str, str]:
    """The caller's environment without the variables docker-compose.yml reads: the
    project's values come from its env file alone."""
    names = _env_example_names()
    return {k: v for k, v in os.environ.items() if k not in names}


def _env_example_names() -> set[str]:
    return {line.split("=", 1)[0].strip()
            for line in ENV_EXAMPLE.read_text().splitlines()
            if "=" in line and not line.lstrip().startswith("#")}


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def health_summary(containers: list[dict[str, Any]]) -> dict[str, list[str]]:
    """service -> the state (health, or exit code) of each of its containers."""
    summary: dict[str, list[str]] = {}
    for c in containers:
        service = c["Config"]["Labels"].get("com.docker.compose.service", c["Name"])
        state = c["State"]
        if state.get("Health"):
            status = state["Health"]["Status"]
        elif state["Status"] == "exited":
            status = f"exited {state['ExitCode']}"
        else:
            status = state["Status"]
        summary.setdefault(service, []).append(status)
    return summary


def wait_healthy(project: ComposeProject, expected: dict[str, int], timeout: float) -> None:
    """Poll until each service has its number of healthy containers (squall-init: exited 0).

    Fails early when a container exits or turns unhealthy."""
    deadline = time.monotonic() + timeout
    summary: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        summary = health_summary(project.containers())
        broken = {s: states for s, states in summary.items()
                  if any(st == "unhealthy" or (st.startswith("exited") and st != "exited 0")
                         for st in states)}
        if broken:
            raise AssertionError(f"containers failed: {broken}\n"
                                 f"{_failure_details(project, set(broken))}")
        ready = all(summary.get(s, []).count("healthy") == n for s, n in expected.items())
        if ready and summary.get("squall-init") == ["exited 0"]:
            return
        time.sleep(1)
    waiting = {s for s, n in expected.items() if summary.get(s, []).count("healthy") != n}
    raise AssertionError(f"not healthy within {timeout:.0f} s: {summary}\n"
                         f"{_failure_details(project, waiting)}")


def _failure_details(project: ComposeProject, services: set[str]) -> str:
    """The latest health check output and the log's tail of each container of these
    services."""
    parts = []
    for c in project.containers():
        service = c["Config"]["Labels"].get("com.docker.compose.service")
        if service not in services:
            continue
        health = (c["State"].get("Health") or {}).get("Log") or []
        if health:
            parts.append(f"--- {c['Name']}: last health check (exit {health[-1]['ExitCode']}):"
                         f"\n{_tail(health[-1]['Output'], 10)}")
        logs = docker("logs", "--tail", "40", c["Id"])
        parts.append(f"--- {c['Name']}: log\n{_tail(logs.stdout + logs.stderr, 40)}")
    return "\n".join(parts)


@dataclass
class Cluster:
    project: ComposeProject
    api_url: str
    flower_url: str
    admin: tuple[str, str]
    flower_auth: tuple[str, str]
    image: str

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, auth=self.admin, timeout=30.0)


def _write_env_file(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


@pytest.fixture(scope="module")  # down once test_cluster.py is done, not at the session's end
def compose_cluster(squall_image: str, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[Cluster]:
    compose_binary()
    workdir = tmp_path_factory.mktemp("compose")
    dags = workdir / "dags"
    dags.mkdir()
    (dags / f"{FANOUT_DAG_ID}.py").write_text(FANOUT_DAG)
    for path in (dags, *dags.iterdir()):  # the containers' user is not root
        path.chmod(0o755 if path.is_dir() else 0o644)
    admin = ("admin", secrets.token_urlsafe(16))
    flower_auth = ("flower", secrets.token_urlsafe(16))
    api_port, flower_port = free_port(), free_port()
    env = {
        "POSTGRES_USER": "squall",
        "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
        "POSTGRES_DB": "squall",
        "REDIS_PASSWORD": secrets.token_hex(16),
        "SQUALL__API__SECRET_KEY": secrets.token_urlsafe(32),
        "SQUALL_ADMIN_USERNAME": admin[0],
        "SQUALL_ADMIN_PASSWORD": admin[1],
        "FLOWER_BASIC_AUTH": f"{flower_auth[0]}:{flower_auth[1]}",
        "SQUALL_WORKER_QUEUES": "default",
        "SQUALL_WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        "SQUALL_API_PORT": str(api_port),
        "SQUALL_FLOWER_PORT": str(flower_port),
        "SQUALL_DAGS_DIR": str(dags),
        "SQUALL_POOLS_FILE": str(images.REPO / "deploy" / "pools.json"),
        "SQUALL_LOAD_EXAMPLES": "true",
        "SQUALL_IMAGE": squall_image,
        "SQUALL_BASE_IMAGE": images.PYTHON,
        "POSTGRES_IMAGE": images.POSTGRES,
        "REDIS_IMAGE": images.REDIS,
    }
    env_file = workdir / "compose.env"
    _write_env_file(env_file, env)
    project = ComposeProject(name=f"squalltest{secrets.token_hex(4)}", env_file=env_file,
                             env=env, workdir=workdir)
    try:
        up = project.run("up", "--detach", "--no-build", "--scale", f"worker={WORKERS}",
                         "--scale", f"scheduler={SCHEDULERS}", timeout=UP_TIMEOUT, check=False)
        if up.returncode != 0:
            raise AssertionError(f"docker-compose up exited {up.returncode}:\n"
                                 f"{_tail(up.stdout + up.stderr, 20)}\n"
                                 f"{_tail(project.logs(), 120)}")
        wait_healthy(project, {"postgres": 1, "redis": 1, "scheduler": SCHEDULERS,
                               "worker": WORKERS, "triggerer": 1,
                               "api": 1, "flower": 1}, HEALTHY_TIMEOUT)
        yield Cluster(project=project, api_url=f"http://127.0.0.1:{api_port}",
                      flower_url=f"http://127.0.0.1:{flower_port}", admin=admin,
                      flower_auth=flower_auth, image=squall_image)
    finally:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        kept = LOG_DIR / f"{project.name}.log"
        kept.write_text(project.logs())
        log.info("compose project %s: logs kept in %s", project.name, kept)
        project.down()
        left = project.containers()
        assert not left, f"docker-compose down left containers: {[c['Name'] for c in left]}"


def poll(what: str, check: Any, timeout: float, interval: float = 1.0) -> Any:
    """Call ``check()`` until it returns something truthy; fail naming ``what`` after
    ``timeout`` seconds with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def docker(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def exec_in(container_id: str, argv: Sequence[str], timeout: float = 60.0
            ) -> subprocess.CompletedProcess[str]:
    return docker("exec", container_id, *argv, timeout=timeout)
