"""The response schemas of the OpenAPI document Squall serves agree with Airflow 2.10's
``v1.yaml`` (tests/data/airflow_v1_responses.json, written from Airflow's wheel by
scripts/extract_airflow_openapi.py) for every ``/api/v1`` operation both have: each
property Squall serves has Airflow's type and is ``null`` only where Airflow's is nullable,
and each property Airflow's schema has is served. Airflow's official client
(``apache-airflow-client``) is generated from that document and refuses an answer that breaks
it (tests/integration/test_api_official_client.py drives it against a live server)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from squall.api.app import create_app
from squall.common.settings import Settings
from tests.support.airflow_openapi import common_operations, load_airflow_v1

#: properties Squall serves that Airflow 2.10's schemas do not have, by where they are
#: (``*.name``: anywhere; the official client keeps an answer's unknown properties as they
#: are), and why
SQUALL_ONLY = {
    "*.backfill_id": "the backfill a DAG run belongs to (Squall's backfills resource)",
    "*.state_reason": "why the task instance is in its state",
    "get_tasks.total_entries": "Airflow's server answers it too (TaskCollectionSchema)",
    "get_variables.variables[].value": "the value, masked where the key names a secret",
    # Airflow 2.10's server answers these too, v1.yaml leaves them out (dataset_schema.py)
    "*.aliases": "a dataset's aliases (DatasetSchema.aliases)",
    "*.dataset_events[].id": "the event's id (DatasetEventSchema.id)",
    "create_dataset_event.id": "the event's id (DatasetEventSchema.id)",
    "*.created_dagruns[].dag_run_id": "a run's id: BasicDAGRunSchema's data_key for run_id",
    "*.queued_events": "QueuedEventCollectionSchema's name for v1.yaml's datasets",
}
#: properties of Airflow's schemas Squall leaves out of an answer, by where they are, and why
#: (the client takes an answer without them: Airflow's response schemas require none)
NOT_SERVED = {
    "*.password": "never answered, as Airflow's server never answers it (load_only)",
    "*.sub_dag": "Airflow's server leaves it out too for a task that is not a "
                 "SubDagOperator",
    "*.created_dagruns[].run_id": "Airflow's server answers it as dag_run_id",
    "get_dag_dataset_queued_events.datasets": "Airflow's server answers queued_events",
    "get_dataset_queued_events.datasets": "Airflow's server answers queued_events",
}


@dataclass
class Shape:
    """A schema reduced to what the client checks: its JSON type (``None``: any), whether
    ``null`` is allowed, and the shapes of its properties or items."""

    type: str | None
    nullable: bool = False
    properties: dict[str, Shape] | None = None
    items: Shape | None = None


def shape(schema: dict[str, Any] | None, components: dict[str, Any],
          seen: tuple[str, ...] = ()) -> Shape:
    """``schema`` (OpenAPI 3.0 with ``nullable``, or 3.1 with ``{"type": "null"}``) reduced;
    ``$ref``, ``allOf``, ``anyOf`` and ``oneOf`` resolved (a union of several objects is
    one object with all their properties)."""
    schema = schema or {}
    nullable = bool(schema.get("nullable"))
    ref = schema.get("$ref")
    if ref is not None:
        name = ref.rsplit("/", 1)[1]
        if name in seen:  # a recursive schema (Task.sub_dag is a DAG): stop here
            return Shape("object", nullable)
        target = shape(components[name], components, (*seen, name))
        target.nullable = target.nullable or nullable
        return target
    parts = schema.get("allOf")
    if parts:
        merged = _merge([shape(p, components, seen) for p in parts])
        merged.nullable = merged.nullable or nullable
        return merged
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        shapes = [shape(o, components, seen) for o in options]
        real = [s for s in shapes if s.type != "null"]
        merged = _merge(real) if len(real) > 1 else real[0]
        merged.nullable = merged.nullable or nullable or len(real) < len(shapes)
        return merged
    kind = schema.get("type")
    if isinstance(kind, list):  # OpenAPI 3.1: ["string", "null"]
        nullable = nullable or "null" in kind
        kind = next((k for k in kind if k != "null"), None)
    out = Shape(kind, nullable)
    if "properties" in schema:
        out.type = out.type or "object"
        out.properties = {k: shape(v, components, seen)
                          for k, v in schema["properties"].items()}
    if kind == "array":
        out.items = shape(schema.get("items"), components, seen)
    return out


def _merge(shapes: list[Shape]) -> Shape:
    merged = Shape("object", any(s.nullable for s in shapes), {})
    for part in shapes:
        assert merged.properties is not None
        for name, sub in (part.properties or {}).items():
            merged.properties.setdefault(name, sub)
    return merged


def differences(squall: Shape, airflow: Shape, where: str) -> list[str]:
    """How ``squall`` breaks ``airflow``: a type other than Airflow's (an integer is a
    number), ``null`` where Airflow's is not nullable (never ``null`` where Airflow's may
    be is fine: the client takes it), a property of one and not the other."""
    problems = []
    if airflow.type is not None and squall.type != airflow.type and not (
            squall.type == "integer" and airflow.type == "number"):
        problems.append(f"{where}: Squall's type is {squall.type or 'any'}, "
                        f"Airflow's {airflow.type}")
    if squall.nullable and not airflow.nullable:
        problems.append(f"{where}: Squall's may be null, Airflow's is not nullable "
                        f"({airflow.type})")
    if squall.properties is not None and airflow.properties is not None:
        for name, sub in squall.properties.items():
            if name in airflow.properties:
                problems += differences(sub, airflow.properties[name], f"{where}.{name}")
            elif not _listed(f"{where}.{name}", SQUALL_ONLY):
                problems.append(f"{where}.{name}: served by Squall, not in Airflow's schema")
        for name in sorted(airflow.properties.keys() - squall.properties.keys()):
            if not _listed(f"{where}.{name}", NOT_SERVED):
                problems.append(f"{where}.{name}: in Airflow's schema "
                                f"({airflow.properties[name].type}), not served by Squall")
    # (a free-form object of Squall's where Airflow's details one: its values are unchecked)
    if squall.items is not None and airflow.items is not None:
        problems += differences(squall.items, airflow.items, f"{where}[]")
    return problems


def _listed(where: str, places: dict[str, str]) -> bool:
    return any(where == place or (place.startswith("*.") and where.endswith(place[1:]))
               for place in places)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("home")
    app = create_app(Settings.load(env={"SQUALL_HOME": str(home)}))
    return app.openapi()


@pytest.fixture(scope="module")
def airflow() -> dict[str, Any]:
    return load_airflow_v1()


def test_squall_serves_the_operations_the_official_client_is_driven_through(
        served: dict[str, Any], airflow: dict[str, Any]) -> None:
    common = common_operations(served, airflow)
    for op_id in ("get_dags", "get_dag", "get_dag_details", "patch_dag", "get_tasks",
                  "get_task", "get_dag_runs", "get_dag_runs_batch", "get_dag_run",
                  "post_dag_run", "update_dag_run_state", "clear_dag_run", "delete_dag_run",
                  "get_task_instances", "get_task_instances_batch", "get_task_instance",
                  "patch_task_instance", "get_mapped_task_instance",
                  "get_mapped_task_instances", "patch_mapped_task_instance",
                  "post_set_task_instances_state",
                  "post_clear_task_instances",
                  "get_log", "get_pools", "get_pool", "post_pool", "patch_pool",
                  "delete_pool", "get_variables", "get_variable", "post_variables",
                  "patch_variable", "delete_variable", "get_connections", "get_connection",
                  "post_connection", "patch_connection", "delete_connection",
                  "get_import_errors", "get_import_error", "get_health", "get_version"):
        assert op_id in common, f"{op_id} is not served"


def test_served_response_types_agree_with_airflows(served: dict[str, Any],
                                                   airflow: dict[str, Any]) -> None:
    problems = []
    squall_components = served["components"]["schemas"]
    for op_id, (method, path, status) in sorted(common_operations(served, airflow).items()):
        theirs = airflow["operations"][op_id]["schema"]
        responses = served["paths"][path][method.lower()]["responses"]
        if status not in responses:
            problems.append(f"{op_id}: Squall does not document a {status} answer "
                            f"({sorted(responses)})")
            continue
        content = responses[status].get("content", {})
        ours = content.get("application/json", {}).get("schema")
        if theirs is None:
            continue
        if ours is None:
            problems.append(f"{op_id}: no JSON schema for its {status} answer")
            continue
        problems += differences(shape(ours, squall_components),
                                shape(theirs, airflow["schemas"]), op_id)
    assert not problems, "Squall's answers break Airflow 2.10's v1.yaml:\n" + "\n".join(
        problems)
