"""Tables (rich) and bench/RESULTS.md."""

from __future__ import annotations

import platform
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "RESULTS.md"


def _run(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20,
                              cwd=REPO_ROOT, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def commit_id() -> str:
    head = _run("git", "rev-parse", "--short", "HEAD") or "?"
    dirty = _run("git", "status", "--porcelain")
    return head + ("-dirty" if dirty else "")


def machine_facts() -> str:
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    pg = _run("psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "show server_version")
    redis = _run("redis-server", "--version").split(" ")
    redis_v = next((w[2:] for w in redis if w.startswith("v=")), "?")
    return (f"nproc {_run('nproc')}, {cpu}, memory {mem_kib / 1024 / 1024:.1f} GiB, "
            f"Python {platform.python_version()}, PostgreSQL {pg or '?'}, Redis {redis_v}, "
            f"kernel {platform.release()}")


def fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


Row = tuple[str, str, list[float]]  # (group, figure, values)


def summarize(values: list[float]) -> tuple[str, str, str]:
    return fmt(min(values)), fmt(statistics.median(values)), fmt(max(values))


def print_table(title: str, rows: list[Row]) -> None:
    table = Table(title=title)
    for col in ("workload", "figure", "n", "min", "median", "max"):
        table.add_column(col, justify="left" if col in ("workload", "figure") else "right")
    for group, figure, values in rows:
        table.add_row(group, figure, str(len(values)), *summarize(values))
    Console().print(table)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| workload | figure | n | min | median | max |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for group, figure, values in rows:
        lo, med, hi = summarize(values)
        lines.append(f"| {group} | {figure} | {len(values)} | {lo} | {med} | {hi} |")
    return "\n".join(lines)


def append_results(title: str, rows: list[Row], notes: str = "") -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (f"\n## {title}\n\ncommit `{commit_id()}`, {stamp}; {machine_facts()}\n\n"
            f"{markdown_table(rows)}\n")
    if notes:
        text += f"\n{notes}\n"
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by `python -m bench run` and "
                           "`python -m bench scaling` (see bench/README.md).\n")
    with RESULTS.open("a") as f:
        f.write(text)
