"""``/api/v1/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/logs/{try}``: a
try's log, from anywhere (``docs/logs.md``).

The log is read from this host's log folder when the file is there (the API runs on the
worker's host, or the log folder is shared); else from the log server of the worker that
ran the try: the host part of the task instance's ``hostname`` (``w1@host`` -> ``host``) on
``[logging] worker_log_server_port``, with a request token signed by ``[api] secret_key``.
A worker that cannot be reached (or refuses) is a 503 problem that names the host and why,
and whether the worker's ``job`` rows show it gone: a replaced worker's logs outlive it only
in a log folder the API shares (ADR 23).

As Airflow's, the answer is ``{"content": ..., "continuation_token": ...}`` (or the text
alone with ``Accept: text/plain``); passing the token back reads what was added since, so
a running try's log can be followed. The token is signed base64 JSON:
``{"log_pos": bytes read, "end_of_log": whether the try is over and all of it was read}``
plus the try it belongs to.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.api.auth import Viewer
from squall.api.problems import ApiProblem, bad_request, not_found
from squall.api.schemas import ERRORS, Error
from squall.api.state import DB, api_state
from squall.common.models import (
    DagModel,
    DagRun,
    Job,
    TaskInstance,
    utcnow,
)
from squall.common.state import FINISHED_STATES, JobState, TaskInstanceState
from squall.execution.runner import task_log_path
from squall.worker.log_signing import (
    LOG_CONTINUATION,
    BadToken,
    seal,
    sign_log_request,
    unseal,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["TaskInstance"], responses=ERRORS)

#: the most bytes one answer holds (the rest: pass its continuation token back)
MAX_READ = 16 * 1024 * 1024
#: how long the API waits for a worker's log server (seconds)
FETCH_TIMEOUT = 5.0
_CONTENT_RANGE = re.compile(r"bytes (?:\d+-\d+|\*)/(\d+)")


class TaskLog(BaseModel):
    """A piece of a try's log and where to go on from (Airflow's inline response)."""

    model_config = ConfigDict(extra="forbid")
    continuation_token: str
    content: str


@dataclass
class Piece:
    """Bytes of a log from ``offset`` on, and the file's size then (None: no file)."""

    data: bytes
    size: int | None


class WorkerUnreachable(Exception):
    pass


def worker_host(hostname: str) -> str:
    """The network host of a task instance's ``hostname``: a Celery node name
    ``name@host`` -> ``host``; anything else as it is."""
    return hostname.rpartition("@")[2]


def _read_local(path: Path, offset: int, limit: int) -> Piece | None:
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(offset)
            return Piece(handle.read(max(0, min(limit, size - offset))), size)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _read_remote(host: str, port: int, secret_key: str, relative: str, offset: int,
                 limit: int) -> Piece:
    netloc = f"[{host}]" if ":" in host else host  # an IPv6 address
    url = f"http://{netloc}:{port}/log/{quote(relative, safe='/=')}"
    headers = {"Authorization": f"Bearer {sign_log_request(secret_key, relative)}",
               "Range": f"bytes={offset}-{offset + limit - 1}"}
    try:
        response = httpx.get(url, headers=headers, timeout=FETCH_TIMEOUT)
    except httpx.HTTPError as exc:
        raise WorkerUnreachable(f"{type(exc).__name__}: {exc}") from None
    if response.status_code == 404:
        return Piece(b"", None)
    if response.status_code == 403:
        raise WorkerUnreachable(f"its log server refused the request ({response.text.strip()}"
                                "); is [api] secret_key the same on the API and the worker?")
    if response.status_code not in (200, 206, 416):
        raise WorkerUnreachable(f"its log server answered {response.status_code}: "
                                f"{response.text.strip()[:200]}")
    match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
    data = b"" if response.status_code == 416 else response.content
    if response.status_code == 200:  # the whole file
        return Piece(data[offset:offset + limit], len(data))
    size = int(match.group(1)) if match else offset + len(data)
    return Piece(data, size)


