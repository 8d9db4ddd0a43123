"""The package layout's rules, checked on the source tree (docs/adr/0013-the-layout.md):
each module fits in one read, imports run only downward through the layers, no import
cycle spans modules except inside ``squall/sdk`` (a DAG and its operators refer to each
other), and ``squall/common`` holds the shared core only."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SQUALL = Path(__file__).resolve().parents[2] / "squall"
MAX_LINES = 600

#: a package may import its own level and the levels below it, never above
LAYERS: dict[str, int] = {
    "common": 0,
    "secrets": 1,
    "sdk": 2,
    "migrations": 2,
    "compat": 3,
    "dag_processing": 3,
    "execution": 3,
    "runs": 4,
    "scheduler": 5,
    "worker": 5,
    "triggerer": 5,
    "cli": 6,
    "api": 6,
}
#: the top-level modules (``squall/__init__.py`` re-exports the sdk; ``__main__`` runs the CLI)
TOP_LEVEL = 7
CYCLES_ALLOWED_IN = "squall.sdk"
#: what ``squall/common`` may hold: the shared core, no features (ADR 13 says why each is core)
COMMON_CORE = frozenset({
    "celery_app", "console", "db", "dbops", "errors", "lease_terms", "metrics", "models", "outage",
    "payload", "procutil", "settings", "state", "transports", "wakeup",
})


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


def common_entries(common: Path) -> set[str]:
    """The modules and packages directly in ``common`` (a module by its stem)."""
    return ({p.stem for p in common.glob("*.py") if p.stem != "__init__"}
            | {p.name for p in common.iterdir() if p.is_dir() and (p / "__init__.py").exists()})


def strangers(common: Path) -> str | None:
    """Why ``common`` holds something outside :data:`COMMON_CORE`, or None."""
    extra = sorted(common_entries(common) - COMMON_CORE)
    if not extra:
        return None
    return (f"squall/common holds the shared core only, not {', '.join(extra)}: "
            "give a feature a room at the layer where it is used (secrets/, sdk/, execution/, "
            "scheduler/, worker/, api/ ...), or argue it into the core in "
            "docs/adr/0013-the-layout.md and COMMON_CORE")


def test_common_holds_only_the_core() -> None:
    problem = strangers(SQUALL / "common")
    assert problem is None, problem


def test_a_feature_in_common_is_named(tmp_path: Path) -> None:
    (tmp_path / "settings.py").write_text("")
    (tmp_path / "pools.py").write_text("")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("")
    (tmp_path / "__pycache__").mkdir()
    assert strangers(tmp_path) == (
        "squall/common holds the shared core only, not pools: give a feature a "
        "room at the layer where it is used (secrets/, sdk/, execution/, scheduler/, worker/, "
        "api/ ...), or argue it into the core in docs/adr/0013-the-layout.md and COMMON_CORE")
    (tmp_path / "pools.py").unlink()
    assert strangers(tmp_path) is None


def test_common_imports_nothing_above_it() -> None:
    above = sorted(f"{src} -> {dst}" for src, targets in graph().items()
                   if src.startswith("squall.common") for dst in targets
                   if not dst.startswith("squall.common"))
    assert not above, "\n".join(above)


#: the one module that names sets of states
STATE_SETS_HOME = "squall.common.state"
#: the names a module refers to the state enums by
STATE_ENUMS = frozenset({"TI", "TaskInstanceState", "DagRunState", "BackfillState", "JobState"})
_COLLECTIONS = ("frozenset", "set", "tuple", "list")


def state_sets(source: str) -> list[str]:
    """The module-level names ``source`` binds to a collection of state enum members (a
    ``frozenset({TI.RUNNING, ...})``, a tuple of ``TI.X.value`` ...). A set derived from a
    named one (``frozenset(s.value for s in FINISHED_STATES)``) or from a whole enum does
    not count: it names no set of its own."""
    found = []
    for node in ast.parse(source).body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if value is None:
            continue
        collection = isinstance(value, (ast.Set, ast.Tuple, ast.List, ast.BinOp)) or (
            isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in _COLLECTIONS)
        members = any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                      and n.value.id in STATE_ENUMS and n.attr.isupper()
                      for n in ast.walk(value))
        if collection and members:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found += [ast.unparse(t) for t in targets]
    return found


def test_every_named_set_of_states_lives_in_common_state() -> None:
    elsewhere = sorted(f"{name}: {found}" for name, path in modules().items()
                       if name != STATE_SETS_HOME
                       for found in state_sets(path.read_text()))
    assert not elsewhere, ("sets of states named outside squall/common/state.py (name them "
                           "there, for what they mean):\n" + "\n".join(elsewhere))


def test_the_state_set_finder_finds_one() -> None:
    assert state_sets("IN_FLIGHT = frozenset({TI.QUEUED, TI.RUNNING})\n"
                      "X: tuple[str, ...] = (TaskInstanceState.SUCCESS.value,)\n"
                      "ONE = TI.RUNNING\n"
                      "DONE = frozenset(s.value for s in FINISHED_STATES)\n"
                      "JOIN = (Run.dag_id == TI.dag_id)\n") == ["IN_FLIGHT", "X"]


MAX_PARAMETERS = 10
#: FastAPI routes: their parameters are the query parameters
ROUTES_PACKAGE = "squall.api.routes"
#: maps Airflow's import paths to Squall's names, whose signatures are Airflow's
COMPAT_MAPPING = SQUALL / "compat" / "airflow.py"
#: functions over the limit for now, each with where it gets its fix
PENDING_PARAMETERS = {
    # create_dag_run moves with the run operations to squall/runs/ (issue 23), which
    # reshapes its arguments
    "squall.runs.run_creation.create_dag_run",
}


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Its parameters, ``self`` / ``cls`` and ``*args`` / ``**kwargs`` left out."""
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    return len([n for n in names if n not in ("self", "cls")])


