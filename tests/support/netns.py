"""Several hosts on one machine: network namespaces joined by a bridge (tests/multihost).

:class:`HostLab` builds, with ``ip`` as root, one bridge in the root namespace and one
network namespace per "host", each joined to the bridge by a veth pair whose host end stays
in the root namespace::

    root namespace                         namespace sqmh<run>h1 (host h1)
      bridge sqmh<run>br  10.X.Y.1/24 --- veth sqmh<run>h1 ==== eth0 10.X.Y.11/24, lo
                                      --- veth sqmh<run>h2 ==== (host h2) eth0 10.X.Y.12/24
      forwarders 10.X.Y.1:port -> 127.0.0.1:port (PostgreSQL, Redis)

The machine's PostgreSQL and the test's Redis listen on 127.0.0.1 only, so a host reaches
them through a :class:`TcpForwarder` on the bridge address (a thread relaying bytes; it is
stopped at teardown). :meth:`HostLab.cut` takes a host's veth end down: its packets are
dropped, open TCP connections hang as in a real partition (nothing is reset);
:meth:`HostLab.restore` brings it back.

Every name starts with :data:`PREFIX` followed by the pytest process's pid, so
:func:`sweep_stale` removes what an earlier, crashed run left behind (its pid is gone)
without touching a concurrent run's. Traffic only goes to 127.0.0.1 and to addresses this
module assigned.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import re
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: every bridge, veth and namespace this module makes is named PREFIX<pid><seq>...
PREFIX = "sqmh"


class NetnsUnavailable(RuntimeError):
    """``ip netns`` cannot be used here (not root, no ``ip``, no permission)."""


def ip(*args: str, check: bool = True, netns: str | None = None) -> str:
    command = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()}")
    return proc.stdout


def check_available() -> None:
    """Raise :class:`NetnsUnavailable` with the reason when namespaces cannot be made."""
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        raise NetnsUnavailable("the ip and unshare commands are needed (iproute2, util-linux)")
    if os.geteuid() != 0:
        raise NetnsUnavailable("ip netns needs root (run the multihost tests as root)")
    probe = f"{PREFIX}{os.getpid()}probe"
    try:
        ip("netns", "add", probe)
    except RuntimeError as exc:
        raise NetnsUnavailable(f"ip netns is not permitted here: {exc}") from None
    ip("netns", "delete", probe, check=False)


# --------------------------------------------------------------------------- leftovers

_OURS = re.compile(rf"^{PREFIX}(\d+)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def our_namespaces() -> list[str]:
    out = ip("netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines()
            if line.strip() and _OURS.match(line.split()[0])]


def our_links() -> list[str]:
    out = ip("-o", "link", "show", check=False)
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@", 1)[0]
        if _OURS.match(name):
            names.append(name)
    return names


def owned_by(name: str, run: str) -> bool:
    return name.startswith(f"{PREFIX}{run}")


def sweep_stale() -> list[str]:
    """Delete the namespaces and links of earlier test processes that are gone (named
    PREFIX<pid>... with that pid not running); what was removed."""
    removed = []
    for name in our_namespaces():
        match = _OURS.match(name)
        if match and not _alive_owner(match.group(1)):
            ip("netns", "delete", name, check=False)
            removed.append(name)
    for name in our_links():
        match = _OURS.match(name)
        if match and not _alive_owner(match.group(1)):
            ip("link", "delete", name, check=False)
            removed.append(name)
    if removed:
        log.warning("removed leftovers of earlier multihost runs: %s", ", ".join(removed))
    return removed


def _alive_owner(digits: str) -> bool:
    # a run id is the test process's pid followed by a sequence letter
    return _pid_alive(int(digits))


# --------------------------------------------------------------------------- forwarder


class TcpForwarder:
    """Relays TCP connections from ``listen`` to ``target``, one thread per direction.

    :meth:`close` closes the listener and every relayed connection and joins the threads.
    """

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen = listen
        self.target = target
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(listen)
        self._listener.listen(128)
        self._listener.settimeout(0.2)
        self._spawn(self._accept_loop, "accept")

    @property
    def port(self) -> int:
        return self.listen[1]

    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args,  # type: ignore[arg-type]
                                  name=f"TcpForwarder-{self.listen[1]}-{name}", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._stop.is_set():
                    client.close()
                    upstream.close()
                    return
                self._socks.update((client, upstream))
            self._spawn(self._pump, "up", client, upstream)
            self._spawn(self._pump, "down", upstream, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
            threads = list(self._threads)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(timeout)
        for sock in socks:
            sock.close()
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            raise RuntimeError(f"TcpForwarder threads did not stop: {stuck}")


# --------------------------------------------------------------------------- the lab


def _pick_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13 that no address or route of this machine overlaps."""
    used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for line in (ip("-4", "-o", "addr", "show", check=False) + "\n"
                 + ip("-4", "route", "show", "table", "all", check=False)).splitlines():
        for word in line.split():
            try:
                used.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    space = list(ipaddress.IPv4Network("10.200.0.0/13").subnets(new_prefix=24))
    random.shuffle(space)
    for net in space:
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free /24 in 10.200.0.0/13 for the multihost bridge")


