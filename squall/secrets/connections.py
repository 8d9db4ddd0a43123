"""Connections: how tasks reach external systems (Airflow's ``Connection``).

:class:`Connection` is the value: ``conn_id``, ``conn_type``, ``host``, ``schema``,
``login``, ``password``, ``port``, ``extra`` (JSON text; :attr:`Connection.extra_dejson`).
It reads and writes Airflow's URI form, ``conn-type://login:password@host:port/schema?k=v``,
each part URL-quoted and the extra as the query (or as ``__extra__=<JSON>`` when it is not a
flat object of strings), and the JSON form of ``AIRFLOW_CONN_*`` variables.

The database side (the ``connection`` table, password and extra Fernet-encrypted) and the
lookup ``BaseHook.get_connection`` and the template context's ``conn`` use (environment
first, then the table) are :mod:`squall.secrets.connection_store`.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from squall.common.errors import SquallError
from squall.secrets.masking import SecretsMasker, masker

log = logging.getLogger(__name__)

__all__ = ["Connection", "ConnectionError_", "ConnectionNotFound"]

#: the query key holding the whole extra as JSON text in a URI (Airflow's ``EXTRA_KEY``)
EXTRA_KEY = "__extra__"
#: the fields of a connection besides its id, in the order files and tables show them
FIELDS = ("conn_type", "description", "host", "login", "password", "schema", "port", "extra")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-_]*://")


class ConnectionError_(SquallError):  # noqa: N801 - not the builtin ConnectionError
    """A connection URI, JSON document or field is malformed; the message says what."""


class ConnectionNotFound(ConnectionError_):
    """No connection with that conn_id is defined (Airflow's AirflowNotFoundException)."""


def _normalise_type(conn_type: str) -> str:
    # Airflow: postgresql:// is the postgres type; a dash in a URI scheme is an underscore
    return "postgres" if conn_type == "postgresql" else conn_type.replace("-", "_")


class Connection:
    """One connection. ``uri`` (Airflow's URI form) fills every field at once and cannot be
    combined with them. ``extra`` is JSON text (a dict is dumped to it)."""

    def __init__(self, conn_id: str | None = None, conn_type: str | None = None,
                 description: str | None = None, host: str | None = None,
                 login: str | None = None, password: str | None = None,
                 schema: str | None = None, port: int | None = None,
                 extra: str | dict[str, Any] | None = None, uri: str | None = None) -> None:
        self.conn_id = conn_id
        self.description = description
        if uri is not None:
            if any(v is not None for v in (conn_type, host, login, password, schema, port,
                                           extra)):
                raise ConnectionError_(
                    f"connection {conn_id}: give either a URI or its fields, not both")
            self._parse_uri(uri)
            return
        self.conn_type = conn_type
        self.host = host
        self.login = login
        self.password = password
        self.schema = schema
        self.port = _port(port, conn_id)
        self.extra = json.dumps(extra) if isinstance(extra, dict) else extra

    def __repr__(self) -> str:  # never the password
        return f"<Connection {self.conn_id} {self.conn_type}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Connection):
            return NotImplemented
        return self.conn_id == other.conn_id and all(
            getattr(self, f) == getattr(other, f) for f in FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    # ------------------------------------------------------------------ URI

    def _parse_uri(self, uri: str) -> None:
        if not _SCHEME.match(uri):
            raise ConnectionError_(
                f"connection {self.conn_id}: {_redact_uri(uri)!r} is not a connection URI "
                "(conn-type://login:password@host:port/schema?extra=value)")
        scheme, _, rest = uri.partition("://")
        protocol = None
        if _SCHEME.match(rest):  # conn-type://protocol://host...: the host keeps its protocol
            protocol, _, rest = rest.partition("://")
        try:
            parts = urlsplit("//" + rest)
            port = parts.port
        except ValueError as exc:
            raise ConnectionError_(
                f"connection {self.conn_id}: {_redact_uri(uri)!r} is not a valid URI: "
                f"{exc}") from None
        self.conn_type = _normalise_type(scheme)
        host = unquote(parts.hostname or "") or None
        self.host = f"{protocol}://{host or ''}" if protocol else host
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        self.schema = unquote(path) or None
        self.login = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.port = port
        self.extra = None
        if parts.query:
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            self.extra = query[EXTRA_KEY] if EXTRA_KEY in query else json.dumps(query)

    def get_uri(self) -> str:
        """The connection in Airflow's URI form (what :class:`Connection` ``(uri=...)``
        reads back)."""
        uri = f"{(self.conn_type or '').lower().replace('_', '-')}://" if self.conn_type \
            else "//"
        host = self.host
        if host and "://" in host:
            protocol, host = host.split("://", 1)
            uri += f"{protocol}://"
        authority = ""
        if self.login is not None:
            authority += quote(self.login, safe="")
        if self.password is not None:
            authority += ":" + quote(self.password, safe="")
        if authority:
            uri += authority + "@"
        host_block = quote(host, safe="") if host else ""
        if self.port:
            host_block += f"@:{self.port}" if not host_block and not authority \
                else f":{self.port}"
        if self.schema:
            host_block += "/" + quote(self.schema, safe="")
        uri += host_block
        if self.extra:
            sep = "?" if self.schema else "/?"
            flat = self._flat_extra()
            uri += sep + (urlencode(flat) if flat is not None
                          else urlencode({EXTRA_KEY: self.extra}))
        return uri

    def _flat_extra(self) -> dict[str, str] | None:
        """The extra as query parameters, when it survives the trip (an object of strings)."""
        try:
            parsed = json.loads(self.extra or "")
        except ValueError:
            return None
        if (isinstance(parsed, dict) and parsed
                and all(isinstance(v, str) for v in parsed.values())):
            return parsed
        return None

    # ------------------------------------------------------------------ JSON

    @classmethod
    def from_json(cls, value: str | dict[str, Any], conn_id: str | None = None) -> Connection:
        """A connection from the JSON form (``{"conn_type": ..., "host": ..., "extra":
        {...}}``) of an environment variable or a connections file."""
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ConnectionError_(f"connection {conn_id}: not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ConnectionError_(f"connection {conn_id}: a JSON object is needed")
        unknown = set(value) - set(FIELDS) - {"conn_id", "uri"}
        if unknown:
            raise ConnectionError_(f"connection {conn_id}: unknown field(s) "
                                   f"{', '.join(sorted(unknown))} (known: {', '.join(FIELDS)})")
        if "uri" in value:
            return cls(conn_id=conn_id, description=value.get("description"),
                       uri=_string(value["uri"], "uri", conn_id))
        kwargs = {f: value.get(f) for f in FIELDS}
        for name in ("conn_type", "description", "host", "login", "password", "schema"):
            if kwargs[name] is not None:
                kwargs[name] = _string(kwargs[name], name, conn_id)
        extra = kwargs["extra"]
        if extra is not None and not isinstance(extra, (str, dict)):
            raise ConnectionError_(f"connection {conn_id}: extra must be a JSON object or "
                                   "its text")
        return cls(conn_id=conn_id, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The fields (without conn_id), as a connections file holds them."""
        return {f: getattr(self, f) for f in FIELDS}

    @classmethod
    def parse(cls, conn_id: str, value: str) -> Connection:
        """A connection from an environment variable's value: JSON when it starts with
        ``{``, else a URI."""
        if value.lstrip().startswith("{"):
            return cls.from_json(value, conn_id)
        return cls(conn_id=conn_id, uri=value)

    # ------------------------------------------------------------------ Airflow's API

    @property
    def extra_dejson(self) -> dict[str, Any]:
        """The extra parsed (an empty dict when there is none or it is not JSON)."""
        if not self.extra:
            return {}
        try:
            parsed = json.loads(self.extra)
        except ValueError:
            log.error("Connection %s: the extra is not valid JSON; using {}", self.conn_id)
            return {}
        if not isinstance(parsed, dict):
            log.error("Connection %s: the extra is not a JSON object; using {}", self.conn_id)
            return {}
        return parsed

    def get_password(self) -> str | None:
        return self.password

    def get_extra(self) -> str | None:
        return self.extra

    def check_extra(self) -> None:
        """:class:`ConnectionError_` when the extra is set and is not a JSON object."""
        if not self.extra:
            return
        try:
            parsed = json.loads(self.extra)
        except ValueError as exc:
            raise ConnectionError_(f"connection {self.conn_id}: the extra is not valid JSON: "
                                   f"{exc}") from None
        if not isinstance(parsed, dict):
            raise ConnectionError_(f"connection {self.conn_id}: the extra must be a JSON "
                                   "object")

    def mask_secrets(self, secrets: SecretsMasker | None = None) -> None:
        """Mask the password (as it is and URL-quoted), and the sensitive fields of the
        extra, in this process's logs from now on (or in ``secrets``)."""
        secrets = secrets or masker()
        if self.password:
            secrets.add(self.password)
            secrets.add(quote(self.password, safe=""))
        if self.extra:
            secrets.add(self.extra_dejson)


def _port(value: Any, conn_id: str | None) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ConnectionError_(f"connection {conn_id}: port {value!r} is not a number")
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ConnectionError_(f"connection {conn_id}: port {value!r} is not a number") \
            from None
    if not 0 < port < 65536:
        raise ConnectionError_(f"connection {conn_id}: port {port} is not in 1..65535")
    return port


def _string(value: Any, name: str, conn_id: str | None) -> str:
    if not isinstance(value, str):
        raise ConnectionError_(f"connection {conn_id}: {name} must be a string, not "
                               f"{type(value).__name__}")
    return value


def _redact_uri(uri: str) -> str:
    """``uri`` with what looks like a password replaced by ``***`` (for error messages)."""
    return re.sub(r"(://[^:/@?#]*:)[^@/?#]*@", r"\1***@", uri)
