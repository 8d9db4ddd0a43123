"""Fault-injection helpers: services a test owns and may break, and ways to observe damage.

* :class:`PrivatePostgres` -- a throwaway PostgreSQL cluster (``initdb`` / ``pg_ctl``) on a
  free port, trust authentication, that a test may stop, restart or crash. Run as the
  ``postgres`` user when the tests run as root (``initdb`` refuses root).
* :class:`PersistentRedisServer` -- a private redis-server with an append-only file, so a
  stop/start keeps the queued messages (a restart of a real broker, not a wipe).
* :class:`TcpProxy` -- a small TCP proxy in front of a server; :meth:`TcpProxy.cut` makes it
  a black hole (open connections are dropped, new ones are accepted and never answered),
  :meth:`TcpProxy.restore` forwards again.
* :class:`StatsdListener` -- a UDP socket the test binds, for ``[metrics] statsd_host/port``.
* :func:`settings_env` -- ``SQUALL__SECTION__KEY`` variables for the settings this checkout
  knows (an unknown key would make every process refuse to start; a setting of a mechanism
  not built yet is left out, so its test fails on the missing behaviour, not on start-up).
* execution-log helpers: each task appends ``task_id run_id try_number pid`` to a file.
"""

from __future__ import annotations

import glob
import os
import pwd
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.services import RedisServer, free_port, wait_until

# --------------------------------------------------------------------------- settings


def known_setting(section: str, key: str) -> bool:
    from squall.common.settings import _SECTIONS

    model = _SECTIONS.get(section)
    return model is not None and key in model.model_fields


def settings_env(values: dict[str, dict[str, object]]) -> dict[str, str]:
    """``{"scheduler": {"zombie_threshold": 3}}`` -> environment variables, keeping only
    the keys the settings model of this checkout has."""
    env: dict[str, str] = {}
    for section, keys in values.items():
        for key, value in keys.items():
            if known_setting(section, key):
                text = str(value).lower() if isinstance(value, bool) else str(value)
                env[f"SQUALL__{section.upper()}__{key.upper()}"] = text
    return env


# --------------------------------------------------------------------------- executions


@dataclass(frozen=True)
class Execution:
    task_id: str
    run_id: str
    try_number: int
    pid: int


def read_executions(path: Path) -> list[Execution]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            out.append(Execution(parts[0], parts[1], int(parts[2]), int(parts[3])))
    return out


def execution_counts(path: Path, run_id: str | None = None) -> Counter[tuple[str, int]]:
    """(task_id, try_number) -> how many times that try started executing (of one run)."""
    return Counter((e.task_id, e.try_number) for e in read_executions(path)
                   if run_id is None or e.run_id == run_id)


def process_gone(pid: int) -> bool:
    """True when ``pid`` does not exist or is a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def kill_process_group(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of this test session's own (see the module docstring)."""

    port: int = field(default_factory=free_port)
    root: Path | None = None
    bindir: Path | None = None
    user: str | None = None  # the OS user the server runs as (None: this one)

    def __post_init__(self) -> None:
        self.bindir = self.bindir or _pg_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        if os.geteuid() == 0 and self.user is None:
            self.user = "postgres"

    @property
    def datadir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        assert self.root is not None
        return self.root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = list(args)
        if self.user is not None and os.geteuid() == 0:
            argv = ["runuser", "-u", self.user, "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False, cwd="/")
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n"
                               f"{proc.stderr}\n{self._log_tail()}")
        return proc

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def init(self) -> None:
        assert self.bindir is not None
        # a directory the server's user can write, outside pytest's root-only tmp tree
        self.root = Path(tempfile.mkdtemp(prefix="squall-faults-pg-"))
        if self.user is not None and os.geteuid() == 0:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-sync")
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       "unix_socket_directories = ''\nfsync = off\n"
                       "synchronous_commit = off\nfull_page_writes = off\n"
                       "max_connections = 100\n")

    def start(self, timeout: float = 30) -> None:
        assert self.bindir is not None
        if self.root is None:
            self.init()
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l",
                  str(self.logfile), "-w", "-t", str(int(timeout)), "start", timeout=timeout + 5)
        wait_until(self.accepting, timeout, message=f"PostgreSQL on port {self.port}")

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        """``mode``: smart / fast / immediate (immediate is a crash: recovery on start)."""
        assert self.bindir is not None
        if self.root is None or not (self.datadir / "postmaster.pid").exists():
            return
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w",
                  "-t", str(int(timeout)), "stop", timeout=timeout + 5)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def create_database(self, name: str) -> str:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None


