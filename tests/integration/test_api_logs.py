"""Task logs from anywhere: the worker's log server on its own (signed requests only, only
inside its folder, ranges), and the API's logs endpoint reading a try's log from its own log
folder or over HTTP from the worker's log server, following a growing log with continuation
tokens, and saying clearly when the worker cannot be read (and whether it is gone); then a
real worker in another home, read through the API while its task runs, after, and once the
worker is gone (a clear 503, or the log read in a shared folder)."""

from __future__ import annotations

import base64
import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import update

from squall.api.routes import logs as logs_route
from squall.common.db import SessionFactory, session_scope
from squall.common.models import DagModel, DagRun, Job, TaskInstance, utcnow
from squall.common.settings import Settings
from squall.worker.log_server import LogServer, start_log_server
from squall.worker.log_signing import sign_log_request
from squall.worker.worker_job import JOB_TYPE as WORKER_JOB
from tests.support.api import Api, basic, serve
from tests.support.services import free_port, wait_until

KEY = "a-shared-secret-for-tests"
REL = "dag_id=d1/run_id=manual__2024-01-01T00:00:00+00:00/task_id=t1/attempt=1.log"
RUN_ID = "manual__2024-01-01T00:00:00+00:00"
URL = f"/api/v1/dags/d1/dagRuns/{RUN_ID}/taskInstances/t1/logs"


def _write(folder: Path, text: str | bytes, rel: str = REL, mode: str = "w") -> Path:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open(mode + "b") as handle:
        handle.write(text.encode() if isinstance(text, str) else text)
    return path


@pytest.fixture
def worker_logs(tmp_path: Path) -> Iterator[tuple[LogServer, Path]]:
    folder = tmp_path / "worker-logs"
    folder.mkdir()
    server = LogServer(folder, KEY, host="127.0.0.1", port=0).start()
    yield server, folder
    server.stop()


def _fetch(server: LogServer, rel: str, token: str | None = None,
           headers: dict[str, str] | None = None) -> httpx.Response:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    quoted = quote(rel, safe="/=").replace(".", "%2E")  # so that the client keeps any ..
    return httpx.get(f"http://127.0.0.1:{server.port}/log/{quoted}",
                     headers=sent, timeout=10)


# ------------------------------------------------------------------ the log server alone


def test_log_server_serves_a_signed_request(worker_logs: tuple[LogServer, Path]) -> None:
    server, folder = worker_logs
    _write(folder, "line one\nline two\n")
    response = _fetch(server, REL, sign_log_request(KEY, REL))
    assert response.status_code == 200, response.text
    assert response.text == "line one\nline two\n"
    assert response.headers["content-type"].startswith("text/plain")


def test_log_server_refuses_unsigned_and_badly_signed_requests(
        worker_logs: tuple[LogServer, Path]) -> None:
    server, folder = worker_logs
    _write(folder, "secret log\n")
    other = REL.replace("t1", "t2")
    _write(folder, "other\n", other)
    cases = {
        "no token": _fetch(server, REL),
        "not bearer": _fetch(server, REL, headers={"Authorization": "Basic eDp5"}),
        "another key": _fetch(server, REL, sign_log_request("another-key", REL)),
        "expired": _fetch(server, REL, sign_log_request(KEY, REL, now=0)),
        "another file": _fetch(server, REL, sign_log_request(KEY, other)),
        "garbage": _fetch(server, REL, "not.a-token"),
    }
    for case, response in cases.items():
        assert response.status_code == 403, (case, response.text)
        assert "secret log" not in response.text
    assert "expired" in cases["expired"].text
    assert "another file" in cases["another file"].text


