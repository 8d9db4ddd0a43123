"""Who registers Squall's task: a worker's app does, the scheduler's does not (it sends the
task by name), and building the scheduler's app loads nothing of the worker.

Each check runs in a fresh interpreter: Celery registers a task on every app finalized later
in the same process, so in the test process the result would depend on test order."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent("""
    import json, sys
    from squall.common.celery_app import RUN_TASK_NAME, create_celery_app
    from squall.common.settings import Settings

    env = {"SQUALL_HOME": sys.argv[1], "SQUALL__CELERY__BROKER_URL": sys.argv[2]}
    settings = Settings.load(env=env)
    if sys.argv[3] == "scheduler":
        app = create_celery_app(settings)
    else:
        from squall.worker import build_worker_app
        app = build_worker_app(settings)
    task = app.tasks.get(RUN_TASK_NAME)
    print(json.dumps({
        "registered": task is not None,
        "acks_late": getattr(task, "acks_late", None),
        "ignore_result": getattr(task, "ignore_result", None),
        "store_errors_even_if_ignored": getattr(task, "store_errors_even_if_ignored", None),
        "transport": app.conf.broker_transport,
        "worker_modules": sorted(m for m in sys.modules if m.startswith("squall.worker")),
    }))
""")


def probe(tmp_path: Path, role: str, broker_url: str = "") -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path), broker_url, role],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_the_scheduler_app_registers_no_task_and_loads_no_worker_module(tmp_path: Path) -> None:
    found = probe(tmp_path, "scheduler")
    assert found["registered"] is False
    assert found["worker_modules"] == []
    assert found["transport"] == "squall.common.transports.embedded:EmbeddedBrokerTransport"


def test_a_worker_app_registers_the_task(tmp_path: Path) -> None:
    found = probe(tmp_path, "worker")
    assert found["registered"] is True
    assert found["acks_late"] is True
    # no result for a try that ends normally, but failures are stored (ADR 22)
    assert found["ignore_result"] is True
    assert found["store_errors_even_if_ignored"] is True
    assert found["transport"] == "squall.common.transports.embedded:EmbeddedBrokerTransport"


def test_a_worker_on_redis_guards_against_undecodable_messages(tmp_path: Path) -> None:
    found = probe(tmp_path, "worker", "redis://127.0.0.1:6379/0")
    assert found["registered"] is True
    assert found["transport"] == "squall.common.transports.redis_guard:RedisTransport"
    assert probe(tmp_path, "scheduler", "redis://127.0.0.1:6379/0")["transport"] is None
