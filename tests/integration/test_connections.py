"""Connections on a real metadata database (SQLite and PostgreSQL): encryption at rest, the
environment's precedence (URI and JSON), ``BaseHook.get_connection``, ``squall connections``
as a user runs it, key rotation, and a real task run (``squall dags test``) whose log shows
``***`` where the task printed a password."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from squall.common.db import SessionFactory, session_scope
from squall.common.errors import SquallError
from squall.common.settings import Settings
from squall.sdk.hooks import BaseHook
from squall.sdk.templating import render_template
from squall.secrets import backend as secrets_backend
from squall.secrets import connection_store as store
from squall.secrets.backend import SecretsBackend
from squall.secrets.connection_store import ConnectionAccessor, get_connection
from squall.secrets.connections import Connection, ConnectionError_, ConnectionNotFound
from squall.secrets.fernet import FernetCodec
from squall.secrets.masking import MASK, masker
from tests.integration.test_cli import as_json, assert_clean_error, ok, squall

KEY = Fernet.generate_key().decode()
PASSWORD = "s3cr3t-Pa55/word@#"
URI = "postgres://app_user:s3cr3t-Pa55%2Fword%40%23@db.example.com:5432/appdb?sslmode=require"


@pytest.fixture
def environ() -> dict[str, str]:
    return {}


@pytest.fixture
def backend(session_factory: SessionFactory, environ: dict[str, str]) -> Iterator[SecretsBackend]:
    bound = SecretsBackend(session_factory, FernetCodec(KEY), environ=environ)
    previous = secrets_backend.configure(bound)
    yield bound
    secrets_backend.configure(previous)


def raw_rows(session_factory: SessionFactory) -> list[dict[str, object]]:
    with session_scope(session_factory) as session:
        return [dict(row._mapping) for row in session.execute(
            text("SELECT * FROM connection ORDER BY conn_id"))]


def test_password_and_extra_are_encrypted_at_rest(backend: SecretsBackend,
                                                  session_factory: SessionFactory) -> None:
    conn = Connection(conn_id="my_db", uri=URI)
    conn.extra = json.dumps({"sslmode": "require", "api_token": "tok-ABCDEF"})
    with session_scope(session_factory) as session:
        store.add_connection(session, backend.codec, conn)
    [row] = raw_rows(session_factory)
    assert row["is_encrypted"] and row["is_extra_encrypted"]
    flat = json.dumps(row, default=str)
    for secret in ("s3cr3t", "Pa55", "tok-ABCDEF", "sslmode"):
        assert secret not in flat
    assert (row["host"], row["login"], row["port"]) == ("db.example.com", "app_user", 5432)
    back = BaseHook.get_connection("my_db")
    assert back == conn
    assert back.password == PASSWORD
    assert back.extra_dejson == {"sslmode": "require", "api_token": "tok-ABCDEF"}
    # reading it masks its password and its sensitive extra in this process's logs
    assert masker().mask(f"{PASSWORD} tok-ABCDEF require") == f"{MASK} {MASK} require"


def test_add_refuses_a_duplicate_and_bad_connections(backend: SecretsBackend,
                                                     session_factory: SessionFactory) -> None:
    with session_scope(session_factory) as session:
        store.add_connection(session, backend.codec, Connection(conn_id="a", conn_type="http"))
    with pytest.raises(ConnectionError_, match="connection a exists already"), \
            session_scope(session_factory) as session:
        store.add_connection(session, backend.codec, Connection(conn_id="a", conn_type="x"))
    with pytest.raises(ConnectionError_, match="a conn_type is needed"), \
            session_scope(session_factory) as session:
        store.add_connection(session, backend.codec, Connection(conn_id="b"))
    with pytest.raises(ConnectionError_, match="the extra is not valid JSON"), \
            session_scope(session_factory) as session:
        store.add_connection(session, backend.codec,
                             Connection(conn_id="c", conn_type="x", extra="{no"))
    assert [r["conn_id"] for r in raw_rows(session_factory)] == ["a"]


def test_environment_connections_win_as_uri_or_json(backend: SecretsBackend,
                                                    session_factory: SessionFactory,
                                                    environ: dict[str, str]) -> None:
    with session_scope(session_factory) as session:
        store.add_connection(session, backend.codec,
                             Connection(conn_id="my_db", conn_type="postgres", host="table"))
    assert get_connection("my_db").host == "table"
    environ["SQUALL_CONN_MY_DB"] = "postgres://u:p@env-host:1/s"
    assert get_connection("my_db").host == "env-host"
    environ["SQUALL_CONN_API"] = json.dumps({"conn_type": "http", "host": "api.example.com",
                                             "extra": {"timeout": 5}})
    api = get_connection("api")
    assert (api.conn_type, api.host, api.extra_dejson) == ("http", "api.example.com",
                                                           {"timeout": 5})
    environ["AIRFLOW_CONN_AF"] = "http://af-host"
    with pytest.raises(ConnectionNotFound, match="The conn_id `af` isn't defined"):
        get_connection("af")
    backend.airflow_compat = True
    assert get_connection("af").host == "af-host"
    environ["SQUALL_CONN_BROKEN"] = "not a uri"
    with pytest.raises(ConnectionError_, match="SQUALL_CONN_BROKEN"):
        get_connection("broken")
    # AirflowException (SquallError) catches a missing connection, as in Airflow
    with pytest.raises(SquallError):
        BaseHook.get_connection("nowhere")


def test_templates_read_connections(backend: SecretsBackend, environ: dict[str, str]) -> None:
    environ["SQUALL_CONN_MY_DB"] = URI
    context = {"conn": ConnectionAccessor()}
    rendered = render_template(
        "{{ conn.my_db.host }}:{{ conn.my_db.port }} {{ conn.my_db.extra_dejson.sslmode }} "
        "{{ conn.get('nope', 'none') }}", context)
    assert rendered == "db.example.com:5432 require none"
    with pytest.raises(Exception, match="isn't defined"):
        render_template("{{ conn.nope.host }}", context)


def test_import_is_all_or_nothing(backend: SecretsBackend,
                                  session_factory: SessionFactory) -> None:
    document = {"good": {"conn_type": "http", "host": "h"}, "uri_one": URI,
                "bad": "not a uri"}
    with pytest.raises(ConnectionError_, match="is not a connection URI"), \
            session_scope(session_factory) as session:
        store.import_connections(session, backend.codec, document)
    assert raw_rows(session_factory) == []
    del document["bad"]
    with session_scope(session_factory) as session:
        assert store.import_connections(session, backend.codec, document) == ["good",
                                                                               "uri_one"]
    with pytest.raises(ConnectionError_, match="good, uri_one exist already"), \
            session_scope(session_factory) as session:
        store.import_connections(session, backend.codec, document)
    with session_scope(session_factory) as session:
        exported = store.export_connections(session, backend.codec)
    assert exported["uri_one"]["password"] == PASSWORD
    assert Connection.from_json(exported["uri_one"], "uri_one") == Connection("uri_one",
                                                                               uri=URI)


# --------------------------------------------------------------------------- the CLI


def test_the_connections_commands_and_rotation(tmp_path: Path) -> None:
    env = {"SQUALL__CORE__FERNET_KEY": KEY}
    home = tmp_path / "home"
    added = ok(squall(home, "connections", "add", "my_db", "--conn-uri", URI, env=env))
    assert "s3cr3t" not in added.stdout and "my_db" in added.stdout
    ok(squall(home, "connections", "add", "api", "--conn-type", "http", "--conn-host",
              "api.example.com", "--conn-extra", '{"api_key": "k-112233", "timeout": "5"}',
              env=env))
    [got] = as_json(ok(squall(home, "connections", "get", "my_db", "-o", "json", env=env)))
    assert got["password"] == MASK and got["host"] == "db.example.com"
    assert got["source"] == "database"
    listed = {r["conn_id"]: r for r in
              as_json(ok(squall(home, "connections", "list", "-o", "json", env=env)))}
    assert listed["api"]["extra"] == {"api_key": MASK, "timeout": "5"}
    table = ok(squall(home, "connections", "list", env=env)).stdout
    assert "s3cr3t" not in table and "k-112233" not in table and "api.example.com" in table

    ok(squall(home, "connections", "add", "json conn", "--conn-json",
              '{"conn_type": "http", "host": "j.example.com", "password": "jp-445566"}',
              env=env))
    [got] = as_json(ok(squall(home, "connections", "get", "json conn", "-o", "json",
                              env={**env, "SQUALL_CONN_FROM_ENV": "http://e:ep-1@env.example"})))
    assert (got["host"], got["password"]) == ("j.example.com", MASK)
    [got] = as_json(ok(squall(home, "connections", "get", "from_env", "-o", "json",
                              env={**env, "SQUALL_CONN_FROM_ENV": "http://e:ep-1@env.example"})))
    assert (got["host"], got["password"], got["source"]) == ("env.example", MASK,
                                                             "SQUALL_CONN_FROM_ENV")
    ok(squall(home, "connections", "delete", "json conn", env=env))
    assert_clean_error(squall(home, "connections", "add", "bad$id", "--conn-type", "http",
                              env=env), 1, "conn_id 'bad$id'")
    assert_clean_error(squall(home, "connections", "add", "x", "--conn-uri", "nonsense",
                              env=env), 1, "is not a connection URI")
    assert_clean_error(squall(home, "connections", "add", "my_db", "--conn-uri", URI, env=env),
                       1, "connection my_db exists already")
    assert_clean_error(squall(home, "connections", "add", "y", env=env), 1, "--conn-type")
    assert_clean_error(squall(home, "connections", "get", "nope", env=env), 1,
                       "connection nope does not exist")
    assert_clean_error(squall(home, "connections", "delete", "nope", env=env), 1,
                       "connection nope does not exist")

    exported = tmp_path / "conns.json"
    ok(squall(home, "connections", "export", str(exported), env=env))
    document = json.loads(exported.read_text())
    assert document["my_db"]["password"] == PASSWORD
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"fine": {"conn_type": "http"}, "worse": {"conn_type": "x",
                                                                       "port": "eighty"}}))
    other = tmp_path / "other"
    assert_clean_error(squall(other, "connections", "import", str(bad), env=env), 1,
                       "port 'eighty' is not a number", "nothing was imported")
    ok(squall(other, "connections", "import", str(exported), env=env))
    assert {r["conn_id"] for r in as_json(ok(squall(other, "connections", "list", "-o",
                                                    "json", env=env)))} == {"api", "my_db"}

    # rotation: NEW,OLD re-encrypts everything; NEW alone then reads it
    new = Fernet.generate_key().decode()
    ok(squall(home, "rotate-fernet-key", env={"SQUALL__CORE__FERNET_KEY": f"{new},{KEY}"}))
    exported2 = tmp_path / "after.json"
    ok(squall(home, "connections", "export", str(exported2),
              env={"SQUALL__CORE__FERNET_KEY": new}))
    assert json.loads(exported2.read_text()) == document
    stale = squall(home, "connections", "export", str(exported2), env=env)
    assert_clean_error(stale, 1, "cannot be decrypted")
    ok(squall(home, "connections", "delete", "api", env={"SQUALL__CORE__FERNET_KEY": new}))


# --------------------------------------------------------------------------- a real task run

SECRETS_DAG = '''
import logging
import subprocess
import sys
import warnings

import pendulum
from squall import DAG, BashOperator, PythonOperator
from squall.secrets.variables import Variable
from squall.sdk.hooks import BaseHook

log = logging.getLogger("secrets_dag")


def show_connection():
    conn = BaseHook.get_connection("my_db")
    log.info("connecting to %s as %s with password %s", conn.host, conn.login, conn.password)
    log.info("the URI is %s", conn.get_uri())
    log.info("the token is %s", Variable.get("service_token"))


def write_output():
    password = BaseHook.get_connection("my_db").password
    print("print says the password is", password)
    log.info("logged in between")
    sys.stderr.write(f"stderr says {password}\\n")
    warnings.warn(f"the warning says {password}")
    subprocess.run(["echo", f"echo says {password}"], check=True)
    subprocess.run(["bash", "-c", "echo bash says to stderr >&2"], check=True)
    print("printed at the end")


with DAG("secrets_dag", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    PythonOperator(task_id="py", python_callable=show_connection) >> BashOperator(
        task_id="sh",
        bash_command="echo password={{ conn.my_db.password }} host={{ conn.my_db.host }}")
    PythonOperator(task_id="out", python_callable=write_output)
'''

_WARNED_AT = SECRETS_DAG.split("\n").index(
    '    warnings.warn(f"the warning says {password}")') + 1

#: what task ``out`` wrote, as it is logged (logger, level, message), in this order
OUTPUT = [
    ("squall.task", "INFO", f"print says the password is {MASK}\n"),
    ("secrets_dag", "INFO", "logged in between\n"),
    ("squall.task", "WARNING", f"stderr says {MASK}\n"),
    ("squall.task", "WARNING", f"{{dags}}/secrets_dag.py:{_WARNED_AT}: UserWarning: the "
                               f"warning says {MASK}\n  warnings.warn("),
    ("squall.task", "INFO", f"echo says {MASK}\n"),
    ("squall.task", "INFO", "bash says to stderr\n"),
    ("squall.task", "INFO", "printed at the end\n"),
]


def assert_task_output(text_: str, dags: Path, *, console: bool = False) -> None:
    """``text_`` (task ``out``'s log, or with ``console`` a process's standard error) has
    all of its output as log lines, masked, in order."""
    wanted = [(f"{level} {name}: " if console else f"{{{name}}} {level} - ")
              + message.replace("{dags}", str(dags)) for name, level, message in OUTPUT]
    missing = [line for line in wanted if line not in text_]
    assert not missing, f"{missing} not in:\n{text_}"
    at = [text_.index(line) for line in wanted]
    assert at == sorted(at), text_
    assert "s3cr3t" not in text_ and "Pa55" not in text_


def test_a_task_that_prints_a_password_logs_stars(tmp_path: Path) -> None:
    env = {"SQUALL__CORE__FERNET_KEY": KEY, "SQUALL__CORE__DAGS_FOLDER": str(tmp_path / "dags")}
    home = tmp_path / "home"
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "secrets_dag.py").write_text(SECRETS_DAG)
    ok(squall(home, "connections", "add", "my_db", "--conn-uri", URI, env=env))
    ok(squall(home, "variables", "set", "service_token", "tok-778899", env=env))
    run = squall(home, "dags", "test", "secrets_dag", "-o", "json", env=env)
    result = as_json(ok(run))
    assert {t["task_id"]: t["state"] for t in result["task_instances"]} == {
        "py": "success", "sh": "success", "out": "success"}
    logs = {p.parent.name: p.read_text() for p in (home / "logs").rglob("attempt=*.log")}
    assert set(logs) == {"task_id=py", "task_id=sh", "task_id=out"}
    # what the task wrote is in its log, and on the console as log lines, masked
    assert_task_output(logs["task_id=out"], tmp_path / "dags")
    assert_task_output(run.stderr, tmp_path / "dags", console=True)
    assert f"with password {MASK}" in logs["task_id=py"]
    assert f"the token is {MASK}" in logs["task_id=py"]
    assert f"password={MASK} host=db.example.com" in logs["task_id=sh"]
    for text_ in (*logs.values(), run.stderr, run.stdout):
        assert "s3cr3t" not in text_ and "Pa55" not in text_ and "tok-778899" not in text_


@pytest.mark.integration
def test_a_worker_run_logs_stars_for_the_password(request: pytest.FixtureRequest,
                                                  tmp_path: Path) -> None:
    """The same DAG through a real scheduler and Celery worker (Redis + PostgreSQL): the task
    process, forked by the worker's fork server, reads the connection from the database.
    What task ``out`` wrote is in its log, masked, read through the API and the CLI; the
    worker's console has it only masked."""
    from tests.integration.test_cluster import make_cluster
    from tests.support.api import serve

    cluster = make_cluster(request, "redis-pg", tmp_path / "home")
    cluster.extra_env["SQUALL__CORE__FERNET_KEY"] = KEY
    try:
        (cluster.dags_folder / "secrets_dag.py").write_text(SECRETS_DAG)
        cluster.cli("db", "migrate")
        cluster.cli("connections", "add", "my_db", "--conn-uri", URI)
        cluster.cli("variables", "set", "service_token", "tok-778899")
        cluster.start_scheduler()
        cluster.start_worker()
        run_id = cluster.trigger("secrets_dag")
        assert cluster.wait_for_run("secrets_dag", run_id) == "success", cluster.logs()
        logs = {p.parent.name: p.read_text()
                for p in (cluster.home / "logs").rglob("attempt=*.log")}
        assert f"with password {MASK}" in logs["task_id=py"]
        assert f"password={MASK} host=db.example.com" in logs["task_id=sh"]
        assert_task_output(logs["task_id=out"], cluster.dags_folder)
        everything = "\n".join([*logs.values(), cluster.logs(tail=100000)])
        assert "s3cr3t" not in everything and "tok-778899" not in everything
        # the worker's console (squall standalone's, too) has them as log lines, masked
        assert_task_output(cluster.logs("w1", tail=100000), cluster.dags_folder, console=True)
        assert_task_output(cluster.cli("tasks", "logs", "secrets_dag", "out", run_id).stdout,
                           cluster.dags_folder)
        settings = Settings.load(env={"SQUALL_HOME": str(cluster.home)})
        with serve(settings, cluster.session_factory) as api:
            url = f"/api/v1/dags/secrets_dag/dagRuns/{run_id}/taskInstances/out/logs/1"
            response = api.get(url, params={"full_content": "true"})
        assert response.status_code == 200, response.text
        assert_task_output(response.json()["content"], cluster.dags_folder)
    finally:
        cluster.stop_all()


def test_the_connections_commands_write_audit_entries(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(squall(home, "connections", "add", "warehouse", "--conn-uri",
              "postgres://etl:pw-98765@db:5432/dw"))
    ok(squall(home, "connections", "delete", "warehouse"))
    with sqlite3.connect(home / "squall.db") as db:
        rows = db.execute("SELECT event, owner, extra FROM log ORDER BY id").fetchall()
    assert [(e, json.loads(x)) for e, _, x in rows] == [
        ("connection.edit", {"conn_id": "warehouse", "source": "cli"}),
        ("connection.delete", {"conn_id": "warehouse", "source": "cli"})]
    assert all(owner.startswith("cli:") for _, owner, _ in rows)
    assert "pw-98765" not in json.dumps(rows)
