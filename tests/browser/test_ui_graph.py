"""The graph page and the API documentation in a real headless Chromium (Selenium), one API
server for the module (on PostgreSQL):

* a DAG's graph (Airflow 2.10's Graph tab), reached from the DAG list and the grid: tasks
  left to right, a task group collapsed into one node with its tasks' aggregate state
  until clicked (then a box holding them, collapsed again by its header), the edge's
  ``Label``, setup / teardown nodes marked, a mapped task's count, the states of the run
  picked in the selector, and a node opening its task instance, linked to the grid;
* the 200-task ``ui_big`` DAG drawn whole;
* the "API" link: Swagger UI lists the operations with no request leaving this server.

Screenshots are saved under ``$SQUALL_TEST_ARTIFACTS`` (or the test's tmp_path)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select
from sqlalchemy import delete, update

from squall.common.db import make_session_factory, session_scope
from squall.common.models import TaskInstance
from squall.common.settings import Settings
from squall.common.state import DagRunState, DagRunType
from squall.runs.run_creation import create_dag_run
from squall.sdk.dag import DAG
from squall.sdk.edges import Label
from squall.sdk.taskgroup import TaskGroup
from tests.browser.conftest import BIG_DAG, DAY, WAIT, Ui, add_big_dag, make_dag
from tests.browser.test_ui import login, screenshot, wait
from tests.conftest import _pg_clean
from tests.support.api import serve
from tests.support.scheduling import Noop, sync_dags

# one server for the module: its tests run in one process, one after the other
pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.xdist_group("ui_graph")]

GRAPH_DAG = "ui_graph"


def graph_dag() -> DAG:
    with DAG(GRAPH_DAG, schedule=None, start_date=DAY) as dag:
        setup = Noop(task_id="create_cluster")
        start = Noop(task_id="start")
        with TaskGroup("load", tooltip="fetch and clean the files") as load:
            Noop(task_id="fetch") >> Noop(task_id="clean")
        report = Noop(task_id="report")
        fan = Noop(task_id="fan")
        teardown = Noop(task_id="delete_cluster")
        setup >> start >> load >> Label("when clean") >> report >> fan >> teardown
        teardown.as_teardown(setups=setup)
    return dag


@pytest.fixture(scope="module")
def graph_ui(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ui, list[str]]]:
    """The UI with ``ui_etl`` (for logging in), ``ui_graph`` with two runs (the older all
    success; the newer with ``load.clean`` failed and ``fan`` mapped three ways) and
    ``ui_big``; the run ids of ``ui_graph``, oldest first."""
    engine = request.getfixturevalue("_pg_engine")
    _pg_clean(engine)
    factory = make_session_factory(engine)
    home = tmp_path_factory.mktemp("graph-ui")
    settings = Settings.load(env={"SQUALL_HOME": str(home)})
    now = datetime.now(UTC)
    dag = graph_dag()
    sync_dags(factory, make_dag(), dag, now=now)
    add_big_dag(factory, runs=2)
    runs = []
    with session_scope(factory) as session:
        for n in range(2):
            run = create_dag_run(session, dag, run_type=DagRunType.MANUAL,
                                 logical_date=DAY + timedelta(days=n), data_interval=None,
                                 state=DagRunState.SUCCESS if n == 0 else DagRunState.RUNNING,
                                 now=now)
            runs.append(run.run_id)
    with session_scope(factory) as session:
        session.execute(update(TaskInstance).where(TaskInstance.run_id == runs[0])
                        .values(state="success", try_number=1))
        newer = {"create_cluster": "success", "start": "success", "load.fetch": "success",
                 "load.clean": "failed", "report": "upstream_failed"}
        for task_id, state in newer.items():
            session.execute(update(TaskInstance).where(
                TaskInstance.run_id == runs[1], TaskInstance.task_id == task_id)
                .values(state=state, try_number=1))
        session.execute(delete(TaskInstance).where(TaskInstance.run_id == runs[1],
                                                   TaskInstance.task_id == "fan"))
        for index, state in enumerate(["success", "running", "success"]):
            session.add(TaskInstance(dag_id=GRAPH_DAG, task_id="fan", run_id=runs[1],
                                     map_index=index, state=state, operator="Noop"))
    with serve(settings, factory) as api:
        yield Ui(str(api.client.base_url).rstrip("/"), api, factory, runs[1],
                 settings.log_folder), runs


def node(browser: WebDriver, kind: str, node_id: str) -> list:  # type: ignore[type-arg]
    return browser.find_elements(By.CSS_SELECTOR, f'g.gnode[data-{kind}-id="{node_id}"]')


def attr(browser: WebDriver, kind: str, node_id: str, name: str) -> str:
    found = node(browser, kind, node_id)
    return (found[0].get_attribute(name) or "") if found else ""


def box(browser: WebDriver, kind: str, node_id: str) -> dict[str, float]:
    rect = node(browser, kind, node_id)[0].find_element(By.CSS_SELECTOR, "rect.box").rect
    return {k: float(v) for k, v in rect.items()}


def test_the_graph_of_a_dag(graph_ui: tuple[Ui, list[str]], browser: WebDriver,
                            artifacts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ui, runs = graph_ui
    login(browser, ui, "op")
    browser.find_element(By.CSS_SELECTOR,
                         f'tr[data-dag-id="{GRAPH_DAG}"] a.graph-link').click()
    wait(browser, "the graph's nodes coloured by the newest run",
         lambda d: attr(d, "task", "start", "data-state") == "success")
    assert browser.find_element(By.ID, "tab-graph").get_attribute("class") == "active"
    # collapsed: the group is one node, in the state that matters most among its tasks'
    assert node(browser, "task", "load.fetch") == []
    assert attr(browser, "group", "load", "data-state") == "failed"
    assert node(browser, "group", "load")[0].text == "▸ load\n2 tasks"
    # left to right
    xs = [box(browser, k, i)["x"] for k, i in (("task", "start"), ("group", "load"),
                                                 ("task", "report"), ("task", "fan"))]
    assert xs == sorted(xs) and len(set(xs)) == 4
    label = browser.find_element(By.CSS_SELECTOR, 'g.edge-label[data-from="load"]')
    assert label.text == "when clean" and label.get_attribute("data-to") == "report"
    assert browser.find_elements(By.CSS_SELECTOR, 'path.edge[data-from="start"][data-to="load"]')
    # setup / teardown marked; the mapped task counts its instances
    assert "st-setup" in attr(browser, "task", "create_cluster", "class")
    assert "st-teardown" in attr(browser, "task", "delete_cluster", "class")
    assert node(browser, "task", "create_cluster")[0].text.startswith("↑ create_cluster")
    assert attr(browser, "task", "fan", "data-mapped") == "3"
    assert attr(browser, "task", "fan", "data-state") == "running"
    assert node(browser, "task", "fan")[0].text == "fan [3]\nNoop"
    assert attr(browser, "task", "report", "data-state") == "upstream_failed"
    screenshot(browser, artifacts, "graph-collapsed.png", capsys)

    # a click expands the group: its tasks in a box, edges into them
    node(browser, "group", "load")[0].click()
    wait(browser, "the group's tasks", lambda d: attr(d, "task", "load.clean", "data-state")
         == "failed")
    group, fetch = box(browser, "group", "load"), box(browser, "task", "load.fetch")
    assert group["x"] < fetch["x"] and fetch["x"] + fetch["width"] < group["x"] + group["width"]
    assert browser.find_elements(
        By.CSS_SELECTOR, 'path.edge[data-from="start"][data-to="load.fetch"]')
    assert browser.find_element(
        By.CSS_SELECTOR, 'g.edge-label[data-from="load.clean"]').text == "when clean"
    screenshot(browser, artifacts, "graph-expanded.png", capsys)

    # a node opens its task instance, linked to the grid with it selected
    node(browser, "task", "load.clean")[0].click()
    wait(browser, "the task's panel",
         lambda d: "failed" in d.find_element(By.ID, "gp-facts").text)
    assert browser.find_element(By.ID, "gp-title").text == "load.clean"
    screenshot(browser, artifacts, "graph-panel.png", capsys)

    # the older run: every node turns success, the group too
    Select(browser.find_element(By.ID, "graph-run")).select_by_value(runs[0])
    wait(browser, "the older run's states",
         lambda d: attr(d, "task", "load.clean", "data-state") == "success")
    assert attr(browser, "task", "fan", "data-mapped") == ""
    assert "?run_id=manual__2024-03-01" in browser.current_url  # a link to this view

    # the group's header collapses it again (remembered across a reload)
    browser.find_element(By.CSS_SELECTOR, 'g.gnode.group.expanded[data-group-id="load"] '
                                          "g.group-head").click()
    wait(browser, "the group collapsed", lambda d: not node(d, "task", "load.fetch"))
    assert attr(browser, "group", "load", "data-state") == "success"
    browser.find_element(By.ID, "graph-expand").click()
    wait(browser, "every group expanded", lambda d: node(d, "task", "load.fetch"))
    browser.refresh()
    wait(browser, "the expanded group after a reload",
         lambda d: attr(d, "task", "load.fetch", "data-state") == "success")

    # the panel's link opens the grid with that task instance's panel
    node(browser, "task", "load.fetch")[0].click()
    wait(browser, "the panel", lambda d: "success" in d.find_element(By.ID, "gp-facts").text)
    browser.find_element(By.ID, "gp-grid").click()
    wait(browser, "the grid's panel on load.fetch",
         lambda d: d.find_elements(By.ID, "ti-title")
         and d.find_element(By.ID, "ti-title").text == "load.fetch")
    assert browser.find_element(By.ID, "ti-panel").is_displayed()
    # and the grid's tab leads back to the graph
    browser.find_element(By.ID, "tab-graph").click()
    wait(browser, "the graph again", lambda d: node(d, "task", "start"))


def test_the_200_task_dag_is_drawn_whole(graph_ui: tuple[Ui, list[str]], browser: WebDriver,
                                         artifacts: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    ui, _ = graph_ui
    login(browser, ui, "viewer")
    browser.get(f"{ui.url}/dags/{BIG_DAG}/graph")
    wait(browser, "200 task nodes with their states", lambda d: len(d.find_elements(
        By.CSS_SELECTOR, "g.gnode.task[data-state='none']")) == 200, timeout=WAIT * 2)
    assert len(browser.find_elements(By.CSS_SELECTOR, "path.edge")) == 180  # 20 chains of 10
    svg = browser.find_element(By.ID, "graph-svg")
    natural = svg.rect["width"]
    assert natural > browser.find_element(By.ID, "graph-wrap").rect["width"]
    # chains run left to right: step_001 right of step_000, step_010 starts a new chain
    assert box(browser, "task", "step_001")["x"] > box(browser, "task", "step_000")["x"]
    assert box(browser, "task", "step_010")["x"] == box(browser, "task", "step_000")["x"]
    screenshot(browser, artifacts, "graph-big.png", capsys)
    # "fit" shrinks it to the page's width
    browser.find_element(By.ID, "graph-fit").click()
    wait(browser, "the graph shrunk", lambda d: d.find_element(By.ID, "graph-svg").rect["width"]
         <= d.find_element(By.ID, "graph-wrap").rect["width"])
    screenshot(browser, artifacts, "graph-big-fit.png", capsys)
    browser.find_element(By.ID, "graph-fit").click()  # the choice is remembered: put it back


def test_the_api_link_lists_the_operations_offline(graph_ui: tuple[Ui, list[str]],
                                                    browser: WebDriver, artifacts: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    ui, _ = graph_ui
    login(browser, ui, "viewer")
    browser.find_element(By.LINK_TEXT, "API").click()
    wait(browser, "Swagger UI's operations", lambda d: len(d.find_elements(
        By.CSS_SELECTOR, ".opblock-summary")) > 20)
    paths = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
    assert "/api/v1/dags/{dag_id}/dagRuns" in paths
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)")
    assert loaded and all(u.startswith(ui.url + "/") for u in loaded), loaded
    screenshot(browser, artifacts, "api-docs.png", capsys)
    browser.get(f"{ui.url}/api/v1/redoc")
    wait(browser, "ReDoc's operations", lambda d: "/dags/{dag_id}/dagRuns" in d.page_source
         and d.find_elements(By.CSS_SELECTOR, "[data-section-id]"))
