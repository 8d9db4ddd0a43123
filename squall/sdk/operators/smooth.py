"""SmoothOperator: Airflow's operator that does nothing but log a link to a song."""

from __future__ import annotations

import logging
from typing import Any

from squall.sdk.operators.base import BaseOperator, Context

log = logging.getLogger(__name__)


class SmoothOperator(BaseOperator):
    """Logs a YouTube link to Sade's "Smooth Operator" (Airflow's ``SmoothOperator``)."""

    ui_color = "#e8f7e4"
    yt_link: str = "https://www.youtube.com/watch?v=4TYv2PhG89A"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def execute(self, context: Context) -> None:
        self.log.info("Enjoy Sade - Smooth Operator: %s", self.yt_link)
