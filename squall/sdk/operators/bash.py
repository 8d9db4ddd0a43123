"""BashOperator: run a shell command with ``bash -c``."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import Container, Iterator, Sequence
from typing import Any

from squall.common.errors import BashCommandFailed, DagDefinitionError, TaskSkipped
from squall.sdk.deprecation import warn_deprecated
from squall.sdk.operators.base import BaseOperator, Context

log = logging.getLogger(__name__)


class BashOperator(BaseOperator):
    """Run ``bash_command`` in a bash shell, in a process group of its own.

    * ``env``: the environment of the command. ``None`` inherits the worker's; a dict
      replaces it, unless ``append_env`` is true, in which case it is added to it.
      ``AIRFLOW_CTX_*`` / ``SQUALL_CTX_*`` variables (dag id, task id, run id, logical
      date, try number) are always set.
    * ``cwd``: the working directory; by default a temporary directory removed afterwards.
    * An exit code in ``skip_on_exit_code`` (default 99; ``None`` for none) marks the task
      skipped; any other non-zero exit code fails it.
    * Output (stdout and stderr) goes to the task log line by line; the last line of it is
      the return value (pushed to XCom when ``do_xcom_push``).

    A ``bash_command`` ending in ``.sh`` or ``.bash`` is the name of a template file (looked
    up next to the DAG file and in the DAG's ``template_searchpath``); add a space after it
    to run it as a command instead.
    """

    template_fields: Sequence[str] = ("bash_command", "env", "cwd")
    template_fields_renderers = {"bash_command": "bash", "env": "json"}
    template_ext: Sequence[str] = (".sh", ".bash")
    ui_color = "#f0ede4"

    def __init__(
        self,
        *,
        bash_command: str,
        env: dict[str, str] | None = None,
        append_env: bool = False,
        output_encoding: str = "utf-8",
        skip_on_exit_code: int | Container[int] | None = 99,
        cwd: str | None = None,
        skip_exit_code: int | None = None,  # deprecated name of skip_on_exit_code
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if skip_exit_code is not None:
            warn_deprecated(f"{type(self).__name__}({self.task_id!r}): skip_exit_code is "
                            "deprecated; use skip_on_exit_code")
            skip_on_exit_code = skip_exit_code
        if not isinstance(bash_command, str):
            raise DagDefinitionError(
                f"task {kwargs.get('task_id')}: bash_command must be a string, "
                f"got {type(bash_command).__name__}"
            )
        self.bash_command = bash_command
        self.env = env
        self.append_env = append_env
        self.output_encoding = output_encoding
        if skip_on_exit_code is None:
            self.skip_on_exit_code: Container[int] = ()
        elif isinstance(skip_on_exit_code, int):
            self.skip_on_exit_code = (skip_on_exit_code,)
        else:
            self.skip_on_exit_code = skip_on_exit_code
        self.cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------------------

    def build_env(self, context: Context) -> dict[str, str]:
        """The environment of the command (see the class docstring)."""
        if self.env is None:
            env = dict(os.environ)
        elif self.append_env:
            env = {**os.environ, **self.env}
        else:
            env = dict(self.env)
        env.update(_context_env(context))
        return {str(k): str(v) for k, v in env.items()}

    @contextlib.contextmanager
    def _working_dir(self) -> Iterator[str]:
        if self.cwd is None:
            with tempfile.TemporaryDirectory(prefix="squalltmp") as tmp:
                yield tmp
            return
        if not os.path.exists(self.cwd):
            raise BashCommandFailed(f"task {self.task_id}: cwd {self.cwd!r} does not exist", -1)
        if not os.path.isdir(self.cwd):
            raise BashCommandFailed(
                f"task {self.task_id}: cwd {self.cwd!r} is not a directory", -1
            )
        yield self.cwd

    def execute(self, context: Context) -> Any:
        env = self.build_env(context)
        with self._working_dir() as cwd:
            exit_code, last_line = self._run(str(self.bash_command), env, cwd)
        if exit_code in self.skip_on_exit_code:
            raise TaskSkipped(f"Bash command returned exit code {exit_code}. Skipping.")
        if exit_code != 0:
            raise BashCommandFailed(
                f"Bash command failed. The command returned a non-zero exit code {exit_code}.",
                exit_code,
            )
        return last_line

    def _run(self, command: str, env: dict[str, str], cwd: str) -> tuple[int, str | None]:
        log.info("Running command: %s", command)
        process = subprocess.Popen(
            ["bash", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self._process = process
        last_line: str | None = None
        try:
            assert process.stdout is not None
            log.info("Output:")
            for raw in iter(process.stdout.readline, b""):
                line = raw.decode(self.output_encoding, errors="backslashreplace").rstrip("\r\n")
                last_line = line
                log.info("%s", line)
            exit_code = process.wait()
        finally:
            if process.poll() is None:
                # interrupted (timeout, kill): do not leave the command running
                self._kill_group(process)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._kill_group(process, signal.SIGKILL)
            if process.stdout is not None:
                process.stdout.close()
            self._process = None
        log.info("Command exited with return code %s", exit_code)
        return exit_code, last_line

    @staticmethod
    def _kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        try:
            os.killpg(os.getpgid(process.pid), sig)
        except (ProcessLookupError, PermissionError):
            pass

    def on_kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            log.info("Sending SIGTERM to the process group of the bash command")
            self._kill_group(process)


def _context_env(context: Context) -> dict[str, str]:
    """The ``AIRFLOW_CTX_*`` / ``SQUALL_CTX_*`` variables describing this task instance."""
    task = context.get("task")
    ti = context.get("ti")
    dag = context.get("dag")
    logical_date = context.get("logical_date")
    values = {
        "DAG_ID": getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None),
        "TASK_ID": getattr(task, "task_id", None) or getattr(ti, "task_id", None),
        "EXECUTION_DATE": logical_date.isoformat() if logical_date is not None else None,
        "TRY_NUMBER": getattr(ti, "try_number", None),
        "DAG_RUN_ID": context.get("run_id"),
        "DAG_OWNER": getattr(task, "owner", None),
    }
    env: dict[str, str] = {}
    for name, value in values.items():
        if value is not None:
            env[f"AIRFLOW_CTX_{name}"] = str(value)
            env[f"SQUALL_CTX_{name}"] = str(value)
    return env