def test_log_server_keeps_to_its_folder(worker_logs: tuple[LogServer, Path],
                                        tmp_path: Path) -> None:
    server, folder = worker_logs
    outside = tmp_path / "outside.txt"
    outside.write_text("not a log\n")
    (folder / "link.log").symlink_to(outside)
    for rel in ("../outside.txt", str(outside), "link.log", "a//b.log", "."):
        response = _fetch(server, rel, sign_log_request(KEY, rel))
        assert response.status_code == 403, (rel, response.text)
        assert "not a log" not in response.text
    # a symlink that stays inside is followed
    _write(folder, "inside\n", "real.log")
    (folder / "alias.log").symlink_to(folder / "real.log")
    assert _fetch(server, "alias.log", sign_log_request(KEY, "alias.log")).text == "inside\n"


def test_log_server_missing_file_and_directory_are_404(
        worker_logs: tuple[LogServer, Path]) -> None:
    server, folder = worker_logs
    _write(folder, "x\n")
    for rel in (REL.replace("attempt=1", "attempt=2"), "dag_id=d1"):
        response = _fetch(server, rel, sign_log_request(KEY, rel))
        assert response.status_code == 404, (rel, response.text)
    assert _fetch(server, "nowhere").status_code == 403  # unsigned: nothing is told


def test_log_server_answers_ranges(worker_logs: tuple[LogServer, Path]) -> None:
    server, folder = worker_logs
    _write(folder, "0123456789")
    token = sign_log_request(KEY, REL)
    tail = _fetch(server, REL, token, {"Range": "bytes=4-"})
    assert tail.status_code == 206 and tail.text == "456789"
    assert tail.headers["content-range"] == "bytes 4-9/10"
    middle = _fetch(server, REL, token, {"Range": "bytes=2-4"})
    assert middle.status_code == 206 and middle.text == "234"
    past = _fetch(server, REL, token, {"Range": "bytes=10-"})
    assert past.status_code == 416 and past.headers["content-range"] == "bytes */10"
    bad = _fetch(server, REL, token, {"Range": "lines=1-"})
    assert bad.status_code == 400


def test_a_taken_port_is_logged_and_not_fatal(worker_logs: tuple[LogServer, Path],
                                              tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    server, _ = worker_logs
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path / "home")}, overrides={
        "api": {"secret_key": KEY}, "logging": {"worker_log_server_port": server.port}})
    with caplog.at_level(logging.ERROR, logger="squall.worker.log_server"):
        assert start_log_server(settings) is None
    assert f"cannot serve task logs on port {server.port}" in caplog.text


def test_the_worker_host_and_whole_characters() -> None:
    assert logs_route.worker_host("w1@node-3.example") == "node-3.example"
    assert logs_route.worker_host("node-3") == "node-3"
    text = "aé€😀".encode()
    cuts = {n: logs_route._complete_utf8(text[:n]) for n in range(len(text) + 1)}
    assert [c.decode() for c in cuts.values()] == [
        "", "a", "a", "aé", "aé", "aé", "aé€", "aé€", "aé€", "aé€", "aé€😀"]


# ------------------------------------------------------------------ the API's endpoint


@dataclass
class LogsApi:
    api: Api
    factory: SessionFactory
    api_folder: Path
    worker_folder: Path
    server: LogServer

    def set_ti(self, **values: Any) -> None:
        with session_scope(self.factory) as session:
            ti = session.get(TaskInstance, ("d1", "t1", RUN_ID, -1))
            assert ti is not None
            for name, value in values.items():
                setattr(ti, name, value)


def _token_data(token: str) -> dict[str, Any]:
    payload = token.partition(".")[0]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload)
                                                                                 % 4)))
    return data


