"""Secrets in output: the masker.

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

log = logging.getLogger(__name__)

__all__ = [
    "MASK",
    "SENSITIVE_KEY_WORDS",
    "RedactingFilter",
    "SecretsMasker",
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


def is_sensitive_key(name: str) -> bool:
    """Whether a variable or field called ``name`` holds a secret (Airflow's rule: the name
    contains one of :data:`SENSITIVE_KEY_WORDS`)."""
    lowered = name.strip().lower()
    return any(word in lowered for word in SENSITIVE_KEY_WORDS)


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
