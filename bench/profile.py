"""``python -m bench profile``: W2 (the chain; or ``--workload``) on a redis-pg cluster
while py-spy samples the scheduler and the worker trees; writes collapsed stacks and a
summary of the hottest frames. py-spy must be installed (``pip install py-spy``) and
ptrace allowed."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.cluster import BenchCluster
from bench.workloads import WORKLOADS


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(found):
        raise SystemExit("py-spy not found: pip install py-spy")
    return found


def summarize(path: Path, top: int = 25) -> str:
    """Self and inclusive sample counts per frame of a py-spy ``--format raw`` file."""
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        frames = stack.split(";")
        leaf[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    out = [f"{path.name}: {total} samples",
           "  inclusive:"]
    out += [f"    {100 * n / max(total, 1):5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    out.append("  self (leaf):")
    out += [f"    {100 * n / max(total, 1):5.1f}%  {f}" for f, n in leaf.most_common(top)]
    return "\n".join(out)


def run_profile(out_dir: Path, duration: int, extra_env: dict[str, str],
                workload: str = "W2", on_cpu: bool = False) -> int:
    """py-spy both trees during one run of ``workload``; ``on_cpu``: sample only threads
    that are running (where the CPU goes), else waiting ones too (where the time goes)."""
    py_spy = _py_spy()
    out_dir.mkdir(parents=True, exist_ok=True)
    with BenchCluster("redis-pg", extra_env=extra_env, keep_home=True) as cluster:
        print(f"bench: profiling {workload}; logs under {cluster.home}", flush=True)
        cluster.wait_parsed()
        cluster.wait_runs(cluster.trigger(["bench_chain"]))  # warm-up
        spies = []
        for name in ("scheduler", "worker"):
            out = out_dir / f"{name}.txt"
            cmd = [py_spy, "record", "--pid", str(cluster.proc(name).pid), "--duration",
                   str(duration), "--rate", "200", "--format", "raw", "--subprocesses",
                   *([] if on_cpu else ["--idle"]), "--output", str(out)]
            spies.append((out, subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)))
        sample = WORKLOADS[workload][1](cluster)
        for _, spy in spies:
            spy.wait(duration + 60)
    print(", ".join(f"{k}={v:.3g}" for k, v in sample.figures.items()))
    for out, _ in spies:
        if out.exists():
            print(summarize(out))
    return 0
