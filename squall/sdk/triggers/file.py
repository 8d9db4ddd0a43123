"""``FileTrigger``: fire once a file (or a glob's match) exists (Airflow 2.10's
``airflow/triggers/file.py``)."""

from __future__ import annotations

import asyncio
import datetime
import glob
import os
from collections.abc import AsyncIterator
from typing import Any

from squall.sdk.deprecation import warn_deprecated
from squall.sdk.triggers.base import BaseTrigger, TriggerEvent

__all__ = ["FileTrigger", "first_file"]


def first_file(pattern: str, recursive: bool) -> str | None:
    """The first match of ``pattern`` that is a file, or a directory with a file in it at
    any depth (the match), or None. The one rule of ``FileSensor.poke`` and ``FileTrigger``."""
    for match in sorted(glob.glob(pattern, recursive=recursive)):
        if os.path.isfile(match):
            return match
        for _root, _dirs, files in os.walk(match):
            if files:
                return match
    return None


def _mtime(path: str) -> str:
    try:
        return datetime.datetime.fromtimestamp(os.path.getmtime(path)).strftime("%Y%m%d%H%M%S")
    except OSError:
        return "unknown"


class FileTrigger(BaseTrigger):
    """Looks for ``filepath`` (a path or a glob pattern; ``recursive`` lets ``**`` match any
    number of directories) every ``poke_interval`` seconds, and fires ``True`` once it
    matches a file, or a directory holding a file. Looking is a few system calls, done in a
    thread so a slow file system does not hold up the other triggers.

    Airflow 2.10 walks the pattern itself rather than the matched directory, so a glob that
    matches a directory holding files never fires there; Squall walks the match, as
    ``FileSensor.poke`` does in both.
    """

    def __init__(self, filepath: str, recursive: bool = False, poke_interval: float = 5.0,
                 **kwargs: Any) -> None:
        super().__init__()
        self.filepath = filepath
        self.recursive = recursive
        if kwargs.get("poll_interval") is not None:
            warn_deprecated("FileTrigger: `poll_interval` has been deprecated and will be "
                            "removed in future. Please use `poke_interval` instead.")
            self.poke_interval: float = float(kwargs["poll_interval"])
        else:
            self.poke_interval = float(poke_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("squall.sdk.triggers.file.FileTrigger",
                {"filepath": self.filepath, "recursive": self.recursive,
                 "poke_interval": self.poke_interval})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            found = await asyncio.to_thread(first_file, self.filepath, self.recursive)
            if found is not None:
                self.log.info("Found %s (last modified %s)", found, _mtime(found))
                yield TriggerEvent(True)
                return
            await asyncio.sleep(self.poke_interval)
