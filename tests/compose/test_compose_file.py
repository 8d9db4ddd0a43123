"""docker-compose.yml's structure, without a Docker daemon: health checks, depends_on
conditions, secrets only from the environment (and all of them in .env.example), ports on
127.0.0.1 only, and `docker-compose config` accepting it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.compose.conftest import COMPOSE_FILE, ENV_EXAMPLE, compose_binary, unavailable

SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "SQUALL__API__SECRET_KEY",
           "SQUALL_ADMIN_PASSWORD", "FLOWER_BASIC_AUTH")
# required by docker-compose itself; FLOWER_BASIC_AUTH is required by Flower's command
# (`--require-auth`), so that the cluster without the profile "flower" does not need it
REQUIRED = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "SQUALL__API__SECRET_KEY",
            "SQUALL_ADMIN_PASSWORD")
ONE_SHOT = ("squall-init",)
SECRET_KEY = re.compile(r"PASSWORD|SECRET|BASIC_AUTH|TOKEN", re.IGNORECASE)
REFERENCE = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def load_yaml(path: Path) -> dict[str, Any]:
    """The YAML file as data, anchors and merge keys resolved. PyYAML when installed, else
    the one docker-compose (1.x, a Python program) runs with."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        return dict(yaml.safe_load(path.read_text()))
    binary = Path(compose_binary())
    first = binary.read_bytes()[:200].split(b"\n", 1)[0].decode(errors="replace")
    if not (first.startswith("#!") and "python" in first):
        unavailable("no YAML parser: install PyYAML (docker-compose here is not Python)")
    interpreter = first[2:].strip().split()
    proc = subprocess.run(
        [*interpreter, "-c", "import json, sys, yaml; "
         "json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)", str(path)],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "squall-init", "scheduler", "worker", "triggerer", "api",
            "flower"} <= set(services)
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no health check"
    assert services["scheduler"]["healthcheck"]["test"][1:5] == [
        "squall", "jobs", "check", "--job-type"]
    assert "worker" in services["worker"]["healthcheck"]["test"]
    assert services["triggerer"]["command"] == ["triggerer"]
    assert services["triggerer"]["healthcheck"]["test"][1:] == [
        "squall", "jobs", "check", "--job-type", "triggerer", "--local"]
    assert services["flower"]["profiles"] == ["flower"]


