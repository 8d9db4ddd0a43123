"""The worker's log server: each ``squall celery worker`` serves its log folder over HTTP so
that the API can read a try's log from any host (``docs/logs.md``).

``GET /log/<path>`` answers the file at ``<path>`` under the log folder, only when the
request carries ``Authorization: Bearer <token>`` with a log request token for that very
path, signed with the shared ``[api] secret_key`` and not expired
(:mod:`squall.worker.log_signing`); else 403. A path that leaves the folder (``..``, an
absolute path, a symlink out of it) is 403 too; a file that is not there is 404.
``Range: bytes=N-`` (or ``bytes=N-M``) answers part of the file (206), so that a running
try's log can be read as it grows; a range starting at or past the end is 416 with the
file's size in ``Content-Range: bytes */SIZE``.

It is a standard library :class:`~http.server.ThreadingHTTPServer` in a daemon thread of
the worker's main process, bound to all interfaces on ``[logging] worker_log_server_port``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import threading
import weakref
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from squall.worker.log_signing import BadToken, check_log_request

if TYPE_CHECKING:
    from squall.common.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "/log/"
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_CHUNK = 64 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    folder: Path
    secret_key: str

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can hang on a slow resolver
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # the base class prints a traceback to stderr; a reader going away is routine
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            log.debug("log server: %s went away: %s", client_address, exc)
        else:
            log.error("log server: answering %s failed", client_address, exc_info=exc)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "SquallLogServer"
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a client may take to send its request

    def log_message(self, format: str, *args: object) -> None:
        log.debug("log server: %s - %s", self.address_string(), format % args)

    def _refuse(self, status: HTTPStatus, reason: str,
                headers: dict[str, str] | None = None) -> None:
        body = f"{reason}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url_path = urlsplit(self.path).path
        if not url_path.startswith(PREFIX):
            self._refuse(HTTPStatus.NOT_FOUND, "not found: log files are under /log/")
            return
        relative = unquote(url_path[len(PREFIX):])
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            self._refuse(HTTPStatus.FORBIDDEN, "a signed token is required "
                         "(Authorization: Bearer <token>)")
            return
        try:
            check_log_request(self.server.secret_key, relative, token)
        except BadToken as exc:
            log.warning("log server: refused %s from %s: %s", relative,
                        self.address_string(), exc)
            self._refuse(HTTPStatus.FORBIDDEN, f"refused: {exc}")
            return
        target = resolve_inside(self.server.folder, relative)
        if target is None:
            log.warning("log server: refused %s from %s: outside the log folder", relative,
                        self.address_string())
            self._refuse(HTTPStatus.FORBIDDEN, "refused: the path is outside the log folder")
            return
        self._send_file(target, relative)

    def _send_file(self, target: Path, relative: str) -> None:
        try:
            handle = target.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self._refuse(HTTPStatus.NOT_FOUND, f"no such log file: {relative}")
            return
        except OSError as exc:
            self._refuse(HTTPStatus.NOT_FOUND, f"cannot open {relative}: {exc.strerror}")
            return
        with handle:
            size = os.fstat(handle.fileno()).st_size
            start, end, partial = 0, size, False
            wanted = self.headers.get("Range")
            if wanted:
                match = _RANGE.fullmatch(wanted.strip())
                if match is None:
                    self._refuse(HTTPStatus.BAD_REQUEST,
                                 "Range must be bytes=N- or bytes=N-M")
                    return
                start = int(match.group(1))
                if match.group(2):
                    end = min(size, int(match.group(2)) + 1)
                if start >= size or start >= end:
                    self._refuse(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                                 f"the file has {size} bytes",
                                 {"Content-Range": f"bytes */{size}"})
                    return
                partial = True
            length = end - start
            self.send_response(HTTPStatus.PARTIAL_CONTENT if partial else HTTPStatus.OK)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            if self.command == "HEAD":
                return
            handle.seek(start)
            while length > 0:
                chunk = handle.read(min(_CHUNK, length))
                if not chunk:  # truncated meanwhile: the client sees a short body
                    break
                self.wfile.write(chunk)
                length -= len(chunk)


def resolve_inside(folder: Path, relative: str) -> Path | None:
    """``folder / relative`` with symlinks resolved, or None when that is not inside
    ``folder`` (an absolute path, ``..``, a NUL, a symlink pointing out)."""
    if not relative or "\x00" in relative or relative.startswith(("/", "\\")):
        return None
    if any(part in ("..", "") for part in relative.split("/")):
        return None
    base = folder.resolve()
    target = (base / relative).resolve()
    return target if target.is_relative_to(base) and target != base else None


def _close_in_child(server: weakref.ref[_Server]) -> None:
    alive = server()
    if alive is not None:
        alive.socket.close()


class LogServer:
    """Serves ``folder`` on ``host:port`` (port 0: a free one) in a daemon thread until
    :meth:`stop`. Binding happens in the constructor, so a taken port raises
    :class:`OSError` there."""

    def __init__(self, folder: Path, secret_key: str, *, host: str = "0.0.0.0",
                 port: int = 8793) -> None:
        self._server = _Server((host, port), _Handler)
        self._server.folder = folder
        self._server.secret_key = secret_key
        self._thread: threading.Thread | None = None
        # processes forked from this one (the pool, task supervisors) must not keep the
        # port: close the listening socket in them
        own = weakref.ref(self._server)
        os.register_at_fork(after_in_child=lambda: _close_in_child(own))

    @property
    def port(self) -> int:
        return self._server.server_port

    def start(self) -> LogServer:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.5},
                                        name="squall-log-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()


def start_log_server(settings: Settings) -> LogServer | None:
    """The worker's log server for ``settings``, started; None (after logging an error) when
    it cannot listen, so that the worker runs on without it."""
    port = settings.logging.worker_log_server_port
    folder = settings.log_folder
    try:
        server = LogServer(folder, settings.secret_key(), port=port)
    except OSError as exc:
        why = ("another process listens on it" if exc.errno == errno.EADDRINUSE
               else errno.errorcode.get(exc.errno or 0, str(exc)))
        log.error("Worker: cannot serve task logs on port %d (%s); the API cannot read this "
                  "worker's logs unless the log folder is shared. Set [logging] "
                  "worker_log_server_port to a free port.", port, why)
        return None
    log.info("Worker: serving task logs of %s on port %d", folder, server.port)
    return server.start()
