"""``airflow.macros``: what Airflow 2.10's ``macros`` module holds, the same objects the
template context's ``macros`` namespace has (:func:`squall.sdk.templating.make_macros`)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta
from random import random
from typing import Any

import dateutil
import pendulum

from squall.sdk.templating import ds_add, ds_format

__all__ = ["datetime", "datetime_diff_for_humans", "dateutil", "ds_add", "ds_format", "json",
           "random", "time", "timedelta", "uuid"]


def datetime_diff_for_humans(dt: Any, since: Any = None) -> str:
    """``dt`` relative to ``since`` (default: now) in words ("2 hours ago"), as Airflow's."""
    return str(pendulum.instance(dt).diff_for_humans(
        other=pendulum.instance(since) if since is not None else None))
