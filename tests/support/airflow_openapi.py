"""Airflow 2.10's REST API as its OpenAPI document ``v1.yaml`` gives it, trimmed to the
success response schemas (tests/data/airflow_v1_responses.json, written from Airflow's wheel
by scripts/extract_airflow_openapi.py), and which of its operations Squall serves."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

AIRFLOW_V1 = Path(__file__).resolve().parents[1] / "data" / "airflow_v1_responses.json"
PREFIX = "/api/v1"


def load_airflow_v1() -> dict[str, Any]:
    """``{"operations": {operation id: {method, path, status, schema}}, "schemas": ...}``"""
    return dict(json.loads(AIRFLOW_V1.read_text()))


def _template(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def common_operations(served: dict[str, Any],
                      airflow: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """Airflow's operation id -> (method, Squall's path, Airflow's success status) for the
    operations the OpenAPI document ``served`` by Squall has too."""
    paths = {(method.upper(), _template(path.removeprefix(PREFIX))): path
             for path, item in served["paths"].items() for method in item}
    out = {}
    for op_id, op in airflow["operations"].items():
        path = paths.get((op["method"], _template(op["path"])))
        if path is not None:
            out[op_id] = (op["method"], path, op["status"])
    return out
