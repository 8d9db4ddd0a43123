"""The lab itself: it removes everything it made, even after a failure, and a later run
sweeps what a crashed run left (only names of this suite's prefix whose pid is gone)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.support.netns import PREFIX, HostLab, ip, our_links, our_namespaces, sweep_stale

# one xdist process runs the multihost tests, one lab at a time
pytestmark = [pytest.mark.multihost, pytest.mark.integration, pytest.mark.xdist_group("multihost")]


def _nothing_of(run: str) -> bool:
    return not [n for n in our_namespaces() + our_links() if n.startswith(f"{PREFIX}{run}")]


def test_destroy_removes_everything_even_after_a_failure(netns_permitted: None) -> None:
    """A lab in the middle of things (a host cut off, a forwarder with an open connection,
    a process still running on a host) when its test fails: destroy() leaves nothing."""
    run = f"{os.getpid()}z"
    lab = HostLab(run=run, hosts=2)
    sleeper = None
    with pytest.raises(RuntimeError, match="the test failed here"):
        try:
            lab.create()
            with socket.socket() as server:
                server.bind(("127.0.0.1", 0))
                server.listen(1)
                forwarder = lab.forward(server.getsockname()[1])
                sleeper = subprocess.Popen(lab.command("h1", [
                    sys.executable, "-c",
                    "import socket, time; "
                    f"s = socket.create_connection(({lab.gateway!r}, {forwarder.port}), 5); "
                    "time.sleep(600)"]))
                conn, _ = server.accept()
                conn.close()
            lab.cut("h2")
            assert lab.is_cut("h2") and not lab.is_cut("h1")
            raise RuntimeError("the test failed here")
        finally:
            if sleeper is not None:
                sleeper.kill()
                sleeper.wait(10)
            lab.destroy()
    assert _nothing_of(run), our_namespaces() + our_links()


def test_leftovers_of_a_dead_run_are_swept_and_a_live_ones_kept(netns_permitted: None
                                                                  ) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale_ns, stale_link = f"{PREFIX}{dead.pid}xh1", f"{PREFIX}{dead.pid}xbr"
    live_ns = f"{PREFIX}{os.getpid()}yh1"
    try:
        ip("netns", "add", stale_ns)
        ip("link", "add", stale_link, "type", "bridge")
        ip("netns", "add", live_ns)
        removed = sweep_stale()
        assert {stale_ns, stale_link} <= set(removed)
        assert live_ns not in removed and live_ns in our_namespaces()
        assert stale_ns not in our_namespaces() and stale_link not in our_links()
    finally:
        for name in (stale_ns, live_ns):
            ip("netns", "delete", name, check=False)
        ip("link", "delete", stale_link, check=False)
