"""Process-tree CPU and memory from /proc (no psutil)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _ppid_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def tree_pids(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children = _ppid_map()
    out: list[int] = []
    stack = [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def _cpu_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime: the process and every child it has reaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0
    fields = data[data.rfind(b")") + 2:].split()
    # fields[0] is state (field 3); utime is field 14 -> index 11
    return sum(int(x) for x in fields[11:15])


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of the live tree plus everything its live members have reaped."""
    return sum(_cpu_ticks(p) for p in tree_pids(root)) / CLK_TCK


def tree_rss_mib(root: int) -> float:
    """Sum of VmRSS over the tree (shared pages of forked children counted each time)."""
    return sum(_rss_kib(p) for p in tree_pids(root)) / 1024


def tree_pss_mib(root: int) -> float:
    """Sum of PSS over the tree (shared pages split between sharers)."""
    return sum(pss_kib(p) for p in tree_pids(root)) / 1024


@dataclass
class TreeUsage:
    cpu_s: float = 0.0
    peak_rss_mib: float = 0.0


@dataclass
class TreeSampler:
    """Samples the RSS of named process trees every ``interval`` seconds in a thread;
    CPU seconds are the difference of tree CPU between start and stop."""

    roots: dict[str, int]
    interval: float = 0.2
    usage: dict[str, TreeUsage] = field(default_factory=dict)
    rss_series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    _cpu0: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> TreeSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.usage = {name: TreeUsage() for name in self.roots}
        self.rss_series = {name: [] for name in self.roots}
        self._cpu0 = {name: tree_cpu_seconds(pid) for name, pid in self.roots.items()}
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        now = time.monotonic()
        for name, pid in self.roots.items():
            rss = tree_rss_mib(pid)
            self.rss_series[name].append((now, rss))
            u = self.usage[name]
            u.peak_rss_mib = max(u.peak_rss_mib, rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        for name, pid in self.roots.items():
            self.usage[name].cpu_s = tree_cpu_seconds(pid) - self._cpu0[name]