def _complete_utf8(data: bytes) -> bytes:
    """``data`` without a UTF-8 character cut at its end (read again next time)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data
        if byte >= 0xC0:  # the lead byte of the last character
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= need else data[:-back]
    return data


def _task_instance(session: Session, dag_id: str, run_id: str, task_id: str,
                   map_index: int) -> TaskInstance:
    ti = session.get(TaskInstance, (dag_id, task_id, run_id, map_index))
    if ti is not None:
        return ti
    if session.get(DagModel, dag_id) is None:
        raise not_found(f"DAG with dag_id: '{dag_id}' not found")
    if session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id,
                                              DagRun.run_id == run_id)) is None:
        raise not_found(f"DAGRun with DAG ID: '{dag_id}' and DagRun ID: '{run_id}' not found")
    if map_index == -1 and session.scalar(select(TaskInstance.map_index).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id).limit(1)) is not None:
        raise not_found(f"Task instance {task_id} of DAG run {dag_id} {run_id} is mapped: "
                        "give the map_index of one of its instances")
    which = task_id if map_index == -1 else f"{task_id} map_index {map_index}"
    raise not_found(f"Task instance {which} of DAG run {dag_id} {run_id} not found")


def _position(secret_key: str, token: str | None, ident: list[Any]) -> int:
    if not token:
        return 0
    try:
        data = unseal(secret_key, LOG_CONTINUATION, token)
    except BadToken as exc:
        raise bad_request(f"bad continuation token ({exc}): pass back only tokens this API "
                          "gave for the same try") from None
    pos = data.get("log_pos")
    if data.get("ti") != ident or not isinstance(pos, int) or pos < 0:
        raise bad_request("bad continuation token: it was given for another try's log")
    return pos


def _wants_text(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/plain" in accept and "application/json" not in accept


@router.get(
    "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/logs/{task_try_number}",
    summary="Get the log of one try of a task instance", response_model=TaskLog,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}},
              "description": "the log (JSON with a continuation token, or the text alone "
              "with Accept: text/plain)"},
        503: {"model": Error, "description": "the worker that has the log cannot be "
              "reached, or its log server refused the request"},
    })
def get_log(
    dag_id: str, dag_run_id: str, task_id: str, task_try_number: int, request: Request,
    session: DB, user: Viewer,
    full_content: Annotated[bool, Query(description="the whole log, from its start")] = False,
    map_index: Annotated[int, Query(description="the instance of a mapped task (-1: "
                                    "not mapped)")] = -1,
    token: Annotated[str | None, Query(description="a continuation token from a previous "
                                       "answer: read on from where it ended")] = None,
) -> Any:
    state = api_state(request)
    ti = _task_instance(session, dag_id, dag_run_id, task_id, map_index)
    if not 1 <= task_try_number <= ti.try_number:
        raise not_found(f"Task instance {ti.key} try {task_try_number} not found: it has had "
                        f"{ti.try_number} tr{'y' if ti.try_number == 1 else 'ies'}")
    ident = [dag_id, dag_run_id, task_id, task_try_number]
    if map_index != -1:
        ident.append(map_index)
    offset = 0 if full_content else _position(state.secret_key, token, ident)
    may_grow = (task_try_number == ti.try_number
                and ti.state not in FINISHED_STATES
                and ti.state != TaskInstanceState.UP_FOR_RETRY)
    folder = state.settings.log_folder
    try:
        piece = read_log(folder, ti, task_try_number, offset, state.secret_key,
                         state.settings.logging.worker_log_server_port)
    except LogUnreadable as exc:
        detail = str(exc)
        fate = worker_fate(session, ti.hostname or "",
                           state.settings.scheduler.scheduler_health_check_threshold)
        if fate:
            detail += (f"; {fate}. A worker's logs outlive it only in a log folder the API "
                       f"shares (its {folder}): see docs/logs.md")
        raise ApiProblem(503, detail) from None
    if piece.size is None and not may_grow:
        where = f"in {folder}" + (f" nor on worker {ti.hostname}" if ti.hostname else "")
        raise not_found(f"Log of task instance {ti.key} try {task_try_number} not found: no "
                        f"file {where}")
    size = piece.size or 0
    data = piece.data
    if may_grow or offset + len(data) < size:
        data = _complete_utf8(data)
    new_pos = offset + len(data)
    end_of_log = not may_grow and new_pos >= size
    continuation = seal(state.secret_key, LOG_CONTINUATION,
                        {"ti": ident, "log_pos": new_pos, "end_of_log": end_of_log})
    content = data.decode("utf-8", errors="replace")
    if _wants_text(request):
        return PlainTextResponse(content, headers={"X-Continuation-Token": continuation})
    return {"continuation_token": continuation, "content": content}


def read_log(folder: Path, ti: TaskInstance, try_number: int, offset: int, secret_key: str,
             port: int, limit: int | None = None) -> Piece:
    """Up to ``limit`` (default :data:`MAX_READ`) bytes of try ``try_number``'s log from
    ``offset`` on: from ``folder`` when the file is there, else from the log server of the
    worker recorded on ``ti``; :class:`LogUnreadable` when that worker cannot be read."""
    limit = MAX_READ if limit is None else limit
    key = ti.key
    local = _read_local(task_log_path(folder, key, try_number), offset, limit)
    if local is not None or not ti.hostname:
        return local or Piece(b"", None)
    relative = task_log_path(Path(), key, try_number).as_posix()
    host = worker_host(ti.hostname)
    try:
        return _read_remote(host, port, secret_key, relative, offset, limit)
    except WorkerUnreachable as exc:
        log.warning("api: cannot read the log of %s try %d from %s:%d: %s", key, try_number,
                    host, port, exc)
        raise LogUnreadable(f"Could not read the log of try {try_number} from worker "
                            f"{ti.hostname} (http://{host}:{port}): {exc}") from None


class LogUnreadable(Exception):
    """The log is not in this host's log folder, and the worker that ran the try could not
    be read; the message names the worker, the URL tried and why."""


def worker_fate(session: Session, hostname: str, threshold: float) -> str | None:
    """Why the worker named ``hostname`` may be beyond reach, from its ``job`` rows: gone
    (its latest row ended, or stopped heartbeating ``threshold`` seconds ago) or never seen;
    None while it heartbeats (then the network or its log server is at fault)."""
    from squall.worker.worker_job import JOB_TYPE  # the worker's modules only when needed

    job = session.scalars(select(Job).where(Job.job_type == JOB_TYPE, Job.hostname == hostname)
                          .order_by(Job.id.desc()).limit(1)).first()
    if job is None:
        return f"no worker named {hostname} has a job row: it is gone, or never ran here"
    if job.state != JobState.RUNNING:
        when = f" at {job.end_date.isoformat(timespec='seconds')}" if job.end_date else ""
        return f"worker {hostname} is gone: it stopped{when}"
    beat = job.latest_heartbeat
    if beat is not None and (utcnow() - beat).total_seconds() > threshold:
        return (f"worker {hostname} is gone: no heartbeat since "
                f"{beat.isoformat(timespec='seconds')}")
    return None
