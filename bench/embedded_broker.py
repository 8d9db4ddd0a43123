"""Measure the embedded broker candidates for ``squall standalone`` (ADR 0005).

For each variant a real ``celery worker`` (prefork, concurrency 4) is started in a
subprocess on a minimal app defined here, with the result backend Squall uses embedded
(``db+sqlite``, ``task_track_started``, extended results). Then:

latency
    one publisher sends N messages one at a time (spaced out, so the worker is idle each
    time); latency = task start (``time.time()`` in the task) - publish time.
burst
    several publisher processes send M messages in total as fast as they can; every
    message must start exactly once (no loss, no duplicate) and end with a SUCCESS row in
    the result database.
idle
    CPU used by the worker's process tree (main process + pool children) over a window in
    which nothing is published, as a percentage of one core.

Variants: kombu's SQLAlchemy transport on a SQLite file (``sqla``) and kombu's filesystem
transport (``fs``), each with kombu's default polling interval (1 s) and a short one, and
``squall``: the embedded broker Squall ships (``squall.common.transports``: the filesystem
transport with atomic publish and claim), at its default interval and at 50 ms.

Usage (bounded: each variant gives up after its deadlines)::

    PYTHONPATH=. python bench/embedded_broker.py [--variants sqla-fast,fs-fast]
        [--messages 300] [--publishers 4] [--latency-samples 40] [--idle-seconds 10]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery
from kombu.transport import sqlalchemy as kombu_sqla

TASK_NAME = "bench.record"
FAST_POLLING = 0.1
CLK_TCK = os.sysconf("SC_CLK_TCK")


class FastSQLATransport(kombu_sqla.Transport):
    """kombu's SQLAlchemy transport with a short polling interval.

    Its transport options go to ``create_engine`` as they are, so ``polling_interval``
    cannot be passed that way; a class attribute can.
    """

    polling_interval = FAST_POLLING


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # "sqla" | "fs" | "squall"
    polling_interval: float | None  # None: kombu's default (1 s)


VARIANTS = {
    "sqla-default": Variant("sqla-default", "sqla", None),
    "sqla-fast": Variant("sqla-fast", "sqla", FAST_POLLING),
    "fs-default": Variant("fs-default", "fs", None),
    "fs-fast": Variant("fs-fast", "fs", FAST_POLLING),
    "squall": Variant("squall", "squall", None),
    "squall-50ms": Variant("squall-50ms", "squall", 0.05),
}


def broker_config(variant: Variant, workdir: Path) -> dict[str, Any]:
    if variant.kind == "squall":
        from squall.common.transports import EMBEDDED_TRANSPORT
        from squall.common.transports.embedded import (
            EMBEDDED_BROKER_URL,
            embedded_broker_options,
        )

        squall_options = embedded_broker_options(workdir)
        if variant.polling_interval is not None:
            squall_options["polling_interval"] = variant.polling_interval
        return {"broker_url": EMBEDDED_BROKER_URL, "broker_transport": EMBEDDED_TRANSPORT,
                "broker_transport_options": squall_options}
    if variant.kind == "sqla":
        url = f"sqlite:///{workdir / 'broker.db'}"
        if variant.polling_interval is None:
            return {"broker_url": "sqla+" + url, "broker_transport_options": {}}
        return {
            "broker_url": url,
            "broker_transport": "bench.embedded_broker:FastSQLATransport",
            "broker_transport_options": {},
        }
    queue_dir, processed, control = (workdir / n for n in ("queue", "processed", "control"))
    for folder in (queue_dir, processed, control):
        folder.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "data_folder_in": str(queue_dir),
        "data_folder_out": str(queue_dir),
        "processed_folder": str(processed),
        "store_processed": False,
        "control_folder": str(control),
    }
    if variant.polling_interval is not None:
        options["polling_interval"] = variant.polling_interval
    return {"broker_url": "filesystem://", "broker_transport_options": options}


def make_app(variant: Variant, workdir: Path) -> Celery:
    app = Celery("bench", set_as_current=False)
    app.conf.update(
        broker_config(variant, workdir),
        result_backend=f"db+sqlite:///{workdir / 'results.db'}",
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_track_started=True,
        result_extended=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    starts = workdir / "starts.log"

    def record(msg_id: str, sent_at: float) -> None:
        started = time.time()
        line = f"{msg_id} {started!r} {sent_at!r} {os.getpid()}\n".encode()
        fd = os.open(starts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one small O_APPEND write: atomic between processes
        finally:
            os.close(fd)

    app.task(name=TASK_NAME, ignore_result=False)(record)
    return app


# --------------------------------------------------------------------------- worker side


def run_worker(variant: Variant, workdir: Path) -> None:
    from celery.signals import worker_ready

    app = make_app(variant, workdir)

    @worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        (workdir / "ready").write_text(str(os.getpid()))

    app.worker_main(["worker", "-P", "prefork", "-c", "4", "-l", "WARNING",
                     "-n", f"bench-{variant.name}@%h", "-f", str(workdir / "worker.log")])


# --------------------------------------------------------------------------- measuring side


def read_starts(workdir: Path) -> list[tuple[str, float, float]]:
    path = workdir / "starts.log"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        msg_id, started, sent, _pid = line.split()
        rows.append((msg_id, float(started), float(sent)))
    return rows


def wait_for(predicate: Any, timeout: float, what: str) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    print(f"  ! timed out after {timeout} s waiting for {what}", file=sys.stderr)
    return False


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its direct children (the prefork pool)."""
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            pids.extend(int(c) for c in children)
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def publisher(args: tuple[str, str, int, int, float]) -> dict[str, Any]:
    """Publish ``count`` messages (ids ``p{index}-{n}``); retry a failed send like the
    executor does. Runs in a process of its own."""
    variant_name, workdir, index, count, _ = args
    app = make_app(VARIANTS[variant_name], Path(workdir))
    errors: list[str] = []
    times: list[float] = []
    for n in range(count):
        msg_id = f"p{index}-{n}"
        for attempt in range(5):
            t0 = time.monotonic()
            try:
                app.send_task(TASK_NAME, args=[msg_id, time.time()], task_id=msg_id,
                              retry=False)
                times.append(time.monotonic() - t0)
                break
            except Exception as exc:
                errors.append(f"{msg_id} attempt {attempt + 1}: {exc!r}")
                time.sleep(0.05 * (attempt + 1))
    return {"errors": errors, "publish_times": times}


