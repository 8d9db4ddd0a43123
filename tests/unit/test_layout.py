"""The package layout's rules, checked on the source tree (docs/adr/0013-the-layout.md):
each module fits in one read, imports run only downward through the layers, and no import
cycle spans modules except inside ``squall/sdk`` (a DAG and its operators refer to each
other)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SQUALL = Path(__file__).resolve().parents[2] / "squall"
MAX_LINES = 600

#: a package may import its own level and the levels below it, never above
LAYERS: dict[str, int] = {
    "common": 0,
    "sdk": 1,
    "migrations": 1,
    "compat": 2,
    "dag_processing": 2,
    "execution": 2,
    "runs": 3,
    "scheduler": 4,
    "worker": 4,
    "cli": 5,
    "api": 5,
}
#: the top-level modules (``squall/__init__.py`` re-exports the sdk; ``__main__`` runs the CLI)
TOP_LEVEL = 6
CYCLES_ALLOWED_IN = "squall.sdk"


def module_name(path: Path) -> str:
    parts = path.relative_to(SQUALL.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SQUALL.rglob("*.py"))}


def imported(path: Path, known: set[str]) -> Iterator[str]:
    """The Squall modules ``path`` imports (anywhere in it, lazily or for type checking)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("squall"):
                yield name


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__main__",):
        return TOP_LEVEL
    return LAYERS[parts[1]]


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set(imported(path, known)) - {name} for name, path in found.items()}


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in SQUALL.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(LAYERS), f"give {sorted(packages - set(LAYERS))} a layer"


def test_every_module_fits_in_one_read() -> None:
    long = sorted(f"{name}: {lines} lines" for name, path in modules().items()
                  if (lines := len(path.read_text().splitlines())) > MAX_LINES)
    assert not long, f"modules over {MAX_LINES} lines (split them along a seam):\n" + "\n".join(
        long)


def test_imports_run_only_downward() -> None:
    upward = sorted(f"{src} -> {dst}" for src, targets in graph().items() for dst in targets
                    if dst != "squall" and layer(dst) > layer(src))
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_common_imports_nothing_above_it() -> None:
    above = sorted(f"{src} -> {dst}" for src, targets in graph().items()
                   if src.startswith("squall.common") for dst in targets
                   if not dst.startswith("squall.common"))
    assert not above, "\n".join(above)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_outside_the_sdk() -> None:
    edges = {src: {dst for dst in targets if dst != "squall"} for src, targets in graph().items()}
    bad = [c for c in cycles(edges)
           if not all(m == CYCLES_ALLOWED_IN or m.startswith(CYCLES_ALLOWED_IN + ".") for m in c)]
    assert not bad, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in bad)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


#: the modules outside the scheduler that may import it: the commands that run a scheduler
#: loop (``squall scheduler``; ``dags test`` / ``tasks test`` run one locally; ``dags
#: backfill --local``)
RUN_A_SCHEDULER_LOOP = {"squall.cli.scheduler_cmds", "squall.cli.dags_cmds",
                        "squall.cli.backfill_cmds"}
#: ... and, until their operations move to ``squall.runs`` (issue 23), the modules still
#: using one from the scheduler: this list only shrinks
NOT_MOVED_YET = {
    "squall.api.ui.actions": "marking (scheduler.mark)",
    "squall.api.routes.task_instances": "marking (scheduler.mark)",
    "squall.cli.runs_cmds": "marking (scheduler.mark)",
    "squall.api.metrics": "reading jobs (scheduler.job)",
    "squall.api.routes.monitor": "reading jobs (scheduler.job)",
    "squall.cli.jobs_cmds": "reading jobs (scheduler.job)",
    "squall.api.routes.sla_misses": "SLA misses (scheduler.sla)",
}


def test_only_the_commands_that_run_a_scheduler_loop_import_the_scheduler() -> None:
    importers = {src for src, targets in graph().items()
                 if not src.startswith("squall.scheduler")
                 and any(dst.startswith("squall.scheduler.") for dst in targets)}
    allowed = RUN_A_SCHEDULER_LOOP | set(NOT_MOVED_YET)
    assert importers <= allowed, (
        "these import squall.scheduler; call the operation in squall.runs instead:\n"
        + "\n".join(sorted(importers - allowed)))
    assert not set(NOT_MOVED_YET) - importers, (
        f"no longer import the scheduler, take them off NOT_MOVED_YET: "
        f"{sorted(set(NOT_MOVED_YET) - importers)}")
