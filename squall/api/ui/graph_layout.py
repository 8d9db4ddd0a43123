"""A layered (Sugiyama-style) left-to-right layout of a DAG's graph, with task groups that
are either collapsed (one node) or expanded (a box laid out inside, recursively), for the
web UI's graph page (issue 26). Pure Python, no dependency: the browser only draws the
boxes and polylines this returns as SVG.

Each level (the DAG's top level, and each expanded group) is laid out on its own, its
expanded child groups being big nodes of it:

1. cycles (a group can be both upstream and downstream of a task outside it) are broken
   by reversing the back edges of a depth-first search;
2. layering by longest path from the sources, then each source pulled right next to its
   first successor;
3. edges longer than one layer get a dummy node per layer they cross (their bends);
4. the order inside each layer by barycentre, a few sweeps down and up, keeping the order
   with the fewest crossings;
5. x by layer (a layer is as wide as its widest node; the gap after it wide enough for the
   edge labels that start there), y by isotonic regression: each node as close as the
   order allows to the mean of its neighbours in the previous layer (then the next).

An edge into an expanded group enters it through a *port* on the box's left border (one
per node outside it), laid out with the group's inside as a source in its first layer;
an edge out of a group leaves through a port on its right border, so edges cross no box
but the ones they go into."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

NODE_H = 44.0
GROUP_H = 44.0
MIN_W = 90.0
MAX_W = 260.0
CHAR_W = 7.0
PAD = 14.0
HEAD = 28.0
LAYER_GAP = 56.0
NODE_GAP = 16.0
DUMMY_GAP = 6.0
SWEEPS = 4


@dataclass(frozen=True)
class GraphSpec:
    """What is laid out: ``children[None]`` the top level's node ids (tasks and groups, in
    the DAG's order), ``children[g]`` group ``g``'s; ``groups`` the group ids; ``labels``
    each node's text; ``edges`` (upstream task, downstream task, label or None)."""

    children: Mapping[str | None, Sequence[str]]
    groups: frozenset[str]
    labels: Mapping[str, str]
    edges: Sequence[tuple[str, str, str | None]]

    def parents(self) -> dict[str, str | None]:
        return {c: g for g, kids in self.children.items() for c in kids}


def text_width(text: str) -> float:
    return len(text) * CHAR_W


def node_width(text: str) -> float:
    return min(MAX_W, max(MIN_W, text_width(text) + 40))


@dataclass
class _Item:
    key: str
    w: float
    h: float
    kind: str  # "node", "in", "out", "dummy"
    layer: int = 0
    x: float = 0.0  # centre, in the level's frame
    y: float = 0.0


@dataclass
class _Level:
    group: str | None
    items: dict[str, _Item] = field(default_factory=dict)
    #: level edge (a, b) -> the dummy keys between them, a to b
    bends: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    children: dict[str, _Level] = field(default_factory=dict)
    width: float = 0.0
    height: float = 0.0
    left: float = 0.0  # absolute, once placed
    top: float = 0.0


def layout(spec: GraphSpec, expanded: Iterable[str] = ()) -> dict[str, Any]:
    """The layout of ``spec`` with the groups in ``expanded`` open (the others collapsed;
    an expanded group inside a collapsed one stays hidden): ``{"width", "height",
    "nodes": [{"id", "type": "task"|"group", "expanded", "x", "y", "w", "h"}],
    "edges": [{"from", "to", "points": [[x, y], ...], "label", "label_pos"}]}``, with
    ``x``/``y`` a node's top left; an expanded group comes before what it holds."""
    parents = spec.parents()
    opened = set(expanded) & spec.groups
    visible = _visible(spec, parents, opened)
    edges = _visible_edges(spec.edges, visible)
    root = _lay_level(spec, None, opened, edges, parents)
    _place(root, 0.0, 0.0)
    nodes: list[dict[str, Any]] = []
    _collect_nodes(root, spec, nodes)
    return {"width": round(root.width, 1), "height": round(root.height, 1), "nodes": nodes,
            "edges": [_route(root, spec, parents, u, v, label)
                      for (u, v), label in edges.items()]}


