"""The trigger ``python -m bench triggerer`` defers 1,000 task instances on: a timer that
fires at a moment (so a triggerer that takes it over does not restart it), with the wall
time it fired in its event, from which the bench reads the time to SCHEDULED."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from squall.sdk.triggers import BaseTrigger, TriggerEvent


class TimerTrigger(BaseTrigger):
    def __init__(self, moment: datetime, **kwargs: Any) -> None:
        super().__init__()
        self.moment = moment

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return "bench.triggers.TimerTrigger", {"moment": self.moment}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        delay = (self.moment - datetime.now(UTC)).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)
        yield TriggerEvent({"fired_at": time.time()})
