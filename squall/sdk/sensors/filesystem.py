"""FileSensor: wait until a file (or a glob's match) exists."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from typing import Any

from squall.sdk.operators.base import Context
from squall.sdk.sensors.base import BaseSensorOperator

log = logging.getLogger(__name__)


class FileSensor(BaseSensorOperator):
    """True when ``filepath`` (a path or a glob pattern, templated) matches a file, or a
    directory holding at least one file (at any depth).

    ``recursive`` lets ``**`` in the pattern match any number of directories. ``fs_conn_id``
    is accepted for compatibility and ignored: Squall has no connections, so the path is
    used as is (relative paths are relative to the worker's working directory).
    """

    template_fields: Sequence[str] = ("filepath",)
    ui_color = "#91818a"

    def __init__(
        self,
        *,
        filepath: str,
        fs_conn_id: str = "fs_default",
        recursive: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filepath = filepath
        self.fs_conn_id = fs_conn_id
        self.recursive = recursive

    def poke(self, context: Context) -> bool:
        path = os.path.expanduser(str(self.filepath))
        log.info("Poking for file %s", path)
        for match in sorted(glob.glob(path, recursive=self.recursive)):
            if os.path.isfile(match):
                log.info("Found file %s", match)
                return True
            for _root, _dirs, files in os.walk(match):
                if files:
                    log.info("Found directory %s with files in it", match)
                    return True
        return False
