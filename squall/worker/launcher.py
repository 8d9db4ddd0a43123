"""How a worker gets each try's task process: one :class:`TryLauncher`, chosen when the
worker starts (ADR 24).

Three ways, by the settings (:func:`launch_kind`):

* ``fork_server`` (``[celery] worker_fork_server``, the default; ADR 21): the pool
  process's fork server loads the task from its own DAG file cache and forks the task
  process; when the server cannot be started or cannot fork, the supervisor forks it
  itself, as below.
* ``pool_fork``: the supervisor (the pool process) forks the task process, with the task
  from its own DAG file cache (``[celery] worker_cache_dag_files``) or loaded in the child.
* ``new_interpreter`` (``[core] execute_tasks_new_python_interpreter``): ``python -m squall
  tasks run ... --raw``, which loads the DAG file and records its own outcome.

Where the supervisor itself runs is the worker runtime's choice
(:class:`squall.worker.tasks.WorkerRuntime`): in the pool process, or, in a threaded pool
(where signals cannot be handled), in a process forked for the try, whose launcher is
:meth:`TryLauncher.without_fork_server` (no fork server: a fresh process per try has
nothing to spare by one).

A launcher belongs to the process that made it: its fork server and DAG file cache are
that process's (a forked child must not use the server, and :class:`ForkServer` refuses to).
"""

from __future__ import annotations

import logging
from enum import StrEnum

from sqlalchemy import Engine

from squall.common.errors import TaskLoadError
from squall.common.models import TaskInstanceKey
from squall.common.settings import Settings
from squall.sdk.operators.base import BaseOperator
from squall.worker.dag_file_cache import DagFileCache
from squall.worker.fork_server import ForkServer

log = logging.getLogger(__name__)


class LaunchKind(StrEnum):
    FORK_SERVER = "fork_server"
    POOL_FORK = "pool_fork"
    NEW_INTERPRETER = "new_interpreter"


def launch_kind(settings: Settings) -> LaunchKind:
    """The way the settings ask for (see the module docstring)."""
    if settings.core.execute_tasks_new_python_interpreter:
        return LaunchKind.NEW_INTERPRETER
    if settings.celery.worker_fork_server:
        return LaunchKind.FORK_SERVER
    return LaunchKind.POOL_FORK


class TryLauncher:
    """One process's way of getting task processes (see the module docstring), with what
    it keeps across tries: the fork server (``fork_server`` only) and the DAG file cache
    (``pool_fork``, when ``[celery] worker_cache_dag_files``)."""

    def __init__(self, settings: Settings, kind: LaunchKind | None = None) -> None:
        self.settings = settings
        self.kind = kind if kind is not None else launch_kind(settings)
        self.fork_server = ForkServer() if self.kind == LaunchKind.FORK_SERVER else None
        self.dag_file_cache = DagFileCache()

    def __repr__(self) -> str:
        return f"<TryLauncher {self.kind.value}>"

    def without_fork_server(self) -> TryLauncher:
        """The same way without a fork server: the launcher of a supervisor forked for one
        try (a threaded pool), or of one made on its own (tests)."""
        kind = LaunchKind.POOL_FORK if self.kind == LaunchKind.FORK_SERVER else self.kind
        return TryLauncher(self.settings, kind)

    def server(self, engine: Engine) -> ForkServer | None:
        """The fork server, started unless alive (``fork_server`` only), before anything of
        the try exists, so the server inherits none of it; None when there is none or it
        cannot be started now (the supervisor then forks the task process itself)."""
        if self.fork_server is None:
            return None
        try:
            self.fork_server.ensure(self.settings, engine)
        except OSError as exc:
            log.warning("cannot start the fork server (the task process is forked by the "
                        "supervisor): %s", exc)
            return None
        return self.fork_server

    def cached_task(self, dag_file: str, key: TaskInstanceKey
                    ) -> BaseOperator | TaskLoadError | None:
        """For a task process the supervisor forks: the task from this process's DAG file
        cache (``[celery] worker_cache_dag_files``), or why it cannot be loaded (the task
        process reports it once the try has started); None: the task process loads it."""
        if not self.settings.celery.worker_cache_dag_files:
            return None
        try:
            return self.dag_file_cache.load_task(self.settings, dag_file, key)
        except TaskLoadError as exc:
            return exc

    def close(self) -> None:
        """Close the fork server, if any (at ``worker_process_shutdown``)."""
        if self.fork_server is not None:
            self.fork_server.close()
