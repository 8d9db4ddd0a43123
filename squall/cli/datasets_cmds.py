"""``squall datasets list | details | events``: the datasets DAG files name, who produces and
who consumes each, and their recorded events.

Airflow 2.10 has no ``airflow datasets`` command (its datasets are read in the UI and the
REST API; Airflow 3's ``airflow assets list | details`` came later): these read what
``GET /api/v1/datasets...`` answers, through :mod:`squall.runs.dataset_catalog`, and print
a table, or JSON with ``-o json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from squall.cli.common import CliContext, CliError, add_output_flag, console, print_rows

log = logging.getLogger(__name__)

LIST_COLUMNS = ["uri", "producers", "consumers", "last_event"]
EVENT_COLUMNS = ["id", "timestamp", "uri", "source", "extra", "created_runs"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "datasets", help="list datasets, show one, and list their events",
        description="A dataset is a URI that DAG files name: in a task's outlets (its "
        "producers: each success of such a task records an event) and in a DAG's schedule "
        "(its consumers: a run starts when the datasets it waits for have new events).")
    dsub = parser.add_subparsers(dest="datasets_command", required=True, metavar="COMMAND")

    p = dsub.add_parser("list", help="every dataset with its producers, consumers and last "
                        "event")
    p.add_argument("--uri-pattern", metavar="TEXT",
                   help="only datasets whose URI holds TEXT (any case)")
    p.add_argument("--dag-id", action="append", dest="dag_ids", metavar="DAG_ID",
                   help="only datasets this DAG produces or consumes (repeatable)")
    add_output_flag(p)
    p.set_defaults(func=list_cmd)

    p = dsub.add_parser("details", help="one dataset: its producers, consumers, aliases, "
                        "queued events and last event")
    p.add_argument("uri")
    add_output_flag(p)
    p.set_defaults(func=details_cmd)

    p = dsub.add_parser("events", help="the newest events, of every dataset or of one")
    p.add_argument("uri", nargs="?", help="only this dataset's events")
    p.add_argument("--dag-id", metavar="DAG_ID",
                   help="only the events recorded by this DAG's tasks (the source DAG)")
    p.add_argument("--limit", type=_positive, default=20, metavar="N",
                   help="at most N events, newest first (default: 20)")
    add_output_flag(p)
    p.set_defaults(func=events_cmd)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def _source(event: dict[str, Any]) -> str:
    """Where an event came from: ``dag.task`` of a run (``[i]`` for a mapped instance), or
    ``external`` for one created through the API."""
    if not event.get("source_dag_id"):
        return "external (API)" if (event.get("extra") or {}).get("from_rest_api") \
            else "external"
    where = f"{event['source_dag_id']}.{event['source_task_id']}"
    map_index = event.get("source_map_index")
    if map_index is not None and map_index >= 0:
        where += f"[{map_index}]"
    return f"{where} in {event['source_run_id']}"


def _last_event(event: dict[str, Any] | None) -> str | None:
    if event is None:
        return None
    return f"{event['timestamp']} by {_source(event)}"


def list_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.common.models import DatasetModel
    from squall.runs import dataset_catalog as catalog

    with session_scope(ctx.session_factory()) as session:
        rows = list(session.scalars(
            catalog.select_datasets(uri_pattern=args.uri_pattern, dag_ids=args.dag_ids)
            .order_by(DatasetModel.uri)))
        datasets = catalog.datasets_json(session, rows)
        orphaned = {r.id: r.is_orphaned for r in rows}
        consumers = catalog.consumers_of(session, [r.id for r in rows])
        last = catalog.last_events(session, [r.id for r in rows])
        last_json = dict(zip(last, catalog.events_json(session, list(last.values())),
                             strict=True))
    out = []
    for dataset in datasets:
        out.append({
            "uri": dataset["uri"],
            "producers": [f"{p['dag_id']}.{p['task_id']}" for p in dataset["producing_tasks"]],
            "consumers": consumers.get(dataset["id"], []),
            "last_event": last_json.get(dataset["id"]),
            "orphaned": orphaned[dataset["id"]],
        })
    if args.output == "json":
        print_rows(out, LIST_COLUMNS, "json")
        return 0
    print_rows([{"uri": r["uri"] + (" (orphaned)" if r["orphaned"] else ""),
                 "producers": ", ".join(r["producers"]) or "-",
                 "consumers": ", ".join(r["consumers"]) or "-",
                 "last_event": _last_event(r["last_event"]) or "never"} for r in out],
               LIST_COLUMNS, "table")
    return 0


def details_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from squall.common.db import session_scope
    from squall.common.models import DatasetEvent
    from squall.runs import dataset_catalog as catalog

    with session_scope(ctx.session_factory()) as session:
        row = catalog.find_dataset(session, args.uri)
        if row is None:
            raise CliError(f"dataset {args.uri!r} is not known: no DAG file names it "
                           "(`squall datasets list` shows the known ones)")
        dataset = catalog.datasets_json(session, [row])[0]
        dataset["orphaned"] = row.is_orphaned
        dataset["consumers_through_aliases"] = sorted(
            set(catalog.consumers_of(session, [row.id])[row.id])
            - {c["dag_id"] for c in dataset["consuming_dags"]})
        dataset["queued_events"] = catalog.queued_events(session, uri=row.uri)
        last = catalog.last_events(session, [row.id]).get(row.id)
        dataset["last_event"] = catalog.events_json(session, [last])[0] if last else None
        dataset["total_events"] = session.scalar(
            select(func.count()).select_from(DatasetEvent)
            .where(DatasetEvent.dataset_id == row.id))
    if args.output == "json":
        json.dump(dataset, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    from rich.table import Table

    table = Table(title=f"dataset {dataset['uri']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    facts = [
        ("uri", dataset["uri"]), ("id", str(dataset["id"])),
        ("orphaned", "yes: no DAG file names it any more" if dataset["orphaned"] else "no"),
        ("extra", json.dumps(dataset["extra"])),
        ("created_at", dataset["created_at"]), ("updated_at", dataset["updated_at"]),
        ("producers", "\n".join(f"{p['dag_id']}.{p['task_id']}"
                                for p in dataset["producing_tasks"]) or "-"),
        ("consumers", "\n".join(c["dag_id"] for c in dataset["consuming_dags"]) or "-"),
        ("aliases", ", ".join(a["name"] for a in dataset["aliases"]) or "-"),
        ("consumers through aliases", ", ".join(dataset["consumers_through_aliases"]) or "-"),
        ("queued for", "\n".join(f"{q['dag_id']} (since {q['created_at']})"
                                 for q in dataset["queued_events"]) or "-"),
        ("events", str(dataset["total_events"])),
        ("last event", _last_event(dataset["last_event"]) or "never"),
        ("last event's extra", json.dumps(dataset["last_event"]["extra"])
         if dataset["last_event"] else "-"),
    ]
    for name, value in facts:
        table.add_row(name, value)
    console().print(table)
    return 0


def events_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.common.models import DatasetEvent
    from squall.runs import dataset_catalog as catalog

    with session_scope(ctx.session_factory()) as session:
        dataset_id = None
        if args.uri is not None:
            row = catalog.find_dataset(session, args.uri)
            if row is None:
                raise CliError(f"dataset {args.uri!r} is not known: no DAG file names it "
                               "(`squall datasets list` shows the known ones)")
            dataset_id = row.id
        events = list(session.scalars(
            catalog.select_events(dataset_id=dataset_id, source_dag_id=args.dag_id)
            .order_by(DatasetEvent.timestamp.desc(), DatasetEvent.id.desc())
            .limit(args.limit)))
        rows = catalog.events_json(session, events)
    if args.output == "json":
        print_rows(rows, EVENT_COLUMNS, "json")
        return 0
    print_rows([{
        "id": e["id"], "timestamp": e["timestamp"], "uri": e["dataset_uri"],
        "source": _source(e), "extra": json.dumps(e["extra"]) if e["extra"] else "",
        "created_runs": ", ".join(f"{r['dag_id']}/{r['dag_run_id']}"
                                  for r in e["created_dagruns"])} for e in rows],
        EVENT_COLUMNS, "table")
    return 0
