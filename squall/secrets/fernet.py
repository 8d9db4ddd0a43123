"""Secrets at rest: Fernet encryption.

:class:`FernetCodec` encrypts variable values and connection passwords and extras before
they are written to the metadata database, under ``[core] fernet_key``. As in Airflow the
setting may hold several keys separated by commas: the first encrypts, every one of them
decrypts (a :class:`~cryptography.fernet.MultiFernet`), so a key is rotated by putting the
new key first, running ``squall rotate-fernet-key`` and then dropping the old key. Without a
key values are stored as they are, and a warning says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from squall.common.errors import SquallError
from squall.common.settings import fernet_keys

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

__all__ = ["FernetCodec", "SecretsError", "generate_fernet_key"]


class SecretsError(SquallError):
    """A Fernet key is malformed, or a stored value cannot be decrypted with the keys given."""


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
        try:
            fernets = fernet_keys(keys)
        except ValueError as exc:
            raise SecretsError(f"[core] fernet_key: {exc}") from None
        self._multi: MultiFernet | None = None
        if fernets:
            from cryptography.fernet import MultiFernet

            self._multi = MultiFernet(fernets)
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
