"""``squall users create | list | delete`` and ``squall api`` as a user runs them: in a
subprocess, on the SQLite database under SQUALL_HOME; the created user then logs in to a
real ``squall api`` of two server processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.integration.test_cli import as_json, assert_clean_error, ok, squall
from tests.support.services import wait_until


def test_create_list_delete_and_log_in(tmp_path: Path) -> None:
    secret = "s3cret-pass-42"
    created = ok(squall(tmp_path, "users", "create", "-u", "ana", "-r", "op", "-p", secret))
    assert "User ana created (op)" in created.stdout
    assert secret not in created.stdout + created.stderr
    rows = as_json(ok(squall(tmp_path, "users", "list", "-o", "json")))
    assert [(r["username"], r["role"]) for r in rows] == [("ana", "op")]
    assert secret not in str(rows)

    assert_clean_error(squall(tmp_path, "users", "create", "-u", "ana", "-r", "op", "-p",
                              secret), 1, "user ana already exists")
    assert_clean_error(squall(tmp_path, "users", "create", "-u", "bob", "-r", "op", "-p",
                              "short"), 1, "at least 8 characters")
    assert_clean_error(squall(tmp_path, "users", "create", "-u", "bad name", "-r", "op",
                              "-p", secret), 1, "username 'bad name'")
    bad_role = squall(tmp_path, "users", "create", "-u", "bob", "-r", "root", "-p", secret)
    assert bad_role.returncode == 2 and "invalid choice: 'root'" in bad_role.stderr
    # no terminal to ask on: a clear error, not a hang
    assert_clean_error(squall(tmp_path, "users", "create", "-u", "bob", "-r", "viewer"), 1,
                       "--password is required when there is no terminal")

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    env.update({"SQUALL_HOME": str(tmp_path), "SQUALL__API__PORT": str(port)})
    server = subprocess.Popen([sys.executable, "-m", "squall", "api", "--workers", "2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(base) or server.poll() is not None, 60,
                   message="squall api to answer")
        assert server.poll() is None
        assert httpx.get(f"{base}/api/v1/version", auth=("ana", secret)).status_code == 200
        assert httpx.get(f"{base}/api/v1/version", auth=("ana", "wrong-pass")).status_code == 401

        ok(squall(tmp_path, "users", "delete", "-u", "ana"))
        assert httpx.get(f"{base}/api/v1/version", auth=("ana", secret)).status_code == 401
        assert_clean_error(squall(tmp_path, "users", "delete", "-u", "ana"), 1, "no user ana")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert secret not in err.decode()


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_create_reads_the_password_from_standard_input(tmp_path: Path) -> None:
    """``--password-stdin``: what scripts (squall-init) use, so that the password is never on
    a command line that ``ps`` shows."""
    secret = "from-stdin-pass-7"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    environ["SQUALL_HOME"] = str(tmp_path)

    def create(user: str, stdin: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "squall", "users", "create", "-u", user,
                               "-r", "admin", "--password-stdin", *extra], input=stdin,
                              env=environ, capture_output=True, text=True, timeout=120,
                              check=False)

    made = ok(create("root-admin", secret + "\n"))
    assert "User root-admin created (admin)" in made.stdout
    assert secret not in made.stdout + made.stderr
    assert_clean_error(create("other", ""), 1, "standard input held no password")
    both = create("other", secret, "-p", secret)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr

    from sqlalchemy import select

    from squall.api.passwords import check_password  # the stored hash is of the line read
    from squall.common.db import make_engine
    from squall.common.models import User
    from squall.common.settings import Settings

    engine = make_engine(Settings.load(env=environ).sql_alchemy_conn)
    try:
        with engine.connect() as conn:
            stored = conn.scalars(select(User.password_hash)
                                  .where(User.username == "root-admin")).one()
    finally:
        engine.dispose()
    assert check_password(secret, stored)
    assert not check_password(secret + "\n", stored)