def functions(module: str, source: str) -> Iterator[tuple[str, ast.FunctionDef
                                                           | ast.AsyncFunctionDef]]:
    """Every function of ``source`` by qualified name (methods as ``module.Class.name``)."""
    def walk(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, Any]]:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{prefix}.{node.name}", node
                yield from walk(node.body, f"{prefix}.{node.name}")
            elif isinstance(node, ast.ClassDef):
                yield from walk(node.body, f"{prefix}.{node.name}")

    yield from walk(ast.parse(source).body, module)


def airflow_shaped() -> set[str]:
    """The functions whose signatures are Airflow's: the names the compat mapping gives,
    a class by its ``__init__``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(COMPAT_MAPPING.read_text())):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and node.value.startswith("squall.") and ":" in node.value):
            module, name = node.value.split(":")
            found |= {f"{module}.{name}", f"{module}.{name}.__init__"}
    return found


def test_no_function_takes_more_than_ten_parameters() -> None:
    exempt = airflow_shaped() | PENDING_PARAMETERS
    long = sorted(
        f"{name}: {count}" for module, path in modules().items()
        if not module.startswith(ROUTES_PACKAGE)
        for name, node in functions(module, path.read_text())
        if (count := parameter_count(node)) > MAX_PARAMETERS and name not in exempt)
    assert not long, (f"functions over {MAX_PARAMETERS} parameters (pass a dataclass, or "
                      "register what every call needs once: ADR 13, 24):\n" + "\n".join(long))


def test_the_parameter_counter_counts() -> None:
    [(name, node)] = functions("m", "class C:\n    def f(self, a, /, b, *c, d, **e): pass\n")
    assert (name, parameter_count(node)) == ("m.C.f", 3)
    assert "squall.sdk.dag.DAG.__init__" in airflow_shaped()


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


#: The modules outside ``squall/scheduler`` that may import it, and what of it: the commands
#: that run a scheduler loop. Everything else (the API, the CLI's other commands, the
#: worker) uses the operations below it (``squall/runs``) (ADR 13).
SCHEDULER_IMPORTERS: dict[str, set[str]] = {
    "squall.cli.scheduler_cmds": {"squall.scheduler.dag_processor", "squall.scheduler.executor",
                                  "squall.scheduler.job"},
    # `backfill --local` runs a scheduler loop of its own
    "squall.cli.backfill_cmds": {"squall.scheduler.executor", "squall.scheduler.job"},
    # `dags test` / `tasks test` run the scheduler's decisions in-process
    "squall.cli.dags_cmds": {"squall.scheduler.local_run"},
}


def test_only_the_commands_that_run_a_scheduler_loop_import_it() -> None:
    allowed = SCHEDULER_IMPORTERS
    imports = {src: {dst for dst in targets if dst.startswith("squall.scheduler")}
               for src, targets in graph().items() if not src.startswith("squall.scheduler")}
    bad = sorted(f"{src} -> {dst}" for src, targets in imports.items() for dst in targets
                 if dst not in allowed.get(src, set()))
    assert not bad, ("modules that import the scheduler (use squall.runs, or, for a command "
                     "that runs a scheduler loop, add it to SCHEDULER_IMPORTERS):\n"
                     + "\n".join(bad))
    stale = sorted(f"{src} -> {dst}" for src, targets in allowed.items() for dst in targets
                   if dst not in imports.get(src, set()))
    assert not stale, "allowed but no longer imported (remove them):\n" + "\n".join(stale)
