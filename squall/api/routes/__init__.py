"""The API's routers, one module a resource; :data:`ROUTERS` is what the app includes."""

from fastapi import APIRouter

from squall.api import ui
from squall.api.metrics import metrics_router
from squall.api.routes import (
    connections,
    dag_files,
    dag_runs,
    dags,
    datasets,
    event_logs,
    experimental,
    logs,
    misc,
    monitor,
    pools,
    sla_misses,
    task_instances,
    variables,
)

ROUTERS: list[APIRouter] = [monitor.router, dags.router, dag_runs.router,
                            task_instances.router, logs.router, pools.router, misc.router,
                            variables.router, connections.router, sla_misses.router,
                            dag_files.router, datasets.router, event_logs.router,
                            experimental.router, metrics_router, ui.router]
