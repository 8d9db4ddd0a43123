"""Signed tokens shared by the API and the workers' log servers (``docs/logs.md``).

A token is ``<payload>.<signature>``: the payload is a JSON object in URL-safe base64
(no padding), the signature an HMAC-SHA256 over ``<purpose>:<payload>`` under the
deployment's ``[api] secret_key``, in hex. The purpose keeps a token made for one use
(``log-request``: the API asking a worker for a file; ``log-continuation``: where a reader
of a log is up to) from being accepted for another.

A log request token names the one file it is for (its path relative to the log folder)
and when it expires; the log server checks both.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any

#: the purpose of a token that lets the API read one file from a worker's log server
LOG_REQUEST = "log-request"
#: the purpose of the API's continuation tokens (a reader's position in a log)
LOG_CONTINUATION = "log-continuation"
#: how long a log request token is valid (seconds)
LOG_REQUEST_TTL = 30.0
#: how far the clocks of the API's host and a worker's host may disagree (seconds)
CLOCK_SKEW = 30.0


class BadToken(Exception):
    """A token that is malformed, signed with another key or for another purpose, expired,
    or for another file; the message says which."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret_key: str, purpose: str, payload: str) -> str:
    message = f"{purpose}:{payload}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


def seal(secret_key: str, purpose: str, data: dict[str, Any]) -> str:
    """``data`` (JSON-able) as a token signed for ``purpose``."""
    payload = _b64(json.dumps(data, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_signature(secret_key, purpose, payload)}"


def unseal(secret_key: str, purpose: str, token: str) -> dict[str, Any]:
    """The data of a token made by :func:`seal` for ``purpose`` under ``secret_key``;
    :class:`BadToken` otherwise."""
    payload, dot, signature = token.strip().partition(".")
    if not (payload and dot and signature):
        raise BadToken("malformed token")
    if not hmac.compare_digest(signature, _signature(secret_key, purpose, payload)):
        raise BadToken("bad signature (another secret key, or not a token for this)")
    try:
        data = json.loads(_unb64(payload))
    except (binascii.Error, ValueError) as exc:
        raise BadToken(f"undecodable token payload: {exc}") from None
    if not isinstance(data, dict):
        raise BadToken("token payload is not an object")
    return data


def sign_log_request(secret_key: str, path: str, *, now: float | None = None,
                     ttl: float = LOG_REQUEST_TTL) -> str:
    """A token that lets its bearer read ``path`` (relative to a worker's log folder, with
    ``/`` separators) from a log server for ``ttl`` seconds."""
    expires = int((time.time() if now is None else now) + ttl)
    return seal(secret_key, LOG_REQUEST, {"path": path, "exp": expires})


def check_log_request(secret_key: str, path: str, token: str, *,
                      now: float | None = None) -> None:
    """Raise :class:`BadToken` unless ``token`` is a log request token for ``path``
    that has not expired (allowing :data:`CLOCK_SKEW`)."""
    data = unseal(secret_key, LOG_REQUEST, token)
    expires = data.get("exp")
    if not isinstance(expires, int):
        raise BadToken("token without an expiry")
    if (time.time() if now is None else now) > expires + CLOCK_SKEW:
        raise BadToken("token expired")
    if data.get("path") != path:
        raise BadToken("token made for another file")