def test_every_dependency_waits_on_a_condition(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        for dependency, spec in depends.items():
            condition = spec.get("condition")
            expected = ("service_completed_successfully" if dependency in ONE_SHOT
                        else "service_healthy")
            assert condition == expected, (name, dependency, condition)
    for name in ("scheduler", "worker", "triggerer", "api", "flower"):
        assert "squall-init" in compose["services"][name]["depends_on"], name


def test_secrets_come_from_the_environment_only(compose: dict[str, Any]) -> None:
    example = env_example()
    referenced: set[str] = set()
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            refs = REFERENCE.findall(str(value))
            referenced.update(refs)
            if SECRET_KEY.search(key):
                assert refs and all(r in SECRETS or r.endswith(("_USERNAME", "_USER"))
                                    for r in refs), f"{name}: {key}={value!r} is not ${{VAR}}"
            if "://" in str(value) and "@" in str(value):  # a URL with credentials
                assert ("${POSTGRES_PASSWORD" in str(value)
                        or "${REDIS_PASSWORD" in str(value)), f"{name}: {key}"
    assert set(SECRETS) <= referenced
    # every variable the file reads is documented in .env.example, the secrets left empty
    text = COMPOSE_FILE.read_text()
    assert set(REFERENCE.findall(text)) <= set(example), \
        set(REFERENCE.findall(text)) - set(example)
    for secret in SECRETS:
        assert example[secret] == "", f".env.example holds a value for {secret}"
    for secret in REQUIRED:
        assert f"${{{secret}:?" in text, f"{secret} is not required (${{{secret}:?...}})"
    flower = compose["services"]["flower"]
    assert "--require-auth" in flower["command"], flower["command"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "${FLOWER_BASIC_AUTH:-}"


def test_every_service_that_reads_task_logs_mounts_the_one_log_volume(
        compose: dict[str, Any]) -> None:
    """The workers write the tries' logs into one volume and the API reads them there
    (read-only), so a log outlives the worker container that wrote it (docs/logs.md)."""
    services = compose["services"]
    assert "squall-logs:/opt/squall/logs" in services["worker"]["volumes"]
    assert "squall-logs:/opt/squall/logs:ro" in services["api"]["volumes"]
    env = compose["x-squall-common"]["environment"]
    assert env["SQUALL__LOGGING__BASE_LOG_FOLDER"] == "/opt/squall/logs"


def test_env_is_ignored_by_git() -> None:
    """.env holds the secrets: git must never offer to commit it."""
    if shutil.which("git") is None or not (COMPOSE_FILE.parent / ".git").exists():
        pytest.skip("not a git checkout")
    proc = subprocess.run(["git", "check-ignore", "--no-index", "--quiet", ".env"],
                          cwd=COMPOSE_FILE.parent, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, f".env is not in .gitignore {proc.stderr}"


def test_ports_are_published_on_localhost_only(compose: dict[str, Any]) -> None:
    published = 0
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)
            published += 1
    assert published == 2  # the API and Flower


def test_postgres_urls_name_the_psycopg2_driver(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for value in (service.get("environment") or {}).values():
            if str(value).startswith("postgresql"):
                assert str(value).startswith("postgresql+psycopg2://"), value


def _config(env: dict[str, str], *args: str, flower: bool = True
            ) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` with these variables alone (an empty env file: not the
    repository's .env), with the profile "flower" unless ``flower`` is false."""
    empty = Path(env["HOME"]) / "empty.env"
    empty.touch()
    profile = ["--profile", "flower"] if flower else []
    return subprocess.run(
        [compose_binary(), "--file", str(COMPOSE_FILE), "--project-name", "squallconfig",
         "--env-file", str(empty), *profile, "config", *args],
        capture_output=True, text=True, timeout=60, check=False, env=env)


def test_docker_compose_config_validates_it(tmp_path: Path) -> None:
    if shutil.which("docker-compose") is None:
        compose_binary()  # skips, or fails under CI
    base = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(tmp_path)}
    sentinels = {name: f"sentinel{i}{name.lower().replace('_', '')}"
                 for i, name in enumerate(SECRETS)}
    proc = _config({**base, **sentinels}, "-q")
    assert proc.returncode == 0, proc.stderr
    # the secrets land where they belong, and only there
    resolved = _config({**base, **sentinels}).stdout
    assert f"postgresql+psycopg2://squall:{sentinels['POSTGRES_PASSWORD']}@postgres" in resolved
    assert f"SQUALL__API__SECRET_KEY: {sentinels['SQUALL__API__SECRET_KEY']}" in resolved
    assert f"FLOWER_BASIC_AUTH: {sentinels['FLOWER_BASIC_AUTH']}" in resolved
    assert resolved.count(sentinels["SQUALL_ADMIN_PASSWORD"]) == 1  # squall-init's alone
    # a missing secret stops it, naming the variable
    for secret in REQUIRED:
        proc = _config({**base, **{k: v for k, v in sentinels.items() if k != secret}}, "-q")
        assert proc.returncode != 0 and f"set {secret} in .env" in proc.stderr, \
            (secret, proc.stderr)
    # Flower's secret is Flower's alone: without its profile the cluster does not ask for it
    without_flower = {k: v for k, v in sentinels.items() if k != "FLOWER_BASIC_AUTH"}
    proc = _config({**base, **without_flower}, "-q", flower=False)
    assert proc.returncode == 0, proc.stderr
