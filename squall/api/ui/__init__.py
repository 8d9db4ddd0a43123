"""The web UI (issue 12): pages and static files served by the API process.

* :mod:`.session`: ``/login`` and ``/logout`` (the session cookie, CSRF tokens);
* :mod:`.pages`: the pages (DAG list, grid, backfills, pools, audit log), jinja2 skeletons;
* :mod:`.data`: ``GET /ui/api/...``, what the pages show (viewer);
* :mod:`.durations`: ``GET /ui/api/...``, a run's Gantt chart, a task's durations;
* :mod:`.graph`: ``GET /ui/api/dags/ID/graph[/states]``, the graph page's layout and states;
* :mod:`.actions`: ``POST /ui/api/...``, pause, trigger, clear, mark (op, CSRF header);
* :mod:`.render`: templates and ``/ui/static/NAME``;
* :mod:`.runs`: the runs list and the run actions (clear, mark a whole run);
* :mod:`.variables`, :mod:`.connections`: ``/ui/api/variables``, ``/ui/api/connections``
  (list: viewer; add, edit, delete: op, the REST API's operations);
* :mod:`.dag_details`: a DAG's details and code (viewer).

None of these routes is in the OpenAPI document: it describes the Airflow-shaped API."""

from fastapi import APIRouter

from squall.api.ui import (
    actions,
    connections,
    dag_details,
    data,
    durations,
    graph,
    pages,
    render,
    runs,
    session,
    variables,
)

router = APIRouter(include_in_schema=False)
for _sub in (session.router, render.router, pages.router, data.router, durations.router,
             graph.router, actions.router, runs.router, variables.router, connections.router,
             dag_details.router):
    router.include_router(_sub)
