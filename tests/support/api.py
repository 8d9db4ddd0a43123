"""The API in tests: a real uvicorn server (in a thread, on a free port) on a real database,
one user of each role, an HTTP client, and every response checked against the OpenAPI
document the server serves."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from squall.api.app import create_app
from squall.api.users import create_user
from squall.common.db import SessionFactory, session_scope
from squall.common.settings import Settings
from tests.support.services import wait_until

PASSWORD = "correct-horse"
USERS = {"viewer": "viewer", "op": "op", "admin": "admin"}


def basic(username: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class Api:
    """A TestClient whose every answer is validated against the served OpenAPI document
    (the route's documented response for that status) before the test sees it."""

    client: httpx.Client
    openapi: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.openapi = self.client.get("/api/v1/openapi.json").json()
        resource = Resource.from_contents(self.openapi, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource("urn:openapi", resource)

    def request(self, method: str, url: str, *, user: str | None = "admin",
                **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if user is not None:
            headers.update(basic(user))
        response = self.client.request(method, url, headers=headers, **kwargs)
        self.validate(method, url, response)
        return response

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def _operation(self, method: str, path: str) -> dict[str, Any] | None:
        """The operation of ``path`` (as sent: a ``%2F`` in a parameter stays in it): the
        template with the most literal parts that matches (``/datasets/events`` before
        ``/datasets/{uri}``)."""
        best: tuple[int, dict[str, Any]] | None = None
        for template, item in self.openapi["paths"].items():
            parts, wanted = template.split("/"), path.split("/")
            if len(parts) == len(wanted) and all(
                    p == w or (p.startswith("{") and p.endswith("}"))
                    for p, w in zip(parts, wanted, strict=True)):
                op = item.get(method.lower())
                literal = sum(1 for p in parts if not p.startswith("{"))
                if op is not None and (best is None or literal > best[0]):
                    best = (literal, dict(op))
        return best[1] if best is not None else None

    def validate(self, method: str, url: str, response: httpx.Response) -> None:
        """The response is documented for its route and status and matches the schema."""
        path = httpx.URL(url).raw_path.decode("ascii").split("?", 1)[0]
        op = self._operation(method, path)
        assert op is not None, f"{method} {path} is not in the OpenAPI document"
        assert response.status_code != 500, f"{method} {url} answered 500: {response.text}"
        documented = op["responses"].get(str(response.status_code))
        assert documented is not None, (
            f"{method} {path} answered {response.status_code}, which its OpenAPI entry does "
            f"not document ({sorted(op['responses'])}): {response.text}")
        content = documented.get("content", {})
        kind = response.headers.get("content-type", "").split(";")[0].strip()
        if content and response.content:
            assert kind in content or (kind == "application/problem+json"
                                       and "application/json" in content), (
                f"{method} {path} answered {kind}, not documented ({sorted(content)})")
        entry = content.get(kind) or content.get("application/json") or {}
        schema = entry.get("schema") if kind.endswith("json") else None
        if not schema or not response.content:
            return
        validator = jsonschema.Draft202012Validator(_resolve_refs(schema),
                                                    registry=self.registry)
        validator.validate(response.json())


def _resolve_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``#/components/...`` references made absolute against the document's URN."""
    if isinstance(schema, dict):
        return {k: (f"urn:openapi{v}" if k == "$ref" and isinstance(v, str)
                    and v.startswith("#/") else _resolve_refs(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_resolve_refs(v) for v in schema]  # type: ignore[return-value]
    return schema


class ServerThread:
    """``uvicorn`` serving the app on 127.0.0.1 and a free port, in a thread."""

    def __init__(self, settings: Settings, factory: SessionFactory) -> None:
        import socket
        import threading

        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(create_app(settings, factory), log_level="warning",
                                access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, 20, message="the API server to start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def add_users(factory: SessionFactory) -> None:
    with session_scope(factory) as session:
        for username, role in USERS.items():
            create_user(session, username, role, PASSWORD)


@contextmanager
def serve(settings: Settings, factory: SessionFactory, *, users: bool = True
          ) -> Iterator[Api]:
    """The API served for the ``with`` block, with a user of each role (made unless
    ``users`` is false: an API served before on the same database made them)."""
    if users:
        add_users(factory)
    server = ServerThread(settings, factory)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield Api(client)
    finally:
        server.stop()
