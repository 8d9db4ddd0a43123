"""``python -m bench.parse_files``: the isolated parse alone, on W5's generated DAG files.

Writes ``--files`` files with :func:`bench.many_files.write_dag_file` into a temporary
folder and calls :func:`squall.dag_processing.dagbag.parse_files_isolated` on them twice:
a first pass, then a pass with ``previous=`` the first pass's fingerprints (nothing
changed). For each pass: wall seconds, and CPU seconds (user + system) of this process and
of its (reaped) children, from :func:`resource.getrusage`. No cluster, no database; the
process imports the DAG processor's modules first so that what it forks is about the
processor's size. Nothing is recorded; the figures are printed.
"""

from __future__ import annotations

import argparse
import inspect
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import squall.dag_processing.sync  # noqa: F401  (the processor's imports, for its fork size)
from bench.many_files import write_dag_file
from squall.dag_processing.dagbag import ParseResult, parse_files_isolated


def _cpu() -> tuple[float, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _pass(label: str, files: list[Path], folder: Path, kwargs: dict[str, Any]) -> ParseResult:
    self0, kids0 = _cpu()
    t0 = time.monotonic()
    result = parse_files_isolated(files, folder, 30.0, **kwargs)
    wall = time.monotonic() - t0
    self1, kids1 = _cpu()
    print(f"{label:<10} wall {wall:6.2f} s  cpu self {self1 - self0:6.2f} s  "
          f"children {kids1 - kids0:6.2f} s  total {self1 - self0 + kids1 - kids0:6.2f} s  "
          f"dags {len(result.serialized)}  unchanged {len(result.unchanged)}  "
          f"errors {len(result.import_errors)}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.parse_files")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--parallelism", type=int, default=None)
    parser.add_argument("--files-per-child", type=int, default=None)
    parser.add_argument("--nice", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    kwargs: dict[str, Any] = {"parallelism": args.parallelism}
    accepted = inspect.signature(parse_files_isolated).parameters
    for name in ("files_per_child", "nice"):
        value = getattr(args, name)
        if value is not None:
            if name not in accepted:
                raise SystemExit(f"this parse_files_isolated has no {name}")
            kwargs[name] = value
    with tempfile.TemporaryDirectory(prefix="squall-parse-bench-") as tmp:
        folder = Path(tmp)
        files = [write_dag_file(folder, n) for n in range(args.files)]
        print(f"{args.files} files, {kwargs}", flush=True)
        for _ in range(args.repeat):
            first = _pass("first", files, folder, kwargs)
            known = {path: stat.fingerprint for path, stat in first.file_stats.items()}
            _pass("unchanged", files, folder, {**kwargs, "previous": known})
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"parent peak RSS {rss:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
