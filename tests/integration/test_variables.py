"""Variables on a real metadata database (SQLite and PostgreSQL): encryption at rest, Airflow's
``Variable`` API, the environment's precedence, templates, import / export, key rotation,
and ``squall variables`` as a user runs it."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from squall.common.db import SessionFactory, session_scope
from squall.common.errors import TemplateError
from squall.sdk.templating import render_template
from squall.secrets import backend as secrets_backend
from squall.secrets import variables as store
from squall.secrets.backend import SecretsBackend, rotate_fernet_key
from squall.secrets.fernet import FernetCodec, SecretsError
from squall.secrets.masking import MASK, masker
from squall.secrets.variables import Variable, VariableAccessor, VariableError
from tests.integration.test_cli import as_json, assert_clean_error, ok, squall

KEY = Fernet.generate_key().decode()


@pytest.fixture
def environ() -> dict[str, str]:
    return {}


@pytest.fixture
def backend(session_factory: SessionFactory, environ: dict[str, str]) -> Iterator[SecretsBackend]:
    """A backend on the test database with a Fernet key, bound to this process."""
    bound = SecretsBackend(session_factory, FernetCodec(KEY), environ=environ)
    previous = secrets_backend.configure(bound)
    yield bound
    secrets_backend.configure(previous)


def raw_values(session_factory: SessionFactory) -> list[tuple[str, str, bool]]:
    with session_scope(session_factory) as session:
        return [tuple(row) for row in session.execute(  # type: ignore[misc]
            text("SELECT key, val, is_encrypted FROM variable ORDER BY key"))]


def test_values_are_encrypted_at_rest_and_read_back(backend: SecretsBackend,
                                                    session_factory: SessionFactory) -> None:
    Variable.set("db_password", "hunter2-secret")
    Variable.set("config", {"bucket": "b1", "retries": 3}, serialize_json=True)
    rows = raw_values(session_factory)
    assert [key for key, _, _ in rows] == ["config", "db_password"]
    for _, val, encrypted in rows:
        assert encrypted
        assert "hunter2" not in val and "bucket" not in val
    assert Variable.get("db_password") == "hunter2-secret"
    assert Variable.get("config", deserialize_json=True) == {"bucket": "b1", "retries": 3}
    # another key cannot read them, and says so
    other = SecretsBackend(session_factory, FernetCodec(Fernet.generate_key().decode()))
    secrets_backend.configure(other)
    with pytest.raises(SecretsError, match="variable db_password cannot be decrypted"):
        Variable.get("db_password")


def test_get_set_update_delete_as_in_airflow(backend: SecretsBackend) -> None:
    with pytest.raises(KeyError, match="Variable nope does not exist"):
        Variable.get("nope")
    assert Variable.get("nope", default_var=None) is None
    assert Variable.get("nope", default_var={"a": 1}, deserialize_json=True) == {"a": 1}
    with pytest.raises(KeyError):
        Variable.update("nope", "x")
    Variable.set("k", "v1", description="first")
    Variable.update("k", "v2")
    assert Variable.get("k") == "v2"
    assert Variable.setdefault("k", "other") == "v2"
    assert Variable.setdefault("fresh", "dflt") == "dflt"
    assert Variable.get("fresh") == "dflt"
    Variable.set("not_json", "{oops")
    with pytest.raises(VariableError, match="variable not_json is not valid JSON"):
        Variable.get("not_json", deserialize_json=True)
    assert Variable.delete("k") == 1
    assert Variable.delete("k") == 0
    with pytest.raises(KeyError):
        Variable.get("k")


def test_environment_variables_take_precedence(backend: SecretsBackend,
                                               environ: dict[str, str]) -> None:
    Variable.set("region", "from-table")
    environ["SQUALL_VAR_REGION"] = "from-env"
    environ["AIRFLOW_VAR_ONLY_AF"] = "af"
    assert Variable.get("region") == "from-env"
    # AIRFLOW_VAR_ only under [core] airflow_compat
    assert Variable.get("only_af", default_var="none") == "none"
    backend.airflow_compat = True
    assert Variable.get("only_af") == "af"
    del environ["SQUALL_VAR_REGION"]
    assert Variable.get("region") == "from-table"


def test_a_sensitive_variable_is_masked_once_read(backend: SecretsBackend) -> None:
    Variable.set("service_api_key", "sk-live-12345")
    Variable.set("bucket_name", "public-bucket-name")
    Variable.get("service_api_key")
    Variable.get("bucket_name")
    assert masker().mask("sk-live-12345 public-bucket-name") == f"{MASK} public-bucket-name"


def test_templates_read_variables(backend: SecretsBackend, environ: dict[str, str]) -> None:
    Variable.set("env_name", "prod")
    Variable.set("cfg", {"db": {"host": "h1"}, "n": 2}, serialize_json=True)
    environ["SQUALL_VAR_FROM_ENV"] = "e"
    context = {"var": VariableAccessor()}
    rendered = render_template(
        "{{ var.value.env_name }} {{ var.json.cfg.db.host }} {{ var.json.cfg.n + 1 }} "
        "{{ var.value.get('missing', 'dflt') }} {{ var.value.from_env }}", context)
    assert rendered == "prod h1 3 dflt e"
    # as in Airflow, a missing variable fails the rendering (and so the task)
    with pytest.raises((KeyError, TemplateError), match="Variable missing does not exist"):
        render_template("{{ var.value.missing }}", context)


def test_without_a_key_values_are_plain_with_a_warning(
        session_factory: SessionFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    monkey = secrets_backend._warned_plain
    secrets_backend._warned_plain = False
    try:
        with session_scope(session_factory) as session:
            store.set_variable(session, FernetCodec(""), "plain", "visible")
    finally:
        secrets_backend._warned_plain = monkey
    assert raw_values(session_factory) == [("plain", "visible", False)]
    assert "fernet_key is not set" in caplog.text


def test_import_is_all_or_nothing_and_export_round_trips(
        backend: SecretsBackend, session_factory: SessionFactory) -> None:
    codec = backend.codec
    with session_scope(session_factory) as session:
        store.set_variable(session, codec, "existing", "old")
    bad = {"good": "v", "": "empty key"}
    with pytest.raises(VariableError, match="a non-empty string"), \
            session_scope(session_factory) as session:
        store.import_variables(session, codec, bad)
    with pytest.raises(VariableError, match="existing exist already"), \
            session_scope(session_factory) as session:
        store.import_variables(session, codec, {"new": "v", "existing": "x"},
                               on_existing="fail")
    assert [k for k, _, _ in raw_values(session_factory)] == ["existing"]
    with session_scope(session_factory) as session:
        done, skipped = store.import_variables(
            session, codec, {"existing": "new", "n": 5, "obj": {"a": [1]}}, on_existing="skip")
    assert (sorted(done), skipped) == (["n", "obj"], ["existing"])
    with session_scope(session_factory) as session:
        assert store.export_variables(session, codec) == {
            "existing": "old", "n": 5, "obj": {"a": [1]}}


def test_rotation_re_encrypts_under_the_new_key(backend: SecretsBackend,
                                                session_factory: SessionFactory) -> None:
    Variable.set("token", "t-123456")
    with session_scope(session_factory) as session:
        store.set_variable(session, FernetCodec(""), "was_plain", "p-123456")
    new = Fernet.generate_key().decode()
    with session_scope(session_factory) as session:
        assert rotate_fernet_key(session, FernetCodec(f"{new},{KEY}")) == (2, 0)
    assert all(encrypted for _, _, encrypted in raw_values(session_factory))
    only_new = FernetCodec(new)
    with session_scope(session_factory) as session:
        assert store.read_variable(session, only_new, "token").value == "t-123456"  # type: ignore[union-attr]
        assert store.read_variable(session, only_new, "was_plain").value == "p-123456"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- the CLI


def test_the_variables_commands(tmp_path: Path) -> None:
    env = {"SQUALL__CORE__FERNET_KEY": KEY}
    home = tmp_path / "home"
    ok(squall(home, "variables", "set", "greeting", "hello", "--description", "d", env=env))
    ok(squall(home, "variables", "set", "my_password", "pw-98765", env=env))
    ok(squall(home, "variables", "set", "cfg", '{"a": 1}', "-j", env=env))
    assert ok(squall(home, "variables", "get", "greeting", env=env)).stdout == "hello\n"
    assert json.loads(ok(squall(home, "variables", "get", "cfg", "-j", env=env)).stdout) \
        == {"a": 1}
    listed = {row["key"]: row for row in
              as_json(ok(squall(home, "variables", "list", "-o", "json", env=env)))}
    assert listed["my_password"]["val"] == MASK and listed["greeting"]["val"] == "hello"
    assert listed["greeting"]["description"] == "d" and listed["cfg"]["is_encrypted"]
    table = ok(squall(home, "variables", "list", env=env)).stdout
    assert "greeting" in table and "pw-98765" not in table
    # the environment wins
    got = squall(home, "variables", "get", "greeting", env={**env, "SQUALL_VAR_GREETING": "hi"})
    assert ok(got).stdout == "hi\n"

    assert_clean_error(squall(home, "variables", "get", "nope", env=env), 1,
                       "variable nope does not exist")
    assert ok(squall(home, "variables", "get", "nope", "-d", "x", env=env)).stdout == "x\n"
    assert_clean_error(squall(home, "variables", "delete", "nope", env=env), 1,
                       "variable nope does not exist")
    assert_clean_error(squall(home, "variables", "set", "k", "{bad", "-j", env=env), 1,
                       "the value is not valid JSON")

    exported = tmp_path / "vars.json"
    ok(squall(home, "variables", "export", str(exported), env=env))
    assert json.loads(exported.read_text()) == {"cfg": {"a": 1}, "greeting": "hello",
                                                "my_password": "pw-98765"}
    assert exported.stat().st_mode & 0o077 == 0

    # a bad file changes nothing
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert_clean_error(squall(home, "variables", "import", str(bad), env=env), 1,
                       "is not valid JSON", "nothing was imported")
    bad.write_text(json.dumps({"fine": "x", "": "no key"}))
    assert_clean_error(squall(home, "variables", "import", str(bad), env=env), 1,
                       "a non-empty string", "nothing was imported")
    ok(squall(home, "variables", "delete", "greeting", env=env))
    keys = {r["key"] for r in as_json(ok(squall(home, "variables", "list", "-o", "json",
                                                env=env)))}
    assert keys == {"cfg", "my_password"}

    # into another home, under another key
    other = tmp_path / "other"
    env2 = {"SQUALL__CORE__FERNET_KEY": Fernet.generate_key().decode()}
    ok(squall(other, "variables", "import", str(exported), env=env2))
    assert ok(squall(other, "variables", "get", "my_password", env=env2)).stdout == "pw-98765\n"


def test_the_variables_commands_write_audit_entries(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(squall(home, "variables", "set", "db_password", "pw-98765"))
    ok(squall(home, "variables", "delete", "db_password"))
    document = tmp_path / "vars.json"
    document.write_text(json.dumps({"region": "eu"}))
    ok(squall(home, "variables", "import", str(document)))
    with sqlite3.connect(home / "squall.db") as db:
        rows = db.execute("SELECT event, owner, extra FROM log ORDER BY id").fetchall()
    assert [(e, json.loads(x)) for e, _, x in rows] == [
        ("variable.edit", {"key": "db_password", "source": "cli"}),
        ("variable.delete", {"key": "db_password", "source": "cli"}),
        ("variable.edit", {"key": "region", "source": "cli"})]
    assert all(owner.startswith("cli:") for _, owner, _ in rows)
    assert "pw-98765" not in json.dumps(rows)
