"""Password hashing for the API's users: salted scrypt (memory-hard, in the standard
library), stored as ``scrypt$N$r$p$<salt b64>$<hash b64>``; checked in constant time.

Hashing costs about 16 MiB and tens of milliseconds on purpose; the API keeps a short-lived
memo of credentials it has checked (:class:`CheckedCredentials`) so that a client sending
basic auth with every request does not pay it each time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time

#: scrypt's cost parameters for new hashes (OWASP's minimum for scrypt: N=2^17 is their
#: first choice; 2^14 with r=8 is the classic interactive setting, 16 MiB)
SCRYPT_N = 2 ** 14
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
_MAXMEM = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """A new salted scrypt hash of ``password``."""
    salt = secrets.token_bytes(_SALT_BYTES)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                         maxmem=_MAXMEM, dklen=_KEY_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (a :func:`hash_password` value); a malformed
    ``stored`` never matches."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                                r=int(r), p=int(p), maxmem=_MAXMEM, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


class CheckedCredentials:
    """Credentials checked recently, for ``ttl`` seconds: a keyed digest of (username,
    password, stored hash) so that neither the password nor a fast hash of it is kept, and
    a changed or deleted user's hash no longer matches."""

    def __init__(self, ttl: float = 60.0, max_entries: int = 1024) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._key = secrets.token_bytes(32)
        self._seen: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def _digest(self, username: str, password: str, stored: str) -> bytes:
        return hmac.new(self._key, "\0".join((username, password, stored)).encode(),
                        hashlib.sha256).digest()

    def check(self, username: str, password: str, stored: str) -> bool:
        digest = self._digest(username, password, stored)
        now = time.monotonic()
        with self._lock:
            until = self._seen.get(digest)
            if until is not None and until > now:
                return True
        if not check_password(password, stored):
            return False
        with self._lock:
            if len(self._seen) >= self._max:
                self._seen = {d: t for d, t in self._seen.items() if t > now}
                if len(self._seen) >= self._max:
                    self._seen.clear()
            self._seen[digest] = now + self._ttl
        return True