def success_rows(workdir: Path) -> int:
    path = workdir / "results.db"
    if not path.exists():
        return 0
    conn = sqlite3.connect(path, timeout=10)
    try:
        return int(conn.execute(
            "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def measure(variant: Variant, opts: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"squall-bench-{variant.name}-"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]))
    with open(workdir / "worker.stderr", "wb") as stderr:
        worker = subprocess.Popen(
            [sys.executable, "-m", "bench.embedded_broker", "_worker", variant.name,
             str(workdir)],
            env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )
    out: dict[str, Any] = {"variant": variant.name, "workdir": str(workdir)}
    try:
        if not wait_for(lambda: (workdir / "ready").exists(), 30, "the worker"):
            out["error"] = "worker did not start"
            return out
        app = make_app(variant, workdir)

        # latency: one message at a time, the worker idle in between
        latencies: list[float] = []
        publish_times: list[float] = []
        for n in range(opts.latency_samples):
            msg_id = f"lat-{n}"
            t0 = time.monotonic()
            app.send_task(TASK_NAME, args=[msg_id, time.time()], task_id=msg_id, retry=False)
            publish_times.append(time.monotonic() - t0)
            if not wait_for(lambda m=msg_id: any(r[0] == m for r in read_starts(workdir)),
                            10, f"{msg_id} to start"):
                break
            # the worker goes idle; a random phase against its polling
            time.sleep(random.uniform(0.05, 0.6))
        by_id = {r[0]: r[1] - r[2] for r in read_starts(workdir) if r[0].startswith("lat-")}
        latencies = sorted(by_id.values())
        out["latency_ms"] = {
            "n": len(latencies),
            "median": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p90": round(latencies[int(0.9 * (len(latencies) - 1))] * 1000, 1)
            if latencies else None,
            "max": round(max(latencies) * 1000, 1) if latencies else None,
        }
        out["publish_ms_median"] = round(statistics.median(publish_times) * 1000, 2)

        # burst: several publishers at once
        per = opts.messages // opts.publishers
        total = per * opts.publishers
        t0 = time.monotonic()
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(opts.publishers) as pool:
            results = pool.map(publisher, [(variant.name, str(workdir), i, per, 0.0)
                                           for i in range(opts.publishers)])
        publish_seconds = time.monotonic() - t0

        def burst_rows() -> list[str]:
            return [r[0] for r in read_starts(workdir) if r[0].startswith("p")]

        wait_for(lambda: len(set(burst_rows())) >= total, 90, f"{total} burst messages")
        drained = time.monotonic() - t0
        expected_results = total + len(latencies)
        wait_for(lambda: success_rows(workdir) >= expected_results, 30, "SUCCESS rows")
        time.sleep(1.0)  # a late duplicate would show up here
        counts = Counter(burst_rows())
        out["burst"] = {
            "sent": total,
            "publish_errors": sum(len(r["errors"]) for r in results),
            "publish_error_sample": [e for r in results for e in r["errors"]][:3],
            "started": len(counts),
            "missing": total - len(counts),
            "duplicates": sum(c - 1 for c in counts.values() if c > 1),
            "success_rows": success_rows(workdir),
            "expected_success_rows": expected_results,
            "publish_seconds": round(publish_seconds, 2),
            "drain_seconds": round(drained, 2),
        }

        # idle CPU
        time.sleep(2.0)
        c0, t0 = tree_cpu_seconds(worker.pid), time.monotonic()
        time.sleep(opts.idle_seconds)
        c1, t1 = tree_cpu_seconds(worker.pid), time.monotonic()
        out["idle_cpu_percent"] = round(100 * (c1 - c0) / (t1 - t0), 2)
        log = (workdir / "worker.log").read_text() if (workdir / "worker.log").exists() else ""
        out["worker_log_errors"] = log.count("ERROR") + log.count("Traceback")
        broker_db = workdir / "broker.db"
        if broker_db.exists():
            out["broker_db_kib"] = broker_db.stat().st_size // 1024
        return out
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        run_worker(VARIANTS[argv[1]], Path(argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--latency-samples", type=int, default=40)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="print JSON, not a table")
    opts = parser.parse_args(argv)
    random.seed(opts.seed)
    results = []
    for name in opts.variants.split(","):
        print(f"measuring {name} ...", file=sys.stderr)
        results.append(measure(VARIANTS[name], opts))
    if opts.json:
        print(json.dumps(results, indent=2))
        return 0
    print("| variant | latency median / p90 / max ms | publish ms | burst sent / started / "
          "missing / dup / publish errors | SUCCESS rows | drain s | idle CPU % | worker errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        if "error" in r:
            print(f"| {r['variant']} | {r['error']} |")
            continue
        lat, b = r["latency_ms"], r["burst"]
        print(f"| {r['variant']} | {lat['median']} / {lat['p90']} / {lat['max']} | "
              f"{r['publish_ms_median']} | {b['sent']} / {b['started']} / {b['missing']} / "
              f"{b['duplicates']} / {b['publish_errors']} | {b['success_rows']}/"
              f"{b['expected_success_rows']} | {b['drain_seconds']} | "
              f"{r['idle_cpu_percent']} | {r['worker_log_errors']} |")
        if b["publish_error_sample"]:
            print(f"<!-- {r['variant']} publish errors: {b['publish_error_sample']} -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
