"""BulkStateFetcher: the Celery states of everything in flight, in one round trip per chunk.

The scheduler asks for the states of all its in-flight Celery task ids at every sync. How
depends on the result backend of the app it is given:

* a key-value backend with ``mget`` (Redis): one ``MGET`` of the backend's own keys
  (``backend.get_key_for_task``) per chunk, values decoded with ``backend.decode``;
* the database backend (``db+...``): one ``SELECT task_id, status, result, traceback FROM
  celery_taskmeta WHERE task_id IN (...)`` per chunk, in a session of the backend's own
  (``backend.ResultSession()``);
* any other backend: ``AsyncResult(id).state`` for each id, on a thread pool of
  ``sync_parallelism`` threads (Celery keeps one backend instance per thread).

An id with no stored result is PENDING. Ids are deduplicated and split into chunks of
``chunk_size``. A failed read is logged once per call, with the exception; the ids of that
chunk and of every later one are left out of the answer (no further chunk is tried, so a
dead backend costs one timeout, not one per chunk), and the caller keeps them in flight.
While ``quiet`` is set (the caller knows the backend is down) failures are logged at DEBUG,
so an outage is logged once.

Failure details are decoded without rebuilding the exception (Celery's
``exception_to_python`` imports the module a result names): ``info`` is "Type: message" from
the stored exception, else the last line of the stored traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from celery import Celery, states
from celery.backends.base import BaseKeyValueStoreBackend
from celery.backends.database import DatabaseBackend
from sqlalchemy import select

log = logging.getLogger(__name__)

#: Celery states that end a task badly; their ``info`` carries the failure.
FAILED_STATES = frozenset({states.FAILURE, states.REVOKED})
_INFO_LIMIT = 2000


@dataclass(frozen=True)
class CeleryTaskState:
    """The Celery state of one task id, with the failure text for a failed one."""

    state: str
    info: str | None


PENDING = CeleryTaskState(states.PENDING, None)


class BulkStateFetcher:
    """Reads the Celery states of many task ids at once from ``app``'s result backend."""

    def __init__(self, app: Celery, *, sync_parallelism: int = 1, chunk_size: int = 1000) -> None:
        if sync_parallelism < 1:
            raise ValueError(f"sync_parallelism must be >= 1, got {sync_parallelism}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self._app = app
        self._parallelism = sync_parallelism
        self._chunk_size = chunk_size
        self._pool: ThreadPoolExecutor | None = None
        #: log read failures at DEBUG (set by the executor during an outage)
        self.quiet = False

    def get_many(self, task_ids: Iterable[str]) -> dict[str, CeleryTaskState]:
        """The state of each id that could be read; ids whose read failed are left out."""
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return {}
        chunks = [ids[i : i + self._chunk_size] for i in range(0, len(ids), self._chunk_size)]
        result: dict[str, CeleryTaskState] = {}
        backend: Any = None
        try:
            # Celery builds the backend on first use (a database one connects then)
            backend = self._app.backend
            if isinstance(backend, DatabaseBackend):
                fetched = self._from_database(backend, chunks)
            elif isinstance(backend, BaseKeyValueStoreBackend) and _has_mget(backend):
                fetched = self._from_key_value(backend, chunks)
            else:
                fetched = self._one_by_one(chunks)
            for chunk_states in fetched:
                result.update(chunk_states)
        except Exception as exc:
            log.log(
                logging.DEBUG if self.quiet else logging.WARNING,
                "BulkStateFetcher: could not read %d of %d task states from the %s result "
                "backend; they stay in flight until the next sync: %s",
                len(ids) - len(result), len(ids),
                type(backend).__name__ if backend is not None else "configured", exc,
                exc_info=None if self.quiet else exc,
            )
        return result

    def end(self) -> None:
        """Shut the thread pool down (the fallback path's only resource)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # ------------------------------------------------------------------ strategies

    @staticmethod
    def _from_key_value(
        backend: BaseKeyValueStoreBackend, chunks: Sequence[list[str]]
    ) -> Iterator[dict[str, CeleryTaskState]]:
        for chunk in chunks:
            keys = [backend.get_key_for_task(task_id) for task_id in chunk]
            values = backend.mget(keys)  # one round trip
            if isinstance(values, Mapping):  # some clients answer with a mapping
                values = [values.get(key) for key in keys]
            yield {
                task_id: PENDING if raw is None else _from_meta(backend, backend.decode(raw))
                for task_id, raw in zip(chunk, values, strict=True)
            }

    @staticmethod
    def _from_database(
        backend: DatabaseBackend, chunks: Sequence[list[str]]
    ) -> Iterator[dict[str, CeleryTaskState]]:
        model = backend.task_cls
        session = backend.ResultSession()
        try:
            for chunk in chunks:
                rows = session.execute(
                    select(model.task_id, model.status, model.result, model.traceback)
                    .where(model.task_id.in_(chunk))
                ).all()
                found = {
                    row.task_id: _from_row(backend, row.status, row.result, row.traceback)
                    for row in rows
                }
                yield {task_id: found.get(task_id, PENDING) for task_id in chunk}
        finally:
            session.close()

    def _one_by_one(self, chunks: Sequence[list[str]]) -> Iterator[dict[str, CeleryTaskState]]:
        for chunk in chunks:
            if self._parallelism == 1:
                yield {task_id: self._async_result_state(task_id) for task_id in chunk}
            else:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        self._parallelism, thread_name_prefix="squall-state-fetch"
                    )
                yield dict(zip(chunk, self._pool.map(self._async_result_state, chunk),
                               strict=True))

    def _async_result_state(self, task_id: str) -> CeleryTaskState:
        result = self._app.AsyncResult(task_id)
        state = str(result.state)
        if state in FAILED_STATES:
            return CeleryTaskState(state, _summary(result.result, result.traceback))
        return CeleryTaskState(state, None)


def _has_mget(backend: BaseKeyValueStoreBackend) -> bool:
    return type(backend).mget is not BaseKeyValueStoreBackend.mget


def _from_meta(backend: Any, meta: Any) -> CeleryTaskState:
    if not isinstance(meta, Mapping) or "status" not in meta:
        raise ValueError(f"{type(backend).__name__}: unexpected stored value {meta!r:.200}")
    state = str(meta["status"])
    if state in FAILED_STATES:
        return CeleryTaskState(state, _summary(meta.get("result"), meta.get("traceback")))
    return CeleryTaskState(state, None)


def _from_row(
    backend: DatabaseBackend, status: str, result: Any, traceback: Any
) -> CeleryTaskState:
    if status not in FAILED_STATES:
        return CeleryTaskState(status, None)
    decoded: Any = None
    if result is not None:
        try:
            decoded = backend.decode(result)
        except Exception:  # an undecodable result must not hide the state
            decoded = None
    return CeleryTaskState(status, _summary(decoded, traceback))


def _summary(result: Any, traceback: Any) -> str | None:
    """"Type: message" of a stored exception, else the last line of its traceback."""
    text: str | None = None
    if isinstance(result, Mapping) and result.get("exc_type"):
        message = result.get("exc_message")
        if isinstance(message, list | tuple):
            message = ", ".join(str(part) for part in message)
        text = f"{result['exc_type']}: {message}" if message not in (None, "") else str(
            result["exc_type"])
    elif isinstance(result, BaseException):
        text = f"{type(result).__name__}: {result}" if str(result) else type(result).__name__
    elif result not in (None, "", {}):
        text = str(result)
    if text is None and traceback:
        lines = [line for line in str(traceback).splitlines() if line.strip()]
        text = lines[-1].strip() if lines else None
    return text[:_INFO_LIMIT] if text is not None else None
