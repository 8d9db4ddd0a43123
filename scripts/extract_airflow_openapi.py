"""Write tests/data/airflow_v1_responses.json: the success response schemas of Airflow 2's
stable REST API, from ``airflow/api_connexion/openapi/v1.yaml`` in an apache-airflow wheel
or source distribution (Apache-2.0), trimmed to what a type check needs.

    python scripts/extract_airflow_openapi.py apache_airflow-2.10.5-py3-none-any.whl
    python scripts/extract_airflow_openapi.py apache_airflow-2.10.5.tar.gz

Needs PyYAML (not a Squall dependency: run it with any Python that has it). The output keeps,
per operation, its method, path, success status and response schema, and the component
schemas those reach, each with only its type keywords (``type``, ``nullable``, ``format``,
``enum``, ``properties``, ``items``, ``additionalProperties``, ``$ref``, ``allOf``,
``oneOf``, ``anyOf``); descriptions and examples are dropped. tests/unit/test_api_airflow_types.py
compares Squall's served OpenAPI document with it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

MEMBER = "airflow/api_connexion/openapi/v1.yaml"
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "airflow_v1_responses.json"
KEEP = {"type", "nullable", "format", "enum", "properties", "items", "additionalProperties",
        "$ref", "allOf", "oneOf", "anyOf", "discriminator"}
METHODS = ("get", "post", "put", "patch", "delete")


def read_spec(archive: Path) -> bytes:
    """v1.yaml's bytes from a wheel (``.whl``) or an sdist (``.tar.gz``)."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            return wheel.read(MEMBER)
    with tarfile.open(archive) as sdist:
        for member in sdist.getmembers():
            if member.name.endswith("/" + MEMBER):
                handle = sdist.extractfile(member)
                if handle is not None:
                    return handle.read()
    raise SystemExit(f"{archive}: no {MEMBER} in it")


def trimmed(schema: Any) -> Any:
    if isinstance(schema, list):
        return [trimmed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in KEEP:
            continue
        if key == "properties":
            out[key] = {name: trimmed(sub) for name, sub in value.items()}
        else:
            out[key] = trimmed(value)
    return out


def refs(schema: Any) -> set[str]:
    """The component schema names ``schema`` refers to."""
    if isinstance(schema, list):
        return set().union(*(refs(s) for s in schema)) if schema else set()
    if not isinstance(schema, dict):
        return set()
    found = set().union(*(refs(v) for v in schema.values())) if schema else set()
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        found.add(ref.rsplit("/", 1)[1])
    return found


def extract(spec: dict[str, Any]) -> dict[str, Any]:
    components = spec["components"]
    operations: dict[str, Any] = {}
    for path, item in spec["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            status = min((s for s in op["responses"] if str(s).startswith("2")), default=None)
            if status is None:
                continue
            response = op["responses"][status]
            ref = response.get("$ref", "")
            if ref.startswith("#/components/responses/"):
                response = components["responses"][ref.rsplit("/", 1)[1]]
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            operations[op["operationId"]] = {
                "method": method.upper(), "path": path, "status": str(status),
                "schema": trimmed(schema) if schema is not None else None}
    wanted, schemas = refs(list(operations.values())), {}
    while wanted:
        name = wanted.pop()
        if name not in schemas:
            schemas[name] = trimmed(components["schemas"][name])
            wanted |= refs(schemas[name]) - set(schemas)
    return {"operations": dict(sorted(operations.items())),
            "schemas": dict(sorted(schemas.items()))}


def main(argv: list[str] | None = None) -> int:
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path, help="an apache-airflow wheel or sdist")
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args(argv)
    raw = read_spec(args.archive)
    spec = yaml.safe_load(raw)
    document = {
        "source": f"{args.archive.name}: {MEMBER} (sha256 {hashlib.sha256(raw).hexdigest()}), "
                  "Apache License 2.0; trimmed by scripts/extract_airflow_openapi.py",
        "info_version": spec["info"]["version"],
        **extract(spec),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    print(f"{args.output}: {len(document['operations'])} operations, "
          f"{len(document['schemas'])} schemas", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
