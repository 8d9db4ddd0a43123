"""``squall standalone``: the whole system on one machine, no servers to install.

It uses the same processes as a cluster: one ``squall scheduler``, one ``squall celery
worker`` and one ``squall triggerer`` (deferred tasks' triggers), started as child
processes, against a SQLite metadata database and the embedded Celery broker and result
backend under ``$SQUALL_HOME``; the REST API and web UI (``squall api``) are served from
this process, in a thread, on ``[api] host`` and ``[api] port``.
When the database has no user, an ``admin`` user is created with a random password, kept
in ``$SQUALL_HOME/standalone_admin_password.txt`` (mode 0600) and printed with the URL at
each start. Ctrl-C (or SIGTERM) stops everything.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from squall.cli.common import CliContext, CliError
from squall.common.errors import SquallError
from squall.common.state import DAGRUN_FINISHED_STATES, DagRunState

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 30.0
#: the user standalone creates when the database has none, and where its password is kept
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD_FILE = "standalone_admin_password.txt"
#: how long the API may take to start listening
API_START_SECONDS = 20.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "standalone", help="run a scheduler, a worker, a triggerer and the API and web UI on "
        "this machine (no servers needed)",
        description="Creates $SQUALL_HOME (default ~/squall) with a SQLite metadata database "
        "and an embedded Celery broker and result backend, loads the example DAGs (paused, "
        "as every new DAG is unless [core] dags_are_paused_at_creation is false), and runs "
        "one scheduler, one Celery worker and one triggerer as child processes, and the "
        "REST API and web UI ([api] host and port), until Ctrl-C. When there is no API user "
        "yet it creates `admin` with a random password and prints it. Settings from squall.toml / "
        "SQUALL__SECTION__KEY still apply (e.g. a PostgreSQL database).")
    p.add_argument("-c", "--concurrency", type=int, default=None,
                   help="worker concurrency (default: [celery] worker_concurrency)")
    p.add_argument("-q", "--queues", default=None,
                   help="queues the worker consumes, comma-separated (default: "
                   "[celery] default_queue)")
    p.add_argument("--no-examples", action="store_true",
                   help="do not load the example DAGs")
    p.add_argument("--trigger", metavar="DAG_ID", action="append", default=[],
                   help="unpause DAG_ID and trigger a run of it once everything is up, and "
                   "print its outcome (repeatable); e.g. --trigger example_taskflow")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="show everything on the console (every process's log at DEBUG, "
                   "Celery's banner); by default it shows the start-up, each DAG run's "
                   "outcome, warnings and errors (task output is in the task logs)")
    p.set_defaults(func=standalone, service=True, quiet_console=True)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


class ApiServer:
    """``squall api``'s app on uvicorn in a thread of this process, on a socket bound at
    once (so a taken port is known before anything else starts)."""

    def __init__(self, ctx: CliContext) -> None:
        import uvicorn

        from squall.api.app import create_app

        settings = ctx.settings
        self.host, self.port = settings.api.host, settings.api.port
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((self.host, self.port))
        except OSError:
            self.sock.close()
            raise
        config = uvicorn.Config(create_app(settings, ctx.session_factory()),
                                log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="squall-api", daemon=True)
        self.failure: BaseException | None = None

    def _serve(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as exc:  # reported by the main loop
            self.failure = exc

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + API_START_SECONDS
        while not self.server.started and self.thread.is_alive():
            if time.monotonic() > deadline:
                raise CliError(f"the API did not start within {API_START_SECONDS:.0f} s")
            time.sleep(0.05)
        if not self.server.started:
            raise CliError(f"the API failed to start: {self.failure}")
        log.info("standalone: API serving on %s", self.url)

    @property
    def url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host,
                                                                        self.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=STOP_GRACE_SECONDS)
        self.sock.close()


def _start_api(ctx: CliContext) -> ApiServer | None:
    """The API and web UI, serving; ``None`` (and why, on stderr) when its port is taken:
    the scheduler and the worker run without it."""
    try:
        server = ApiServer(ctx)
    except OSError as exc:
        print(f"squall standalone: the API and web UI are not served: cannot listen on "
              f"{ctx.settings.api.host}:{ctx.settings.api.port} ({exc.strerror or exc}); "
              "set another [api] port (SQUALL__API__PORT)", file=sys.stderr, flush=True)
        return None
    server.start()
    return server


def _ensure_admin(ctx: CliContext) -> tuple[str, str] | None:
    """``(username, password)`` to print: the ``admin`` user created now (the database had
    no user), or the one created by an earlier start while the kept password still works;
    else ``None``. The password is kept in $SQUALL_HOME/standalone_admin_password.txt
    (mode 0600), never logged."""
    from sqlalchemy import select

    from squall.api.passwords import check_password
    from squall.api.users import create_user
    from squall.common.db import session_scope
    from squall.common.models import User

    path = ctx.settings.home / ADMIN_PASSWORD_FILE
    stored: str | None = None
    with session_scope(ctx.session_factory()) as session:
        if session.scalar(select(User.id).limit(1)) is None:
            password = secrets.token_urlsafe(12)
            create_user(session, ADMIN_USERNAME, "admin", password)
            created = True
        else:
            created = False
            stored = session.scalar(select(User.password_hash)
                                    .where(User.username == ADMIN_USERNAME))
    if created:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        os.chmod(path, 0o600)
        log.info("standalone: created the API user %s (password in %s)", ADMIN_USERNAME, path)
        return ADMIN_USERNAME, password
    try:
        kept = path.read_text().strip()
    except OSError:
        return None
    if stored is None or not kept or not check_password(kept, stored):
        return None
    return ADMIN_USERNAME, kept


CONFIG_TEMPLATE = """# Written by `squall standalone` on its first start; edit freely.
# Every setting can also be given as SQUALL__SECTION__KEY in the environment.
[core]
load_examples = {load_examples}
"""


def _ensure_config(ctx: CliContext, load_examples: bool) -> Path | None:
    """Write $SQUALL_HOME/squall.toml on a first start, so that other commands run against
    this home (``squall dags trigger`` in another terminal) see the same DAGs."""
    path = ctx.settings.home / "squall.toml"
    if path.exists() or ctx.settings.sources.get("core.load_examples"):
        return None
    path.write_text(CONFIG_TEMPLATE.format(load_examples=str(load_examples).lower()))
    return path


def _child_env(ctx: CliContext, load_examples: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["SQUALL_HOME"] = str(ctx.settings.home)
    env["SQUALL__CORE__LOAD_EXAMPLES"] = "true" if load_examples else "false"
    return env


def standalone(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common import dbops
    from squall.common.settings import Settings

    settings = ctx.settings
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.dags_folder.mkdir(parents=True, exist_ok=True)
    dbops.migrate(ctx.engine, default_pool_slots=ctx.settings.core.default_pool_task_slot_count)
    load_examples = not args.no_examples
    written = _ensure_config(ctx, load_examples)
    if written is not None:
        print(f"squall standalone: wrote {written}", flush=True)
    env = _child_env(ctx, load_examples)
    if args.config:
        env["SQUALL_CONFIG"] = os.path.abspath(args.config)

    squall = [sys.executable, "-m", "squall"] + ([] if ctx.quiet_console else ["-v"])
    worker_cmd = [*squall, "celery", "worker"]
    if args.concurrency:
        worker_cmd += ["-c", str(args.concurrency)]
    if args.queues:
        worker_cmd += ["-q", args.queues]
    commands = {
        "scheduler": [*squall, "scheduler"],
        "worker": worker_cmd,
        "triggerer": [*squall, "triggerer"],
    }

    stopping = False

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    children: list[Child] = []
    api: ApiServer | None = None
    try:
        admin = _ensure_admin(ctx)
        api = _start_api(ctx)
        for name, cmd in commands.items():
            # Children get their own process group: a terminal's Ctrl-C reaches only us,
            # and we stop them in order.
            proc = subprocess.Popen(cmd, env=env, start_new_session=True)
            children.append(Child(name, proc))
            log.info("standalone: started %s (pid %d)", name, proc.pid)
        _print_banner(ctx, children, load_examples, api, admin)
        # our own commands see what the children see (load_examples as set above)
        own = CliContext(settings=Settings.load(
            config_file=args.config,
            overrides={"core": {"load_examples": load_examples}}),
            quiet_console=ctx.quiet_console)
        watching = _trigger_all(own, args.trigger)
        while not stopping:
            watching = _report_finished(own, watching)
            for child in children:
                code = child.process.poll()
                if code is not None:
                    raise CliError(f"the {child.name} exited unexpectedly with code {code}; "
                                   "stopping everything")
            if api is not None and not api.alive():
                raise CliError(f"the API stopped unexpectedly ({api.failure}); stopping "
                               "everything")
            time.sleep(0.2)
        print("\nsquall standalone: stopping ...", flush=True)
        return 0
    finally:
        if api is not None:
            api.stop()
        _stop_all(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _trigger_all(ctx: CliContext, dag_ids: list[str]) -> dict[tuple[str, str], str]:
    """Trigger a run of each DAG and unpause it, as Airflow's web UI does by default
    (``squall dags trigger`` leaves a paused DAG's run queued, as ``airflow dags trigger``)."""
    from squall.cli.runs_cmds import trigger_dag_run

    watching: dict[tuple[str, str], str] = {}
    for dag_id in dag_ids:
        try:
            run_id, paused = trigger_dag_run(ctx, dag_id)
        except SquallError as exc:
            print(f"squall standalone: could not trigger {dag_id}: {exc}", file=sys.stderr,
                  flush=True)
            continue
        note = f" (and unpaused {dag_id})" if paused and _unpause(ctx, dag_id) else ""
        print(f"Triggered DagRun {dag_id} {run_id}{note}", flush=True)
        watching[(dag_id, run_id)] = DagRunState.QUEUED.value
    return watching


def _unpause(ctx: CliContext, dag_id: str) -> bool:
    from squall.common.db import session_scope
    from squall.runs import audit
    from squall.runs.pausing import set_paused

    with session_scope(ctx.session_factory()) as session:
        if set_paused(session, dag_id, False, by="`squall standalone --trigger`") is None:
            return False
        audit.record_event(session, audit.UNPAUSED, owner=audit.cli_owner(), dag_id=dag_id,
                           source="cli", extra={"command": "standalone --trigger"})
    return True


def _report_finished(ctx: CliContext,
                     watching: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
    """Print each watched run once it has finished, with its task instances' states."""
    if not watching:
        return watching
    from sqlalchemy import select

    from squall.common.db import session_scope
    from squall.common.models import DagRun, TaskInstance

    still: dict[tuple[str, str], str] = {}
    with session_scope(ctx.session_factory()) as session:
        for (dag_id, run_id), last in watching.items():
            state = session.scalar(select(DagRun.state).where(
                DagRun.dag_id == dag_id, DagRun.run_id == run_id))
            if state not in DAGRUN_FINISHED_STATES:
                still[(dag_id, run_id)] = str(state or last)
                continue
            tis = session.execute(select(TaskInstance.task_id, TaskInstance.state,
                                         TaskInstance.try_number).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
                .order_by(TaskInstance.task_id)).all()
            print(f"DagRun {dag_id} {run_id}: {state}", flush=True)
            for task_id, ti_state, try_number in tis:
                print(f"  {task_id}: {ti_state} (try {try_number})", flush=True)
    return still


def _stop_all(children: list[Child]) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            child.process.wait(remaining)
        except subprocess.TimeoutExpired:
            log.warning("standalone: %s did not stop within %.0f s; killing it",
                        child.name, STOP_GRACE_SECONDS)
            child.process.kill()
            child.process.wait()
        log.info("standalone: %s stopped (exit code %s)", child.name, child.process.returncode)


def _api_lines(ctx: CliContext, api: ApiServer | None,
               admin: tuple[str, str] | None) -> str:
    if api is None:
        return "  API and web UI:  not served (see above)\n"
    lines = f"  API and web UI:  {api.url}  (API under {api.url}api/v1)\n"
    if admin is not None:
        path = ctx.settings.home / ADMIN_PASSWORD_FILE
        lines += (f"  log in with:     username: {admin[0]}  password: {admin[1]}\n"
                  f"                   (kept in {path})\n")
    else:
        lines += "  log in with:     your users (`squall users list`)\n"
    return lines


def _print_banner(ctx: CliContext, children: list[Child], load_examples: bool,
                  api: ApiServer | None = None, admin: tuple[str, str] | None = None,
                  ) -> None:
    from squall.common.celery_app import broker_url, result_backend_url

    s = ctx.settings
    db = ctx.engine.url.render_as_string(hide_password=True)
    pids = ", ".join(f"{c.name} pid {c.process.pid}" for c in children)
    example = "example_taskflow" if load_examples else "<your_dag_id>"
    print(
        f"""
squall standalone is running ({pids})
  home:            {s.home}
  DAG folder:      {s.dags_folder}{'  (+ the example DAGs)' if load_examples else ''}
  database:        {db}
  broker:          {broker_url(s)}
  result backend:  {result_backend_url(s)}
  task logs:       {s.log_folder}
{_api_lines(ctx, api, admin)}
In another terminal (with the same SQUALL_HOME):
  squall dags list
  squall dags trigger {example}
  squall dags list-runs {example}
  squall tasks states-for-dag-run {example} RUN_ID

Press Ctrl-C to stop.""",
        flush=True,
    )
