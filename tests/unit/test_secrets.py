"""Fernet encryption, the masker and its log filter, connection URIs and JSON, and the
environment side of the secrets backend (no database: see tests/integration for that)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from squall.common.settings import Settings
from squall.secrets.backend import SecretsBackend, from_settings
from squall.secrets.connections import Connection, ConnectionError_
from squall.secrets.fernet import FernetCodec, SecretsError
from squall.secrets.masking import MASK, RedactingFilter, SecretsMasker, is_sensitive_key

# --------------------------------------------------------------------------- Fernet


def test_without_a_key_values_are_stored_as_they_are() -> None:
    codec = FernetCodec("")
    assert not codec.enabled
    assert codec.encrypt("hunter2") == ("hunter2", False)
    assert codec.decrypt("hunter2", False, what="x") == "hunter2"


def test_a_key_encrypts_and_only_the_keys_decrypt() -> None:
    key = Fernet.generate_key().decode()
    stored, encrypted = FernetCodec(key).encrypt("hunter2")
    assert encrypted and "hunter2" not in stored
    assert FernetCodec(key).decrypt(stored, True, what="x") == "hunter2"
    other = FernetCodec(Fernet.generate_key().decode())
    with pytest.raises(SecretsError, match="variable v cannot be decrypted"):
        other.decrypt(stored, True, what="variable v")
    with pytest.raises(SecretsError, match="encrypted but \\[core\\] fernet_key is not set"):
        FernetCodec("").decrypt(stored, True, what="variable v")


def test_rotation_new_key_first_decrypts_old_values_and_rotate_moves_them() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    stored, _ = FernetCodec(old).encrypt("hunter2")
    both = FernetCodec(f"{new}, {old}")
    assert both.key_count == 2
    assert both.decrypt(stored, True, what="x") == "hunter2"
    rotated, encrypted = both.rotate(stored, True, what="x")
    assert encrypted
    assert FernetCodec(new).decrypt(rotated, True, what="x") == "hunter2"
    with pytest.raises(SecretsError):
        FernetCodec(old).decrypt(rotated, True, what="x")
    # a plain value is encrypted by a rotation
    plain, encrypted = both.rotate("open", False, what="x")
    assert encrypted and FernetCodec(new).decrypt(plain, True, what="x") == "open"


def test_a_malformed_key_is_named_by_position_never_by_value() -> None:
    good = Fernet.generate_key().decode()
    with pytest.raises(SecretsError, match="key 2 of 2 is not a Fernet key") as info:
        FernetCodec(f"{good},not-a-key-at-all")
    assert "not-a-key-at-all" not in str(info.value)


# --------------------------------------------------------------------------- masking


@pytest.mark.parametrize(("name", "sensitive"), [
    ("password", True), ("DB_PASSWORD", True), ("my_api_key", True), ("apikey", True),
    ("Authorization", True), ("aws_secret", True), ("gcp_keyfile_dict", True),
    ("service_account_json", True), ("private_key", True), ("host", False),
    ("bucket", False), ("user", False),
])
def test_sensitive_key_names_follow_airflows_list(name: str, sensitive: bool) -> None:
    assert is_sensitive_key(name) is sensitive


def test_masker_follows_airflows_mask_secret_rules() -> None:
    m = SecretsMasker()
    m.add("hunter2")  # no name: a secret
    m.add("visible-host", "host")  # a name that is not sensitive: not a secret
    m.add("tok-123", "api_token")
    m.add({"bucket": "my-bucket", "client_secret": "cs-456", "nested": {"password": "pw-789"}})
    m.add("ab")  # too short to mask
    text = "hunter2 visible-host tok-123 my-bucket cs-456 pw-789 ab"
    assert m.mask(text) == f"{MASK} visible-host {MASK} my-bucket {MASK} {MASK} ab"


def test_a_longer_secret_containing_a_shorter_one_is_masked_whole() -> None:
    m = SecretsMasker()
    m.add("abc")
    m.add("abcdef")
    assert m.mask("x abcdef y abc") == f"x {MASK} y {MASK}"


def test_redact_hides_sensitive_keys_and_known_values_in_structures() -> None:
    m = SecretsMasker()
    m.add("known-secret")
    assert m.redact({"password": "p", "host": "h", "note": "has known-secret inside",
                     "list": ["known-secret", 3]}) == {
        "password": MASK, "host": "h", "note": f"has {MASK} inside", "list": [MASK, 3]}


def test_redacting_filter_masks_messages_arguments_and_tracebacks() -> None:
    m = SecretsMasker()
    m.add("hunter2")
    flt = RedactingFilter(m)
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "pw is %s", ("hunter2",), None)
    assert flt.filter(record)
    assert record.getMessage() == f"pw is {MASK}"
    try:
        raise ValueError("bad hunter2")
    except ValueError:
        import sys

        exc_info = sys.exc_info()
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", None, exc_info)
    flt.filter(record)
    formatted = logging.Formatter().format(record)
    assert "hunter2" not in formatted and f"ValueError: bad {MASK}" in formatted


# --------------------------------------------------------------------------- URIs


@pytest.mark.parametrize(("uri", "fields"), [
    ("postgres://user:pass@host.example.com:5432/db",
     dict(conn_type="postgres", login="user", password="pass", host="host.example.com",
          port=5432, schema="db", extra=None)),
    # quoted parts; postgresql:// is the postgres type, a dash in the scheme an underscore
    ("postgresql://us%40er:p%2Fa%3Ass%23@h:1/my%20db",
     dict(conn_type="postgres", login="us@er", password="p/a:ss#", host="h", port=1,
          schema="my db")),
    ("google-cloud-platform://?key_path=%2Fkeys%2Fk.json&project=p",
     dict(conn_type="google_cloud_platform", host=None, login=None, password=None,
          extra=json.dumps({"key_path": "/keys/k.json", "project": "p"}))),
    ("http://https%3A%2F%2Fapi.example.com",
     dict(conn_type="http", host="https://api.example.com")),
    ("http://https://api.example.com:8443/v1",
     dict(conn_type="http", host="https://api.example.com", port=8443, schema="v1")),
    ("aws://?__extra__=%7B%22region%22%3A+%22eu%22%2C+%22retries%22%3A+3%7D",
     dict(conn_type="aws", extra='{"region": "eu", "retries": 3}')),
])
def test_uri_parsing_matches_airflow(uri: str, fields: dict[str, object]) -> None:
    conn = Connection(conn_id="c", uri=uri)
    for name, value in fields.items():
        assert getattr(conn, name) == value, name


@pytest.mark.parametrize("conn", [
    Connection(conn_id="c", conn_type="postgres", host="db.example.com", login="u@x",
               password="p/w:?#&=", port=5432, schema="my db"),
    Connection(conn_id="c", conn_type="http", host="https://api.example.com",
               extra={"token_header": "X-Token"}),
    Connection(conn_id="c", conn_type="aws", extra={"region": "eu", "retries": 3,
                                                    "tags": {"a": "b"}}),
    Connection(conn_id="c", conn_type="generic", port=8080),
    Connection(conn_id="c", conn_type="sqlite", schema="/tmp/x.db"),
    Connection(conn_id="c", conn_type="ftp", login="only-login"),
])
def test_get_uri_round_trips(conn: Connection) -> None:
    back = Connection(conn_id="c", uri=conn.get_uri())
    assert back == conn
    assert back.extra_dejson == conn.extra_dejson


def test_get_uri_quotes_the_password() -> None:
    conn = Connection(conn_id="c", conn_type="my_type", host="h", login="l", password="p@ss")
    assert conn.get_uri() == "my-type://l:p%40ss@h"


@pytest.mark.parametrize(("uri", "fragment"), [
    ("not a uri", "is not a connection URI"),
    ("postgres://u:topsecret@host:99999/db", "is not a valid URI"),
    ("postgres://u:topsecret@host:port/db", "is not a valid URI"),
])
def test_a_bad_uri_is_a_clear_error_that_hides_the_password(uri: str, fragment: str) -> None:
    with pytest.raises(ConnectionError_, match=fragment) as info:
        Connection(conn_id="c", uri=uri)
    assert "topsecret" not in str(info.value)


def test_json_form_and_extra_dejson() -> None:
    conn = Connection.parse("c", json.dumps({"conn_type": "http", "host": "h", "port": "80",
                                             "extra": {"verify": False}}))
    assert (conn.conn_type, conn.host, conn.port) == ("http", "h", 80)
    assert conn.extra_dejson == {"verify": False}
    assert Connection.parse("c", "http://h:81").port == 81
    assert Connection(conn_id="c", conn_type="x", extra="not json").extra_dejson == {}
    with pytest.raises(ConnectionError_, match="unknown field\\(s\\) hots"):
        Connection.from_json({"conn_type": "x", "hots": "h"}, "c")
    with pytest.raises(ConnectionError_, match="not valid JSON"):
        Connection.parse("c", "{nope")
    with pytest.raises(ConnectionError_, match="port 'x' is not a number"):
        Connection.from_json({"conn_type": "x", "port": "x"}, "c")


def test_repr_never_shows_the_password() -> None:
    conn = Connection(conn_id="c", conn_type="x", password="hunter2")
    assert "hunter2" not in repr(conn)


# --------------------------------------------------------------------------- environment


def test_environment_lookups_and_the_airflow_prefix_only_under_compat() -> None:
    environ = {"SQUALL_VAR_FOO": "squall", "AIRFLOW_VAR_FOO": "airflow",
               "AIRFLOW_VAR_BAR": "af-only", "AIRFLOW_CONN_DB": "http://h"}
    plain = SecretsBackend(lambda: None, FernetCodec(""), environ=environ)  # type: ignore[arg-type]
    assert plain.variable_from_env("foo") == ("SQUALL_VAR_FOO", "squall")
    assert plain.variable_from_env("bar") is None
    assert plain.connection_from_env("db") is None
    compat = SecretsBackend(lambda: None, FernetCodec(""), airflow_compat=True,  # type: ignore[arg-type]
                            environ=environ)
    assert compat.variable_from_env("foo") == ("SQUALL_VAR_FOO", "squall")
    assert compat.variable_from_env("bar") == ("AIRFLOW_VAR_BAR", "af-only")
    assert compat.connection_from_env("db") == ("AIRFLOW_CONN_DB", "http://h")


def test_the_lazy_engine_is_made_once_and_again_after_a_fork(tmp_path: Path) -> None:
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)})
    backend = from_settings(settings)
    first = backend.session_factory()
    assert backend.session_factory() is first
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new factory, the parent's left alone
        os.write(write, b"1" if backend.session_factory() is not first else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert backend.session_factory() is first


def test_a_bad_fernet_key_is_a_settings_error_that_hides_it(tmp_path: Path) -> None:
    from squall.common.errors import SettingsError

    with pytest.raises(SettingsError, match=r"\[core\] fernet_key = \*\*\* .*not a Fernet key") \
            as info:
        Settings.load(env={"SQUALL_HOME": str(tmp_path),
                           "SQUALL__CORE__FERNET_KEY": "leaky-not-a-key"})
    assert "leaky" not in str(info.value)
    key = Fernet.generate_key().decode()
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path),
                                  "SQUALL__CORE__FERNET_KEY": f"{key},{key}"})
    assert settings.as_dict()["core"]["fernet_key"] == MASK
