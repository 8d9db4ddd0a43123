"""Secrets at rest and in output: Fernet encryption and the masker.

:class:`FernetCodec` encrypts variable values and connection passwords and extras before
they are written to the metadata database, under ``[core] fernet_key``. As in Airflow the
setting may hold several keys separated by commas: the first encrypts, every one of them
decrypts (a :class:`~cryptography.fernet.MultiFernet`), so a key is rotated by putting the
new key first, running ``squall rotate-fernet-key`` and then dropping the old key. Without a
key values are stored as they are, and a warning says so.

:class:`SecretsMasker` keeps the secret values this process has seen (connection passwords,
variables whose key looks sensitive: :func:`is_sensitive_key`) and replaces them with
``***`` in text; :class:`RedactingFilter` applies it to log records, so a task log never
shows them. The registry is per process, like Airflow's: :func:`masker` returns it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any, Final

from squall.common.errors import SquallError

log = logging.getLogger(__name__)

__all__ = [
    "MASK",
    "SENSITIVE_KEY_WORDS",
    "FernetCodec",
    "RedactingFilter",
    "SecretsError",
    "SecretsMasker",
    "generate_fernet_key",
    "is_sensitive_key",
    "masker",
]

MASK: Final = "***"

#: Airflow's ``[core] sensitive_var_conn_names`` defaults: a variable (or extra field) whose
#: name contains one of these, case-insensitively, has its value masked
SENSITIVE_KEY_WORDS: Final = frozenset({
    "access_token", "api_key", "apikey", "authorization", "passphrase", "passwd", "password",
    "private_key", "secret", "token", "keyfile_dict", "service_account",
})

#: values this short are not masked: masking every "1" or "ab" would garble the whole log
MIN_MASKED_LENGTH: Final = 3


class SecretsError(SquallError):
    """A Fernet key is malformed, or a stored value cannot be decrypted with the keys given."""


def is_sensitive_key(name: str) -> bool:
    """Whether a variable or field called ``name`` holds a secret (Airflow's rule: the name
    contains one of :data:`SENSITIVE_KEY_WORDS`)."""
    lowered = name.strip().lower()
    return any(word in lowered for word in SENSITIVE_KEY_WORDS)


def generate_fernet_key() -> str:
    """A new random Fernet key (URL-safe base64 of 32 bytes), for ``[core] fernet_key``."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode("ascii")


class FernetCodec:
    """Encrypts and decrypts stored secrets under ``[core] fernet_key``.

    ``keys`` is the setting's value: empty (no encryption), one key, or several separated by
    commas, the newest first. A malformed key raises :class:`SecretsError` naming its
    position (never its value).
    """

    def __init__(self, keys: str) -> None:
        from cryptography.fernet import Fernet, MultiFernet

        parts = [part.strip() for part in keys.split(",") if part.strip()]
        fernets = []
        for position, part in enumerate(parts, start=1):
            try:
                fernets.append(Fernet(part.encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                raise SecretsError(
                    f"[core] fernet_key: key {position} of {len(parts)} is not a Fernet key "
                    "(32 bytes in URL-safe base64; make one with `squall rotate-fernet-key "
                    "--generate`)") from None
        self._multi = MultiFernet(fernets) if fernets else None
        self.key_count = len(fernets)

    def __repr__(self) -> str:
        return f"<FernetCodec keys={self.key_count}>"

    @property
    def enabled(self) -> bool:
        return self._multi is not None

    def encrypt(self, value: str) -> tuple[str, bool]:
        """``(stored text, is_encrypted)``; the value itself when there is no key."""
        if self._multi is None:
            return value, False
        return self._multi.encrypt(value.encode("utf-8")).decode("ascii"), True

    def decrypt(self, stored: str, is_encrypted: bool, *, what: str) -> str:
        """The value of a stored text; :class:`SecretsError` naming ``what`` when it is
        encrypted and no key given decrypts it."""
        if not is_encrypted:
            return stored
        from cryptography.fernet import InvalidToken

        if self._multi is None:
            raise SecretsError(f"{what} is encrypted but [core] fernet_key is not set")
        try:
            return self._multi.decrypt(stored.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretsError(
                f"{what} cannot be decrypted with the keys of [core] fernet_key (was the "
                "key that encrypted it removed?)") from None

    def rotate(self, stored: str, is_encrypted: bool, *, what: str) -> tuple[str, bool]:
        """Re-encrypt a stored text under the first key (encrypting a plain one)."""
        if self._multi is None:
            raise SecretsError("[core] fernet_key is not set: there is no key to rotate to")
        if not is_encrypted:
            return self.encrypt(stored)
        from cryptography.fernet import InvalidToken

        try:
            return self._multi.rotate(stored.encode("ascii")).decode("ascii"), True
        except InvalidToken:
            raise SecretsError(
                f"{what} cannot be decrypted with the keys of [core] fernet_key") from None


class SecretsMasker:
    """The secret values seen in this process, and :meth:`mask` to hide them in text."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: Any, name: str | None = None) -> None:
        """Remember ``value`` as a secret, as Airflow's ``mask_secret(value, name)`` does: a
        string when ``name`` is None or sensitive (:func:`is_sensitive_key`); in a dict, each
        value named by its key; in a list, each item under ``name``."""
        found = list(_secret_strings(value, name))
        with self._lock:
            new = [v for v in found if v not in self._values]
            if not new:
                return
            self._values.update(new)
            # longest first, so a secret containing another is masked whole
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def mask(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def redact(self, value: Any, name: str | None = None) -> Any:
        """A copy of ``value`` (a string, or nested dicts and lists of them) with every known
        secret masked, and every value under a sensitive key replaced by ``***``."""
        if name is not None and is_sensitive_key(name) and value not in (None, ""):
            return MASK
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {k: self.redact(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.redact(v) for v in value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None


def _secret_strings(value: Any, name: str | None) -> Iterable[str]:
    # Airflow's rule: a string is a secret when it has no name or a sensitive one; a dict's
    # values are named by their keys
    if isinstance(value, str):
        if len(value) >= MIN_MASKED_LENGTH and (name is None or is_sensitive_key(name)):
            yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _secret_strings(item, str(key))
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from _secret_strings(item, name)


_MASKER = SecretsMasker()


def masker() -> SecretsMasker:
    """This process's masker (one per process, as in Airflow: secrets seen by a task are
    masked in everything it logs)."""
    return _MASKER


class RedactingFilter(logging.Filter):
    """A logging filter that masks the process's known secrets in each record: its message
    (arguments merged in) and its traceback text."""

    def __init__(self, secrets: SecretsMasker | None = None) -> None:
        super().__init__()
        self._secrets = secrets or _MASKER

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets._pattern is None:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler to report
            return True
        masked = self._secrets.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._secrets.mask(record.exc_text)
        return True
