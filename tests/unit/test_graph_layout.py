"""The graph page's layered layout (squall/api/ui/graph_layout.py): left to right, no two
nodes overlap, an expanded group's box holds its nodes and no other, edges start at their
upstream's right and end at their downstream's left, long edges bend through every layer
they cross, crossings are undone where an order without them exists, a cycle through a
collapsed group still lays out, and labels sit between the nodes they join."""

from __future__ import annotations

from typing import Any

import pytest

import squall.api.app  # noqa: F401  (first: squall.api.ui and squall.api.routes import each other)
from squall.api.ui.graph_layout import GraphSpec, layout


def spec(children: dict[str | None, list[str]], edges: list[tuple[str, str, str | None]],
         groups: tuple[str, ...] = ()) -> GraphSpec:
    return GraphSpec(children=children, groups=frozenset(groups),
                     labels={n: n.rsplit(".", 1)[-1] for kids in children.values()
                             for n in kids}, edges=edges)


def nodes(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in result["nodes"]}


def overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def inside(inner: dict[str, Any], outer: dict[str, Any]) -> bool:
    return (outer["x"] <= inner["x"] and inner["x"] + inner["w"] <= outer["x"] + outer["w"]
            and outer["y"] <= inner["y"] and inner["y"] + inner["h"] <= outer["y"] + outer["h"])


def check_edges(result: dict[str, Any]) -> None:
    shown = nodes(result)
    for e in result["edges"]:
        up, down = shown[e["from"]], shown[e["to"]]
        assert e["points"][0] == [up["x"] + up["w"], up["y"] + up["h"] / 2]
        assert e["points"][-1] == [down["x"], down["y"] + down["h"] / 2]


NESTED = spec({None: ["a", "g", "z"], "g": ["g.b", "g.h", "g.e"], "g.h": ["g.h.c", "g.h.d"]},
              [("a", "g.b", None), ("g.b", "g.h.c", "go"), ("g.h.c", "g.h.d", None),
               ("g.h.d", "g.e", None), ("g.e", "z", "done"), ("a", "z", None),
               ("a", "g.h.d", None)],
              groups=("g", "g.h"))


@pytest.mark.parametrize("opened", [(), ("g",), ("g", "g.h"), ("g.h",)])
def test_nested_groups_collapsed_or_expanded(opened: tuple[str, ...]) -> None:
    result = layout(NESTED, opened)
    shown = nodes(result)
    boxes = [n for n in shown.values() if n["expanded"]]
    leaves = [n for n in shown.values() if not n["expanded"]]
    visible = {"a", "z"} | ({"g.b", "g.e"} | ({"g.h.c", "g.h.d"} if "g.h" in opened else {"g.h"})
                            if "g" in opened else {"g"})
    assert {n["id"] for n in leaves} == visible  # g.h open inside a closed g stays hidden
    for n, first in enumerate(leaves):
        for second in leaves[n + 1:]:
            assert not overlap(first, second), (first, second)
        for group in boxes:
            holds = first["id"].startswith(group["id"] + ".")
            assert inside(first, group) if holds else not overlap(first, group)
        assert first["x"] + first["w"] <= result["width"]
        assert first["y"] + first["h"] <= result["height"]
    check_edges(result)
    for e in result["edges"]:  # left to right, without a cycle
        xs = [p[0] for p in e["points"]]
        assert xs == sorted(xs), e
    # the order the tasks run in, left to right
    assert shown["a"]["x"] < shown["z"]["x"]
    if "g" in opened:
        assert shown["a"]["x"] < shown["g.b"]["x"] < shown["g.e"]["x"] < shown["z"]["x"]


def test_labels_sit_on_their_edges_between_the_nodes() -> None:
    result = layout(NESTED, ["g"])
    shown = nodes(result)
    edges = {(e["from"], e["to"]): e for e in result["edges"]}
    assert edges[("g.e", "z")]["label"] == "done"
    x, _ = edges[("g.e", "z")]["label_pos"]
    assert shown["g.e"]["x"] + shown["g.e"]["w"] < x < shown["z"]["x"]
    # collapsed g.h: the edges into it from b and a are one each, b's keeping its label
    assert edges[("g.b", "g.h")]["label"] == "go"
    assert ("a", "g.h") in edges and edges[("a", "g.h")]["label"] is None
    # the edge into a group's task bends at the box's left border, into the box
    into = edges[("a", "g.b")]["points"]
    assert [p[0] for p in into[1:-1]] == [shown["g"]["x"]]
    assert shown["g"]["y"] < into[1][1] < shown["g"]["y"] + shown["g"]["h"]


def test_long_edges_bend_through_each_layer_and_crossings_are_undone() -> None:
    chain = spec({None: ["s", "m1", "m2", "m3", "t", "x", "y"]},
                 [("s", "m1", None), ("m1", "m2", None), ("m2", "m3", None),
                  ("m3", "t", None), ("s", "t", None), ("x", "m2", None), ("y", "m1", None)])
    result = layout(chain)
    shown = nodes(result)
    edges = {(e["from"], e["to"]): e for e in result["edges"]}
    assert len(edges[("s", "t")]["points"]) == 2 + 3  # a bend in each of m1, m2, m3's layers
    assert shown["x"]["x"] == shown["m1"]["x"]  # a source sits next to its successor
    check_edges(result)
    # a crossing the first order has (s1's successors in the order its edges were made) is
    # undone: v moves below u
    crossed = layout(spec({None: ["s1", "s2", "u", "v"]},
                          [("s1", "v", None), ("s1", "u", None), ("s2", "v", None)]))
    ys = {n["id"]: n["y"] for n in crossed["nodes"]}
    assert (ys["s1"] < ys["s2"]) == (ys["u"] < ys["v"])


def test_a_cycle_through_a_collapsed_group_still_lays_out() -> None:
    cyclic = spec({None: ["a", "g", "b"], "g": ["g.x", "g.y"]},
                  [("a", "g.x", None), ("g.x", "b", None), ("b", "g.y", None)], groups=("g",))
    for opened in ((), ("g",)):
        result = layout(cyclic, opened)
        check_edges(result)
        assert len(result["edges"]) == (2 + 1 if not opened else 3)


def test_two_hundred_tasks() -> None:
    tasks = [f"t{n:03d}" for n in range(200)]
    edges: list[tuple[str, str, str | None]] = [
        (tasks[n - 1], tasks[n], None) for n in range(1, 200) if n % 10]
    edges += [(tasks[0], t, None) for t in tasks[10::10]]  # one fan-out across the chains
    result = layout(spec({None: tasks}, edges))
    shown = list(nodes(result).values())
    assert len(shown) == 200 and len(result["edges"]) == len(edges)
    spots = {(n["x"], n["y"]) for n in shown}
    assert len(spots) == 200
    check_edges(result)
