"""Small helpers for the processes Squall forks (supervisors, task processes, callback
children)."""

from __future__ import annotations

import sys


def flush_std_streams() -> None:
    """Flush stdout and stderr before a forked child leaves with ``os._exit`` (which skips
    the interpreter's own flushing); a closed or broken stream is ignored."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