@pytest.fixture
def logs_api(tmp_path: Path, session_factory: SessionFactory,
             worker_logs: tuple[LogServer, Path]) -> Iterator[LogsApi]:
    server, worker_folder = worker_logs
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path / "api-home")}, overrides={
        "api": {"secret_key": KEY}, "logging": {"worker_log_server_port": server.port}})
    with session_scope(session_factory) as session:
        session.add(DagModel(dag_id="d1", fileloc="/dags/d1.py"))
        session.flush()
        session.add(DagRun(dag_id="d1", run_id=RUN_ID,
                           logical_date=datetime(2024, 1, 1, tzinfo=UTC)))
        session.flush()
        session.add(TaskInstance(dag_id="d1", task_id="t1", run_id=RUN_ID, try_number=1,
                                 state="success", hostname="w1@127.0.0.1"))
    with serve(settings, session_factory) as api:
        yield LogsApi(api, session_factory, settings.log_folder, worker_folder, server)


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_api_reads_a_log_in_its_own_folder(logs_api: LogsApi) -> None:
    _write(logs_api.api_folder, "from the shared folder\n")
    logs_api.set_ti(hostname="w1@host.invalid")  # never asked: the file is here
    body = logs_api.api.get(f"{URL}/1", user="viewer").json()
    assert body["content"] == "from the shared folder\n"
    token = _token_data(body["continuation_token"])
    assert token["log_pos"] == len("from the shared folder\n") and token["end_of_log"]
    text = logs_api.api.client.get(f"{URL}/1", headers={**basic("viewer"),
                                                        "Accept": "text/plain"})
    assert text.status_code == 200 and text.text == "from the shared folder\n"
    assert text.headers["content-type"].startswith("text/plain")
    assert logs_api.api.get(f"{URL}/1", user=None).status_code == 401


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_api_reads_a_log_from_the_workers_log_server(logs_api: LogsApi) -> None:
    _write(logs_api.worker_folder, "from the worker\n")
    assert not (logs_api.api_folder / REL).exists()
    body = logs_api.api.get(f"{URL}/1").json()
    assert body["content"] == "from the worker\n"
    assert _token_data(body["continuation_token"])["end_of_log"] is True


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_continuation_tokens_follow_a_growing_log(logs_api: LogsApi,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    logs_api.set_ti(state="running")
    first = logs_api.api.get(f"{URL}/1").json()  # not created yet: nothing so far
    assert first["content"] == ""
    _write(logs_api.worker_folder, "one\n")
    second = logs_api.api.get(f"{URL}/1", params={"token": first["continuation_token"]}).json()
    assert second["content"] == "one\n"
    _write(logs_api.worker_folder, b"two\n" + "é".encode()[:1], mode="a")
    third = logs_api.api.get(f"{URL}/1", params={"token": second["continuation_token"]}).json()
    assert third["content"] == "two\n"  # half a character waits for its other half
    assert _token_data(third["continuation_token"])["end_of_log"] is False
    _write(logs_api.worker_folder, "é".encode()[1:] + b"\nthree\n", mode="a")
    monkeypatch.setattr(logs_route, "MAX_READ", 4)  # in pieces of at most 4 bytes
    seen, token = "", third["continuation_token"]
    for _ in range(10):
        page = logs_api.api.get(f"{URL}/1", params={"token": token}).json()
        seen, token = seen + page["content"], page["continuation_token"]
    assert seen == "é\nthree\n"
    assert _token_data(token)["end_of_log"] is False
    logs_api.set_ti(state="success")
    last = logs_api.api.get(f"{URL}/1", params={"token": token}).json()
    assert last["content"] == "" and _token_data(last["continuation_token"])["end_of_log"]
    monkeypatch.setattr(logs_route, "MAX_READ", 1 << 20)
    full = logs_api.api.get(f"{URL}/1", params={"token": token, "full_content": "true"})
    assert full.json()["content"] == "one\ntwo\né\nthree\n"


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_unknown_things_and_bad_tokens(logs_api: LogsApi) -> None:
    _write(logs_api.worker_folder, "x\n")
    for url, fragment in (
        (f"/api/v1/dags/nope/dagRuns/{RUN_ID}/taskInstances/t1/logs/1", "DAG with dag_id"),
        ("/api/v1/dags/d1/dagRuns/nope/taskInstances/t1/logs/1", "DAGRun with DAG ID"),
        (f"/api/v1/dags/d1/dagRuns/{RUN_ID}/taskInstances/nope/logs/1", "Task instance nope"),
        (f"{URL}/2", "try 2 not found"),
        (f"{URL}/0", "try 0 not found"),
        (f"{URL}/1?map_index=3", "t1 map_index 3 of DAG run d1"),
    ):
        response = logs_api.api.get(url)
        assert response.status_code == 404, (url, response.text)
        assert fragment in response.json()["detail"]
    assert logs_api.api.get(f"{URL}/abc").status_code == 400
    forged = logs_api.api.get(f"{URL}/1", params={"token": "eyJsb2dfcG9zIjowfQ.00"})
    assert forged.status_code == 400 and "bad continuation token" in forged.json()["detail"]
    logs_api.set_ti(try_number=2)
    other_try = logs_api.api.get(f"{URL}/1").json()["continuation_token"]
    misused = logs_api.api.get(f"{URL}/2", params={"token": other_try})
    assert misused.status_code == 400 and "another try" in misused.json()["detail"]


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_missing_log(logs_api: LogsApi) -> None:
    missing = logs_api.api.get(f"{URL}/1")  # a finished try whose file is nowhere
    assert missing.status_code == 404
    assert "worker w1@127.0.0.1" in missing.json()["detail"]
    logs_api.set_ti(state="queued", hostname=None)  # not started yet: nothing so far
    assert logs_api.api.get(f"{URL}/1").json()["content"] == ""


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_an_unreachable_or_refusing_worker_is_a_clear_503(logs_api: LogsApi) -> None:
    _write(logs_api.worker_folder, "x\n")
    port = logs_api.server.port
    logs_api.server.stop()
    down = logs_api.api.get(f"{URL}/1")
    assert down.status_code == 503, down.text
    detail = down.json()["detail"]
    assert detail.startswith("Could not read the log of try 1 from worker w1@127.0.0.1 "
                             f"(http://127.0.0.1:{port})"), detail
    assert "ConnectError" in detail
    # why: the worker's job rows tell whether it is gone
    assert "; no worker named w1@127.0.0.1 has a job row: it is gone" in detail, detail
    with session_scope(logs_api.factory) as session:
        job = Job(job_type=WORKER_JOB, hostname="w1@127.0.0.1", state="running",
                  latest_heartbeat=datetime(2024, 1, 1, tzinfo=UTC))
        session.add(job)
    stale = logs_api.api.get(f"{URL}/1").json()["detail"]
    assert "worker w1@127.0.0.1 is gone: no heartbeat since 2024-01-01T00:00:00" in stale, \
        stale
    with session_scope(logs_api.factory) as session:
        session.execute(update(Job).values(latest_heartbeat=utcnow()))
    alive = logs_api.api.get(f"{URL}/1").json()["detail"]  # the network is at fault
    assert alive.endswith("Connection refused"), alive
    stranger = LogServer(logs_api.worker_folder, "another-key", host="127.0.0.1",
                         port=port).start()
    try:
        refused = logs_api.api.get(f"{URL}/1")
    finally:
        stranger.stop()
    assert refused.status_code == 503
    assert "refused" in refused.json()["detail"] and "secret_key" in refused.json()["detail"]


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_the_route_is_documented_with_its_answers(logs_api: LogsApi) -> None:
    path = ("/api/v1/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/logs/"
            "{task_try_number}")
    responses = logs_api.api.openapi["paths"][path]["get"]["responses"]
    assert {"200", "400", "401", "403", "404", "503"} <= set(responses)
    assert set(responses["200"]["content"]) == {"application/json", "text/plain"}



# ------------------------------------------------------------------ a real worker


TAIL_DAG = '''
import logging
import os
import time

import pendulum
from squall import DAG, PythonOperator

RELEASE = os.environ["SQUALL_TEST_RELEASE"]
log = logging.getLogger("talker")


def talk():
    print("printed by the task")
    log.info("said before the wait")
    deadline = time.monotonic() + 120
    while not os.path.exists(RELEASE) and time.monotonic() < deadline:
        time.sleep(0.1)
    log.info("said after the wait")


with DAG("tail", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    PythonOperator(task_id="talk", python_callable=talk)
'''


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.integration
@pytest.mark.postgres
def test_a_workers_log_is_read_through_the_api_while_it_runs_and_after(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from tests.integration.test_cluster import make_cluster

    port, release = free_port(), tmp_path / "release"
    cluster = make_cluster(request, "redis-pg", tmp_path / "worker-home")
    cluster.extra_env.update({"SQUALL__API__SECRET_KEY": KEY,
                              "SQUALL__LOGGING__WORKER_LOG_SERVER_PORT": str(port),
                              "SQUALL_TEST_RELEASE": str(release)})
    (cluster.dags_folder / "tail.py").write_text(TAIL_DAG)
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path / "api-home")}, overrides={
        "api": {"secret_key": KEY}, "logging": {"worker_log_server_port": port}})
    try:
        cluster.cli("db", "migrate")
        cluster.start_scheduler()
        worker = cluster.start_worker("w1")
        assert f"serving task logs of {cluster.home / 'logs'} on port {port}" in \
            cluster.logs("w1"), cluster.logs("w1")
        run_id = cluster.trigger("tail")
        url = f"/api/v1/dags/tail/dagRuns/{run_id}/taskInstances/talk/logs/1"
        with serve(settings, cluster.session_factory) as api:
            seen, token = [""], [""]

            def read_on() -> bool:
                response = api.get(url, params={"token": token[0]} if token[0] else {})
                if response.status_code == 404:  # not queued yet: no try 1
                    return False
                assert response.status_code == 200, response.text
                body = response.json()
                seen[0] += body["content"]
                token[0] = body["continuation_token"]
                return "said before the wait" in seen[0]

            wait_until(read_on, 90, interval=0.2,
                       message=f"the running try's log through the API:\n{cluster.logs()}")
            ti = cluster.task_instances("tail", run_id)["talk"]
            assert ti.state == "running" and ti.hostname and ti.hostname.startswith("w1@")
            assert "said after the wait" not in seen[0]
            assert not _token_data(token[0])["end_of_log"]
            rel = f"dag_id=tail/run_id={run_id}/task_id=talk/attempt=1.log"
            assert (cluster.home / "logs" / rel).is_file()
            assert not (settings.log_folder / rel).exists()  # so it came over HTTP
            release.touch()
            assert cluster.wait_for_run("tail", run_id) == "success", cluster.logs()
            rest = api.get(url, params={"token": token[0]}).json()
            assert "said after the wait" in rest["content"]
            assert "said before the wait" not in rest["content"]
            assert _token_data(rest["continuation_token"])["end_of_log"] is True
            full = api.get(url, params={"full_content": "true"}).json()["content"]
            assert full == (cluster.home / "logs" / rel).read_text()
            assert full.index("said before the wait") < full.index("said after the wait")
        cluster.stop(worker)  # its log server stops with it
        wait_until(lambda: not _listening(port), 10, message="the log server to stop")
        # the worker is gone (replaced, scaled away): the API says so, and where logs live on
        with serve(settings, cluster.session_factory, users=False) as api:
            gone = api.get(url)
        assert gone.status_code == 503, gone.text
        detail = gone.json()["detail"]
        assert f"worker {ti.hostname} is gone: it stopped at " in detail, detail
        assert f"a log folder the API shares (its {settings.log_folder})" in detail, detail
        # with the worker's log folder shared, the API reads it there: no worker is asked
        shared = Settings.load(env={"SQUALL_HOME": str(tmp_path / "api-home")}, overrides={
            "api": {"secret_key": KEY}, "logging": {"worker_log_server_port": port,
                                                    "base_log_folder": str(cluster.home /
                                                                           "logs")}})
        with serve(shared, cluster.session_factory, users=False) as api:
            kept = api.get(url, params={"full_content": "true"})
        assert kept.status_code == 200, kept.text
        assert kept.json()["content"] == full
    finally:
        cluster.stop_all()
