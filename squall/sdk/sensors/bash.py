"""BashSensor: run a bash command until it exits 0 (Airflow 2.10's
``airflow/sensors/bash.py``)."""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Sequence
from typing import Any

from squall.common.errors import TaskFailedNoRetry
from squall.sdk.operators.base import Context
from squall.sdk.sensors.base import BaseSensorOperator

log = logging.getLogger(__name__)


class BashSensor(BaseSensorOperator):
    """Each poke runs ``bash_command`` (templated, as is ``env``) in a temporary folder.

    Exit code 0 ends the wait. With ``retry_exit_code`` set, that code pokes again later
    and any other code fails the task without retry (Airflow's ``AirflowFailException``);
    without it, every non-zero code pokes again. ``env`` replaces the environment when
    given (Airflow's rule: not merged).
    """

    template_fields: Sequence[str] = ("bash_command", "env")

    def __init__(self, *, bash_command: str, env: dict[str, str] | None = None,
                 output_encoding: str = "utf-8", retry_exit_code: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bash_command = bash_command
        self.env = env
        self.output_encoding = output_encoding
        self.retry_exit_code = retry_exit_code

    def poke(self, context: Context) -> bool:
        with tempfile.TemporaryDirectory(prefix="squalltmp") as tmp_dir:
            script = os.path.join(tmp_dir, f"{self.task_id}.sh")
            with open(script, "w", encoding="utf-8") as fh:
                fh.write(str(self.bash_command))
            self.log.info("Running command: %s", self.bash_command)
            with subprocess.Popen(["bash", script], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, close_fds=True, cwd=tmp_dir,
                                  env=self.env, start_new_session=True) as proc:
                assert proc.stdout is not None
                self.log.info("Output:")
                for line in iter(proc.stdout.readline, b""):
                    self.log.info(line.decode(self.output_encoding).rstrip())
                proc.wait()
        code = proc.returncode
        self.log.info("Command exited with return code %s", code)
        if code == 0:
            return True
        if self.retry_exit_code is not None:
            if code == self.retry_exit_code:
                self.log.info("Return code matches retry code, will retry later")
                return False
            raise TaskFailedNoRetry(f"Command exited with return code {code}")
        self.log.info("Non-zero return code and no retry code set, will retry later")
        return False