def _visible(spec: GraphSpec, parents: Mapping[str, str | None],
             opened: set[str]) -> dict[str, str]:
    """Each node -> the node that stands for it: itself, or its outermost collapsed group."""
    out: dict[str, str] = {}

    def walk(group: str | None, stand_in: str | None) -> None:
        for child in spec.children.get(group, ()):
            shown = stand_in or child
            out[child] = shown
            if child in spec.groups:
                walk(child, stand_in or (None if child in opened else child))

    walk(None, None)
    return out


def _visible_edges(edges: Iterable[tuple[str, str, str | None]],
                   visible: Mapping[str, str]) -> dict[tuple[str, str], str | None]:
    """The edges between the nodes shown (one per pair; its label if all its edges that
    have one agree)."""
    labels: dict[tuple[str, str], set[str]] = {}
    for up, down, label in edges:
        u, v = visible.get(up), visible.get(down)
        if u is None or v is None or u == v:
            continue
        seen = labels.setdefault((u, v), set())
        if label:
            seen.add(label)
    return {key: next(iter(found)) if len(found) == 1 else None
            for key, found in labels.items()}


def _ancestors(node: str, parents: Mapping[str, str | None]) -> list[str | None]:
    """The groups holding ``node``, outermost first, starting with None (the top level)."""
    chain: list[str | None] = []
    group = parents.get(node)
    while group is not None:
        chain.append(group)
        group = parents.get(group)
    chain.append(None)
    return chain[::-1]


def _item_in(level: str | None, node: str, parents: Mapping[str, str | None]) -> str:
    """The child of ``level`` that holds ``node`` (or is it)."""
    while parents.get(node) != level:
        up = parents.get(node)
        assert up is not None, f"{node} is not inside {level}"
        node = up
    return node


IN, OUT, DUMMY = "\x01in:", "\x01out:", "\x01d:"  # no task or group id has these


def _level_edges(level: str | None, edges: Mapping[tuple[str, str], str | None],
                 parents: Mapping[str, str | None]) -> dict[tuple[str, str], str | None]:
    """The edges of ``level``'s own layout, with the label of the shown edge that starts
    and ends in this level (ports: ``IN + u`` on the box's left, ``OUT + v`` right)."""
    out: dict[tuple[str, str], str | None] = {}
    for (u, v), label in edges.items():
        inside_u = level in _ancestors(u, parents)
        inside_v = level in _ancestors(v, parents)
        if inside_u and inside_v:
            a, b = _item_in(level, u, parents), _item_in(level, v, parents)
            if a != b and not out.get((a, b)):
                out[(a, b)] = label
        elif inside_v:
            out.setdefault((IN + u, _item_in(level, v, parents)), None)
        elif inside_u:
            out.setdefault((_item_in(level, u, parents), OUT + v), None)
    return out


def _lay_level(spec: GraphSpec, group: str | None, opened: set[str],
               edges: Mapping[tuple[str, str], str | None],
               parents: Mapping[str, str | None]) -> _Level:
    level = _Level(group)
    for child in spec.children.get(group, ()):
        text = spec.labels.get(child, child)
        if child in opened:
            sub = _lay_level(spec, child, opened, edges, parents)
            level.children[child] = sub
            level.items[child] = _Item(child, max(sub.width, node_width(text) + 2 * PAD),
                                       sub.height, "node")
        else:
            level.items[child] = _Item(child, node_width(text),
                                       GROUP_H if child in spec.groups else NODE_H, "node")
    links = _level_edges(group, edges, parents)
    label_w: dict[str, float] = {}  # a level item -> its widest outgoing label here
    for (a, b), label in links.items():
        for key in (a, b):
            if key not in level.items:
                level.items[key] = _Item(key, 0.0, 0.0, "in" if key.startswith(IN) else "out")
        if label:
            label_w[a] = max(label_w.get(a, 0.0), text_width(label))
    pairs = list(links)
    reversed_ = _break_cycles(list(level.items), pairs)
    dag_pairs = [(b, a) if (a, b) in reversed_ else (a, b) for a, b in pairs]
    _assign_layers(level, dag_pairs)
    chains = _add_dummies(level, dag_pairs)
    for a, b in pairs:
        chain = chains[(b, a)] if (a, b) in reversed_ else chains[(a, b)]
        level.bends[(a, b)] = chain[::-1] if (a, b) in reversed_ else chain
    layers = _order(level, chains)
    _coordinates(level, layers, chains, label_w, top=HEAD if group is not None else PAD)
    return level