# --------------------------------------------------------------------------- Redis


class PersistentRedisServer(RedisServer):
    """A private redis-server whose data survive a stop/start (append-only file,
    ``appendfsync always``): stopping it is a broker outage, not a broker wipe."""

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        import redis

        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir),
             "--logfile", str(self.workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)

        def up() -> bool:
            try:
                return bool(client.ping()) and client.info("persistence")["loading"] == 0
            except redis.RedisError:
                return False

        wait_until(up, timeout, message=f"redis-server on port {self.port}")
        client.close()


# --------------------------------------------------------------------------- TCP proxy


class TcpProxy:
    """Forwards ``127.0.0.1:listen_port`` to ``target`` on a thread of its own.

    :meth:`cut` drops every open connection and turns the proxy into a black hole: new
    connections are accepted and never answered (what a partitioned network looks like to
    the client; a refused connection would be kinder). :meth:`restore` forwards again.
    """

    def __init__(self, listen_port: int, target: tuple[str, int]) -> None:
        self.listen_port = listen_port
        self.target = target
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._held: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", listen_port))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self._thread = threading.Thread(target=self._loop, name="TcpProxy", daemon=True)
        self._thread.start()

    @property
    def url_host_port(self) -> str:
        return f"127.0.0.1:{self.listen_port}"

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for sock in list(self._pairs):
                self._close(sock)

    def restore(self) -> None:
        self._cut.clear()
        with self._lock:
            for sock in self._held:
                sock.close()
            self._held.clear()

    def close(self, timeout: float = 5) -> None:
        self._stop.set()
        self._thread.join(timeout)
        with self._lock:
            for sock in list(self._pairs):
                self._close(sock)
            for sock in self._held:
                sock.close()
            self._held.clear()
        self._listener.close()

    def _close(self, sock: socket.socket) -> None:
        peer = self._pairs.pop(sock, None)
        if peer is not None:
            self._pairs.pop(peer, None)
            peer.close()
        sock.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                socks = [s for s in self._pairs if s.fileno() >= 0]
            sel = selectors.DefaultSelector()
            sel.register(self._listener, selectors.EVENT_READ)
            for s in socks:
                sel.register(s, selectors.EVENT_READ)
            try:
                ready = sel.select(0.05)
            finally:
                sel.close()
            for key, _ in ready:
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                else:
                    self._pump(sock)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        with self._lock:
            if self._cut.is_set():
                self._held.append(client)  # accepted, never answered
                return
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.close()
            return
        with self._lock:
            self._pairs[client] = upstream
            self._pairs[upstream] = client

    def _pump(self, sock: socket.socket) -> None:
        with self._lock:
            peer = self._pairs.get(sock)
            if peer is None:
                return
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data or self._cut.is_set():
                self._close(sock)
                return
            try:
                peer.sendall(data)
            except OSError:
                self._close(sock)


# --------------------------------------------------------------------------- StatsD


class StatsdListener:
    """A UDP socket on a free port collecting StatsD lines (``name:value|type``)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="StatsdListener", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.lines.extend(data.decode(errors="replace").splitlines())

    def count(self, name: str) -> float:
        """Sum of the counter ``name`` (full name, prefix included)."""
        total = 0.0
        for line in list(self.lines):
            metric, _, rest = line.partition(":")
            if metric != name:
                continue
            value, _, kind = rest.partition("|")
            if kind.split("|")[0] == "c":
                try:
                    total += float(value)
                except ValueError:
                    pass
        return total

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
