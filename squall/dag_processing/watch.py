"""Which paths under the DAG folder changed: file-system notifications, or a cheap scan.

The DAG processor (:mod:`squall.scheduler.dag_processor_child`) asks a :class:`FolderChanges`
for the paths that changed since it last asked, and decides what they mean (a known DAG file
to parse again, or the folder to list again). Two ways to know (ADR 32):

- **Notifications** (``[scheduler] dag_dir_watch``, the default): the ``watchfiles`` package
  (Rust ``notify``: inotify on Linux, FSEvents on macOS) watches the folder recursively; a
  thread waits for its batches (grouped over up to ``_DEBOUNCE_MS``, handed over once
  nothing new came for ``_STEP_MS``) and wakes the processor's ``select`` through a pipe.
- **A scan** every ``[scheduler] dag_dir_poll_interval`` seconds: the names, sizes and
  modification times of the ``.py`` and ignore files under the folder (``os.scandir``, no
  file read, no ignore rule), compared with the previous scan. Used when notifications are
  disabled, unavailable (``watchfiles`` missing, the inotify watch limit reached, the folder
  missing when the watch starts) or unreliable (the folder on a network file system, where a
  change made on another host sends no notification), and when the watcher thread died.

Neither is the only safety net: the processor still lists the whole folder every
``dag_dir_list_interval`` and ``stat``\\ s every known file every ``file_check_interval``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: file systems on which a change made by another host raises no local notification
NETWORK_FILE_SYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "afs",
    "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "fuse.glusterfs",
    "fuse.juicefs", "fuse.cephfs", "fuse.goofys", "fuse.mountpoint-s3", "efs",
})
#: at most this long between a change and its batch being handed over, in a burst
_DEBOUNCE_MS = 1000
#: a batch is handed over once no change came for this long
_STEP_MS = 200
#: names never worth a look (editor backups and swap files, compiled files)
_JUNK_SUFFIXES = ("~", ".swp", ".swx", ".pyc", ".pyo", ".tmp")


def network_file_system(path: Path, mounts: str = "/proc/self/mounts") -> str | None:
    """The type of the network file system ``path`` is on, or None (local, or unknown)."""
    real = os.path.realpath(path)
    try:
        with open(mounts, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    best, best_type = "", ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fields[2]
    return best_type if best_type in NETWORK_FILE_SYSTEMS else None


def _worth_a_look(path: str) -> bool:
    parts = path.split(os.sep)
    return not (path.endswith(_JUNK_SUFFIXES) or "__pycache__" in parts or ".git" in parts)


class FolderWatcher:
    """Notifications for everything under ``root``, from a thread (see the module docstring).

    :meth:`fileno` becomes readable when there are paths to :meth:`take`, or when the thread
    ended (:attr:`error` then says why). The thread takes no lock but its own and logs
    nothing: the processor forks parse children while it runs, and a child must not inherit
    a lock (a logging handler's, a stream's) that this thread held at that instant.
    """

    def __init__(self, root: Path) -> None:
        from watchfiles._rust_notify import RustNotify  # ImportError: no notifications

        self.root = root
        if not root.exists():  # (RustNotify ignoring unreadable folders would not raise)
            raise FileNotFoundError(f"no such folder: {root}")
        # raises here, not in the thread, when the inotify watch limit is reached
        self._notify: Any = RustNotify([str(root)], False, False, 300, True, True)
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._paths: set[str] = set()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="squall-dag-folder-watch",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                changes = self._notify.watch(_DEBOUNCE_MS, _STEP_MS, 0, self._stop)
                if isinstance(changes, str):  # "stop" (or "timeout", "signal": go on)
                    continue
                paths = {path for _, path in changes if _worth_a_look(path)}
                if paths:
                    with self._lock:
                        self._paths |= paths
                    self._wake()
        except BaseException as exc:
            self.error = exc
            self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._write_fd, b"x")
        except OSError:
            pass  # the pipe is full (already readable) or closed

    def fileno(self) -> int:
        return self._read_fd

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    def take(self) -> set[Path]:
        """The paths changed since the last call (absolute, under the watched path)."""
        try:
            while os.read(self._read_fd, 4096):
                pass
        except OSError:
            pass
        with self._lock:
            paths, self._paths = self._paths, set()
        return {Path(path) for path in paths}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * _DEBOUNCE_MS / 1000)
        try:
            self._notify.close()
        except Exception:  # already closed by a failed watch
            pass
        if not self._thread.is_alive():  # else it may still write: leave the pipe be
            for fd in (self._read_fd, self._write_fd):
                os.close(fd)


#: what a scan records of a path: (modification time, size); directories: (0, 0)
_Entry = tuple[int, int]


def scan_folder(root: Path, ignore_file_name: str) -> dict[str, _Entry]:
    """The ``.py`` files, ignore files and directories under ``root`` (not in hidden
    directories or ``__pycache__``), with their modification times and sizes."""
    found: dict[str, _Entry] = {}
    seen: set[str] = set()
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:  # a symlink loop
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            try:
                if entry.is_dir():
                    if not name.startswith(".") and name != "__pycache__":
                        found[entry.path] = (0, 0)
                        stack.append(entry.path)
                elif (name.endswith(".py") and not name.startswith(".")) \
                        or name == ignore_file_name:
                    st = entry.stat()
                    found[entry.path] = (st.st_mtime_ns, st.st_size)
            except OSError:  # gone meanwhile: the next scan sees it
                continue
    return found


def _identity(root: Path) -> tuple[str, int, int] | None:
    """What the folder is: where it resolves to, its device and inode (None: missing)."""
    real = os.path.realpath(root)
    try:
        st = os.stat(real)
    except OSError:
        return None
    return real, st.st_dev, st.st_ino


class FolderChanges:
    """The paths under the DAG folder that changed, by notifications or by a scan (see the
    module docstring); falls back to the scan when notifications fail, and tries them again
    on :meth:`retry`."""

    def __init__(self, root: Path, *, watch: bool, poll_interval: float,
                 ignore_file_name: str) -> None:
        self.root = root
        self._want_watch = watch
        self._poll_interval = poll_interval
        self._ignore_file_name = ignore_file_name
        self._watcher: FolderWatcher | None = None
        self._scan: dict[str, _Entry] | None = None
        self._scanned_at = -math.inf
        self._identity = _identity(root)
        self._start_watch(first=True)

    @property
    def mode(self) -> str:
        """``notify`` or ``poll``."""
        return "notify" if self._watcher is not None else "poll"

    def _start_watch(self, *, first: bool = False, attempt: bool = True) -> None:
        """Start watching (or, failing that, take the scan's first picture); a failure is
        logged the first time, at debug level on a retry."""
        reason, level = "[scheduler] dag_dir_watch is off", logging.INFO
        if self._want_watch and not attempt:
            reason, level = "the watcher stopped", logging.DEBUG
        elif self._want_watch:
            level = logging.WARNING
            fs_type = network_file_system(self.root)
            if fs_type is not None:
                reason, level = f"it is on a network file system ({fs_type})", logging.INFO
            else:
                try:
                    self._watcher = FolderWatcher(self.root)
                except ImportError:
                    reason = "the watchfiles package is not installed"
                except Exception as exc:  # FileNotFoundError, the inotify watch limit, ...
                    reason = f"{type(exc).__name__}: {exc}"
        if self._watcher is not None:
            self._scan = None
            log.info("DAG folder %s: watched for changes (file-system notifications)",
                     self.root)
            return
        if self._scan is None:
            self._scan = scan_folder(self.root, self._ignore_file_name)
            self._scanned_at = time.monotonic()
        log.log(level if first else logging.DEBUG, "DAG folder %s: no file-system "
                "notifications (%s); scanned every %g s", self.root, reason,
                self._poll_interval)

    def fileno(self) -> int | None:
        """A file descriptor readable when there are changes to :meth:`collect`."""
        return self._watcher.fileno() if self._watcher is not None else None

    @property
    def deadline(self) -> float | None:
        """When the next scan is due (monotonic; None: notifications, nothing due)."""
        return None if self._watcher is not None else self._scanned_at + self._poll_interval

    def collect(self, now: float) -> tuple[set[Path], bool]:
        """The paths that changed, and whether everything may have changed (the folder
        itself was replaced: a new symlink target, the watcher restarted)."""
        everything = False
        identity = _identity(self.root)
        if identity != self._identity:
            # git-sync swapped the symlink, the volume was mounted again, the folder was
            # deleted or created: the watch (on the old folder) is of no use
            log.info("DAG folder %s was replaced (now %s)", self.root,
                     identity[0] if identity else "missing")
            self._identity = identity
            self.close()
            self._start_watch(attempt=identity is not None)
            everything = True
        watcher = self._watcher
        if watcher is not None:
            paths = watcher.take()
            if watcher.alive:
                return paths, everything
            log.warning("DAG folder %s: the notification watcher stopped (%s: %s); scanned "
                        "every %g s instead", self.root, type(watcher.error).__name__,
                        watcher.error, self._poll_interval)
            self.close()
            self._start_watch(attempt=False)  # the scan's first picture; retry() tries again
            return paths, True
        if now < self._scanned_at + self._poll_interval:
            return set(), everything
        self._scanned_at = now
        scan = scan_folder(self.root, self._ignore_file_name)
        before, self._scan = self._scan, scan
        changed = {Path(path) for path in (before or {}).keys() | scan.keys()
                   if (before or {}).get(path) != scan.get(path)}
        return changed, everything

    def retry(self) -> None:
        """Try notifications again if they are wanted and failed (at a full listing)."""
        if self._watcher is None and self._want_watch:
            self._start_watch()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

