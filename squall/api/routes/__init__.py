"""The API's routers, one module a resource; :data:`ROUTERS` is what the app includes."""

from fastapi import APIRouter

from squall.api.routes import dags, monitor

ROUTERS: list[APIRouter] = [monitor.router, dags.router]