def _break_cycles(nodes: list[str], pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """The edges to reverse so none closes a cycle (back edges of a DFS, in node order)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in pairs:
        succ[a].append(b)
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    back: set[tuple[str, str]] = set()
    for start in nodes:
        if start in state:
            continue
        state[start] = 1
        stack = [(start, iter(succ[start]))]
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                back.add((node, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))
    return back


def _assign_layers(level: _Level, pairs: list[tuple[str, str]]) -> None:
    items = level.items
    preds: dict[str, list[str]] = {k: [] for k in items}
    succs: dict[str, list[str]] = {k: [] for k in items}
    for a, b in pairs:
        preds[b].append(a)
        succs[a].append(b)
    has_in = any(i.kind == "in" for i in items.values())
    layer: dict[str, int] = {}
    for key in _topological(list(items), succs, preds):
        first = 1 if has_in and items[key].kind != "in" else 0
        layer[key] = max([layer[p] + 1 for p in preds[key]] + [first])
    # a source with successors sits just left of its nearest one (longest path puts every
    # source in the first layer, however far its edges then run)
    for key in sorted(layer, key=lambda k: -layer[k]):
        if not preds[key] and succs[key] and items[key].kind == "node":
            layer[key] = max(layer[key], min(layer[s] for s in succs[key]) - 1)
    last = max((v for k, v in layer.items() if items[k].kind != "out"), default=0)
    for key, item in items.items():
        item.layer = last + 1 if item.kind == "out" else layer[key]


def _topological(nodes: list[str], succs: Mapping[str, list[str]],
                 preds: Mapping[str, list[str]]) -> list[str]:
    indegree = {n: len(preds[n]) for n in nodes}
    ready = [n for n in nodes if indegree[n] == 0][::-1]
    out: list[str] = []
    while ready:
        node = ready.pop()
        out.append(node)
        for s in reversed(succs[node]):
            indegree[s] -= 1
            if indegree[s] == 0:
                ready.append(s)
    return out


def _add_dummies(level: _Level, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
    chains: dict[tuple[str, str], list[str]] = {}
    for a, b in pairs:
        la, lb = level.items[a].layer, level.items[b].layer
        chain = []
        for n in range(la + 1, lb):
            key = f"{DUMMY}{a}\x00{b}\x00{n}"
            level.items[key] = _Item(key, 0.0, 0.0, "dummy", layer=n)
            chain.append(key)
        chains[(a, b)] = chain
    return chains


def _segments(chains: Mapping[tuple[str, str], list[str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for (a, b), chain in chains.items():
        path = [a, *chain, b]
        out.extend(itertools.pairwise(path))
    return out


def _order(level: _Level, chains: Mapping[tuple[str, str], list[str]]) -> list[list[str]]:
    """The items of each layer, top to bottom, by barycentre sweeps."""
    depth = max((i.layer for i in level.items.values()), default=-1) + 1
    layers: list[list[str]] = [[] for _ in range(depth)]
    segs = _segments(chains)
    preds: dict[str, list[str]] = {k: [] for k in level.items}
    succs: dict[str, list[str]] = {k: [] for k in level.items}
    for a, b in segs:
        succs[a].append(b)
        preds[b].append(a)
    seen: set[str] = set()

    def visit(key: str) -> None:  # depth first, so chains start out together
        stack = [key]
        while stack:
            k = stack.pop()
            if k in seen:
                continue
            seen.add(k)
            layers[level.items[k].layer].append(k)
            stack.extend(reversed(succs[k]))

    for key, item in level.items.items():
        if not preds[key] and item.kind != "dummy":
            visit(key)
    for key in level.items:
        visit(key)
    best = [list(lay) for lay in layers]
    best_cross = _crossings(layers, succs)
    for sweep in range(SWEEPS):
        for k in range(1, depth):
            _sort_by(layers[k], layers[k - 1], preds)
        for k in range(depth - 2, -1, -1):
            _sort_by(layers[k], layers[k + 1], succs)
        cross = _crossings(layers, succs)
        if cross < best_cross:
            best, best_cross = [list(lay) for lay in layers], cross
        if best_cross == 0:
            break
        log.debug("graph layout: sweep %d, %d crossings", sweep, cross)
    return best


def _sort_by(layer: list[str], fixed: list[str], neighbours: Mapping[str, list[str]]) -> None:
    pos = {k: i for i, k in enumerate(fixed)}
    keys: dict[str, float] = {}
    for i, k in enumerate(layer):
        near = [pos[n] for n in neighbours[k] if n in pos]
        keys[k] = sum(near) / len(near) if near else float(i)
    layer.sort(key=lambda k: keys[k])  # stable: ties keep their order


def _crossings(layers: list[list[str]], succs: Mapping[str, list[str]]) -> int:
    total = 0
    for upper, lower in itertools.pairwise(layers):
        pos = {k: i for i, k in enumerate(lower)}
        ends = sorted((i, pos[s]) for i, k in enumerate(upper) for s in succs[k] if s in pos)
        for n, (a1, b1) in enumerate(ends):
            for a2, b2 in ends[n + 1:]:
                if a2 > a1 and b2 < b1:
                    total += 1
    return total


def _coordinates(level: _Level, layers: list[list[str]],
                 chains: Mapping[tuple[str, str], list[str]], label_w: Mapping[str, float],
                 top: float) -> None:
    items = level.items
    x = 0.0 if any(i.kind == "in" for i in items.values()) else PAD
    right = x
    for n, layer in enumerate(layers):
        width = max((items[k].w for k in layer), default=0.0)
        for k in layer:
            items[k].x = x + width / 2
        right = x + width
        labels = max((label_w.get(k, 0.0) for k in layer), default=0.0)
        gap = max(LAYER_GAP, labels + 28) if n + 1 < len(layers) else 0.0
        x = right + gap
    level.width = right if any(i.kind == "out" for i in items.values()) else right + PAD
    segs = _segments(chains)
    preds: dict[str, list[str]] = {k: [] for k in items}
    succs: dict[str, list[str]] = {k: [] for k in items}
    for a, b in segs:
        succs[a].append(b)
        preds[b].append(a)
    for layer in layers:  # stacked first
        y = 0.0
        for n, k in enumerate(layer):
            if n:
                y += _sep(items[layer[n - 1]], items[k])
            items[k].y = y
    for _ in range(SWEEPS):
        for layer in layers[1:]:
            _align(layer, items, preds)
        for layer in reversed(layers[:-1]):
            _align(layer, items, succs)
    lowest = min((i.y - i.h / 2 for i in items.values()), default=0.0)
    for item in items.values():
        item.y += top - lowest
    level.height = max((i.y + i.h / 2 for i in items.values()), default=top) + PAD
    level.width = max(level.width, 2 * PAD)
    for item in items.values():  # ports on the box's borders
        if item.kind == "in":
            item.x = 0.0
        elif item.kind == "out":
            item.x = level.width


def _sep(a: _Item, b: _Item) -> float:
    gap = DUMMY_GAP if "dummy" in (a.kind, b.kind) or not (a.h and b.h) else NODE_GAP
    return (a.h + b.h) / 2 + gap


def _align(layer: list[str], items: Mapping[str, _Item],
           neighbours: Mapping[str, list[str]]) -> None:
    """Move the layer's items as close as their order allows to the mean y of their
    neighbours (pool adjacent violators on the offsets)."""
    if not layer:
        return
    want = []
    for k in layer:
        near = [items[n].y for n in neighbours[k]]
        want.append(sum(near) / len(near) if near else items[k].y)
    offsets = [0.0]
    for n in range(1, len(layer)):
        offsets.append(offsets[-1] + _sep(items[layer[n - 1]], items[layer[n]]))
    blocks: list[list[float]] = []  # [mean, count]
    for w, o in zip(want, offsets, strict=True):
        blocks.append([w - o, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, c2 = blocks.pop()
            m1, c1 = blocks.pop()
            blocks.append([(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2])
    n = 0
    for mean, count in blocks:
        for _ in range(int(count)):
            items[layer[n]].y = mean + offsets[n]
            n += 1


def _place(level: _Level, left: float, top: float) -> None:
    level.left, level.top = left, top
    for key, sub in level.children.items():
        item = level.items[key]
        _place(sub, left + item.x - item.w / 2, top + item.y - item.h / 2)


def _collect_nodes(level: _Level, spec: GraphSpec, out: list[dict[str, Any]]) -> None:
    for key in spec.children.get(level.group, ()):
        item = level.items[key]
        sub = level.children.get(key)
        out.append({"id": key, "type": "group" if key in spec.groups else "task",
                    "expanded": sub is not None,
                    "x": round(level.left + item.x - item.w / 2, 1),
                    "y": round(level.top + item.y - item.h / 2, 1),
                    "w": round(item.w, 1), "h": round(item.h, 1)})
        if sub is not None:
            _collect_nodes(sub, spec, out)


def _point(level: _Level, key: str) -> list[float]:
    item = level.items[key]
    return [round(level.left + item.x, 1), round(level.top + item.y, 1)]


def _route(root: _Level, spec: GraphSpec, parents: Mapping[str, str | None], u: str,
           v: str, label: str | None) -> dict[str, Any]:
    """The polyline of the shown edge u -> v: out of u's groups through their ports, across
    the level that holds both, into v's groups through theirs."""
    up, down = _ancestors(u, parents), _ancestors(v, parents)
    common = 0
    while common < min(len(up), len(down)) and up[common] == down[common]:
        common += 1
    levels: dict[str | None, _Level] = {None: root}

    def find(group: str | None) -> _Level:
        if group not in levels:
            assert group is not None
            levels[group] = find(parents.get(group)).children[group]
        return levels[group]

    lu = find(up[-1]).items[u]
    ou = find(up[-1])
    points = [[round(ou.left + lu.x + lu.w / 2, 1), round(ou.top + lu.y, 1)]]
    for group in reversed(up[common:]):  # out of u's groups, innermost first
        level = find(group)
        a = _item_in(group, u, parents)
        points.extend(_point(level, k) for k in level.bends[(a, OUT + v)])
        points.append(_point(level, OUT + v))
    lca = find(up[common - 1])
    a, b = _item_in(lca.group, u, parents), _item_in(lca.group, v, parents)
    start = len(points) - 1
    points.extend(_point(lca, k) for k in lca.bends[(a, b)])
    for group in down[common:]:  # into v's groups, outermost first
        level = find(group)
        points.append(_point(level, IN + u))
        b = _item_in(group, v, parents)
        points.extend(_point(level, k) for k in level.bends[(IN + u, b)])
    lv, ov = find(down[-1]).items[v], find(down[-1])
    points.append([round(ov.left + lv.x - lv.w / 2, 1), round(ov.top + lv.y, 1)])
    label_pos = None
    if label:
        (x1, y1), (x2, y2) = points[start], points[start + 1]
        label_pos = [round((x1 + x2) / 2, 1), round((y1 + y2) / 2, 1)]
    return {"from": u, "to": v, "points": points, "label": label, "label_pos": label_pos}