@dataclass
class Host:
    name: str  # the hostname its processes see (h1, h2...)
    netns: str
    veth: str  # the end in the root namespace, on the bridge
    address: str


@dataclass
class HostLab:
    """A bridge and ``hosts`` namespaces (see the module docstring); :meth:`destroy`
    removes everything it made and raises when something is left."""

    run: str  # PREFIX + run starts every name
    hosts: int
    subnet: ipaddress.IPv4Network = field(default_factory=_pick_subnet)
    members: dict[str, Host] = field(default_factory=dict)
    forwarders: list[TcpForwarder] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"{PREFIX}{self.run}br"

    @property
    def gateway(self) -> str:
        """The bridge's address: the root namespace as the hosts see it."""
        return str(self.subnet.network_address + 1)

    def create(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for index in range(1, self.hosts + 1):
            name = f"h{index}"
            host = Host(name=name, netns=f"{PREFIX}{self.run}{name}",
                        veth=f"{PREFIX}{self.run}{name}",
                        address=str(self.subnet.network_address + 10 + index))
            peer = f"{PREFIX}{self.run}p{index}"
            ip("netns", "add", host.netns)
            self.members[name] = host
            ip("link", "add", host.veth, "type", "veth", "peer", "name", peer)
            ip("link", "set", peer, "netns", host.netns)
            ip("link", "set", peer, "name", "eth0", netns=host.netns)
            ip("addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", "eth0",
               netns=host.netns)
            ip("link", "set", "lo", "up", netns=host.netns)
            ip("link", "set", "eth0", "up", netns=host.netns)
            ip("link", "set", host.veth, "master", self.bridge)
            ip("link", "set", host.veth, "up")

    def forward(self, target_port: int) -> TcpForwarder:
        """A forwarder from the bridge address (a free port) to ``127.0.0.1:target_port``."""
        with socket.socket() as probe:
            probe.bind((self.gateway, 0))
            port = int(probe.getsockname()[1])
        forwarder = TcpForwarder((self.gateway, port), ("127.0.0.1", target_port))
        self.forwarders.append(forwarder)
        return forwarder

    def host(self, name: str) -> Host:
        return self.members[name]

    def cut(self, name: str) -> None:
        """Partition host ``name``: its link goes down, packets are dropped."""
        ip("link", "set", self.members[name].veth, "down")

    def restore(self, name: str) -> None:
        ip("link", "set", self.members[name].veth, "up")

    def is_cut(self, name: str) -> bool:
        return "UP" not in ip("-br", "link", "show", self.members[name].veth).split()[1:2]

    def command(self, name: str, argv: list[str]) -> list[str]:
        """``argv`` run on host ``name``: in its namespace, with its own UTS namespace whose
        hostname is ``name``."""
        host = self.members[name]
        script = 'hostname "$0" && exec "$@"'
        return ["ip", "netns", "exec", host.netns, "unshare", "--uts", "sh", "-c", script,
                host.name, *argv]

    def leftovers(self) -> list[str]:
        return ([n for n in our_namespaces() if owned_by(n, self.run)]
                + [n for n in our_links() if owned_by(n, self.run)])

    def destroy(self) -> None:
        """Stop the forwarders, delete the namespaces (their veth ends go with them) and the
        bridge; raise AssertionError naming anything of this lab still there."""
        errors = []
        for forwarder in self.forwarders:
            try:
                forwarder.close()
            except RuntimeError as exc:
                errors.append(str(exc))
        for host in self.members.values():
            ip("link", "delete", host.veth, check=False)
            ip("netns", "delete", host.netns, check=False)
        ip("link", "delete", self.bridge, check=False)
        left = self.leftovers()
        if left:
            errors.append(f"left behind: {', '.join(left)}")
        if errors:
            raise AssertionError("the multihost lab was not cleaned up: " + "; ".join(errors))
