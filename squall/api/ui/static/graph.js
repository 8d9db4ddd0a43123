// A DAG's graph (Airflow 2.10's Graph tab): tasks and their dependencies left to right, as
// laid out by the server (squall/api/ui/graph_layout.py), drawn here as SVG. Task groups
// are collapsed into one node (the aggregate state of their tasks) until clicked; edge
// labels (Label("...")) sit on their edges; nodes take the state of the run chosen in the
// selector (default: the newest), polled every 2 s; a mapped task shows how many
// instances it has; setup and teardown tasks are marked. A node opens a panel with its
// task instance, linked to the grid (log, actions).
"use strict";

(() => {
  const { request, el, fmtDate, fmtDuration, flash, poll, stateClass, STATES } = Squall;
  const SVG = "http://www.w3.org/2000/svg";
  const dagId = document.body.dataset.dagId;
  const dagUrl = `/ui/api/dags/${encodeURIComponent(dagId)}`;
  const wrap = document.getElementById("graph-wrap");
  const runSelect = document.getElementById("graph-run");
  const panel = document.getElementById("graph-panel");
  const openKey = `squall.graph.expanded.${dagId}`;
  const params = new URLSearchParams(window.location.search);
  let runId = params.get("run_id");      // null: the newest run
  let expanded = new Set(JSON.parse(localStorage.getItem(openKey) || "[]"));
  let graph = null;                      // the last /graph answer
  let states = null;                     // the last /graph/states answer
  let selectedTask = null;

  document.getElementById("legend").replaceChildren(...STATES.map((s) =>
    el("span", { class: "legend-item" }, el("span", { class: `dot ${stateClass(s)}` }), s)));

  function svg(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c) node.append(c);
    return node;
  }

  // a text cut to fit `width` pixels (about 7 px a character at this size)
  const fit = (text, width) => {
    const n = Math.max(3, Math.floor(width / 7));
    return text.length > n ? `${text.slice(0, n - 1)}…` : text;
  };

  // a curve through the points, leaving and entering each horizontally
  function pathOf(points) {
    let d = `M${points[0][0]},${points[0][1]}`;
    for (let i = 1; i < points.length; i += 1) {
      const [x0, y0] = points[i - 1], [x1, y1] = points[i];
      const dx = Math.max(Math.abs(x1 - x0) / 2, 10);
      d += ` C${x0 + dx},${y0} ${x1 - dx},${y1} ${x1},${y1}`;
    }
    return d;
  }

  function toggle(groupId) {
    if (expanded.has(groupId)) {
      // closing a group closes those inside it too
      for (const g of [...expanded]) if (g === groupId || g.startsWith(`${groupId}.`)) expanded.delete(g);
    } else expanded.add(groupId);
    saveAndLoad();
  }

  function saveAndLoad() {
    localStorage.setItem(openKey, JSON.stringify([...expanded]));
    loadGraph().catch((e) => flash(e.message, "error"));
  }

  function draw(data) {
    const { layout } = data;
    if (!layout.nodes.length) {
      wrap.replaceChildren(el("p", { class: "muted", id: "graph-empty", text: "This DAG has no tasks (or was not parsed yet)." }));
      return;
    }
    const root = svg("svg", { id: "graph-svg", width: layout.width + 10, height: layout.height + 10,
      viewBox: `0 0 ${layout.width + 10} ${layout.height + 10}`, role: "img", "aria-label": `graph of ${dagId}` });
    root.append(svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow-head" }))));
    const boxes = svg("g", { class: "groups" }), edges = svg("g", { class: "edges" }), nodes = svg("g", { class: "nodes" });
    for (const n of layout.nodes) {
      if (n.type === "group" && n.expanded) boxes.append(groupBox(n, data.groups[n.id]));
      else nodes.append(n.type === "group" ? groupNode(n, data.groups[n.id]) : taskNode(n, data.tasks[n.id]));
    }
    const labels = svg("g", { class: "edge-labels" });
    for (const e of layout.edges) {
      const kinds = [data.tasks[e.from]?.kind, data.tasks[e.to]?.kind];
      const st = kinds.includes("setup") && kinds.includes("teardown");  // Airflow dashes these
      edges.append(svg("path", { class: `edge${st ? " setup-teardown" : ""}`, d: pathOf(e.points),
        "marker-end": "url(#arrow)", "data-from": e.from, "data-to": e.to }));
      if (e.label) {
        const w = e.label.length * 6.6 + 10;
        labels.append(svg("g", { class: "edge-label", "data-from": e.from, "data-to": e.to,
          transform: `translate(${e.label_pos[0]},${e.label_pos[1]})` },
        svg("rect", { x: -w / 2, y: -9, width: w, height: 18, rx: 4 }),
        svg("text", { "text-anchor": "middle", y: 4, text: e.label })));
      }
    }
    root.append(boxes, edges, nodes, labels);
    wrap.replaceChildren(root);
    if (selectedTask) wrap.querySelector(`g.gnode[data-task-id="${CSS.escape(selectedTask)}"]`)?.classList.add("selected");
    if (states) paint(states);
  }

  function groupBox(n, g) {
    return svg("g", { class: "gnode group expanded", "data-group-id": n.id, transform: `translate(${n.x},${n.y})` },
      svg("rect", { class: "box", width: n.w, height: n.h, rx: 8 }),
      svg("g", { class: "group-head", tabindex: 0, role: "button", onclick: () => toggle(n.id),
        onkeydown: (ev) => { if (ev.key === "Enter") toggle(n.id); } },
      svg("rect", { class: "head-hit", width: n.w, height: 26, rx: 8 }),
      svg("text", { x: 10, y: 18, class: "group-title", text: fit(`▾ ${g.label}`, n.w - 20) },
        svg("title", { text: `${n.id}: click to collapse${g.tooltip ? `\n${g.tooltip}` : ""}` }))));
  }

  function groupNode(n, g) {
    const open = () => toggle(n.id);
    return svg("g", { class: "gnode group collapsed", "data-group-id": n.id, tabindex: 0, role: "button",
      transform: `translate(${n.x},${n.y})`, onclick: open, onkeydown: (ev) => { if (ev.key === "Enter") open(); } },
    svg("rect", { class: "box", width: n.w, height: n.h, rx: 8 }),
    svg("text", { x: 10, y: 18, class: "node-title", text: fit(`▸ ${g.label}${g.mapped ? " [ ]" : ""}`, n.w - 30) }),
    svg("text", { x: 10, y: 35, class: "node-sub", text: `${g.tasks} task${g.tasks === 1 ? "" : "s"}` }),
    svg("circle", { class: "state-dot", cx: n.w - 11, cy: 12, r: 5 }),
    svg("title", { text: `${n.id} (task group: click to expand)${g.tooltip ? `\n${g.tooltip}` : ""}` }));
  }

  function taskNode(n, t) {
    const mark = t.kind === "setup" ? "↑ " : t.kind === "teardown" ? "↓ " : "";
    const choose = () => showTask(n.id);
    return svg("g", { class: `gnode task${t.kind ? ` st-${t.kind}` : ""}${t.mapped ? " mapped" : ""}`,
      "data-task-id": n.id, tabindex: 0, role: "button", transform: `translate(${n.x},${n.y})`,
      onclick: choose, onkeydown: (ev) => { if (ev.key === "Enter") choose(); } },
    svg("rect", { class: "box", width: n.w, height: n.h, rx: 6 }),
    svg("text", { x: 10, y: 18, class: "node-title", text: fit(`${mark}${t.label}${t.mapped ? " [ ]" : ""}`, n.w - 30) }),
    svg("text", { x: 10, y: 35, class: "node-sub", text: fit(t.operator, n.w - 18) }),
    svg("circle", { class: "state-dot", cx: n.w - 11, cy: 12, r: 5 }),
    svg("title", { text: `${n.id} (${t.operator})${t.kind ? `, a ${t.kind} task` : ""}${t.mapped ? ", mapped" : ""}` }));
  }

  // "5 mapped: 3 success, 2 running"
  const summary = (m) => `${m.count} mapped: ` + Object.entries(m.states)
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([s, k]) => `${k} ${s}`).join(", ");

  // the node's state: its class, data-state and the dot in its top right corner
  function setState(node, state) {
    for (const c of [...node.classList]) if (c.startsWith("state-")) node.classList.remove(c);
    if (state) node.classList.add(stateClass(state));
    node.dataset.state = state || "";
    const dot = node.querySelector("circle.state-dot");
    dot.style.fill = state ? `var(--s-${state})` : "transparent";
    dot.style.stroke = state && state !== "none" ? "none" : "#9ca3af";
  }

  function setText(node, cls, text) {
    const box = node.querySelector(`text.${cls}`);
    const shown = fit(text, Number(node.querySelector("rect.box").getAttribute("width")) - 30);
    if (box.textContent !== shown) box.textContent = shown;
  }

  function paint(data) {
    for (const node of wrap.querySelectorAll("g.gnode.task")) {
      const t = data.tasks[node.dataset.taskId];
      const facts = graph.tasks[node.dataset.taskId];
      setState(node, t ? t.state : null);
      const mark = facts.kind === "setup" ? "↑ " : facts.kind === "teardown" ? "↓ " : "";
      const count = t?.mapped ? ` [${t.mapped.count}]` : facts.mapped ? " [ ]" : "";
      setText(node, "node-title", `${mark}${facts.label}${count}`);
      node.dataset.mapped = t?.mapped ? String(t.mapped.count) : "";
      node.querySelector("title").textContent = `${node.dataset.taskId} (${facts.operator})` +
        (facts.kind ? `, a ${facts.kind} task` : "") + (t ? `: ${t.mapped ? summary(t.mapped) : t.state}` : "");
    }
    for (const node of wrap.querySelectorAll("g.gnode.group.collapsed")) {
      const g = data.groups[node.dataset.groupId];
      setState(node, g ? g.state : null);
      const counts = g && Object.keys(g.states).length
        ? Object.entries(g.states).sort((a, b) => b[1] - a[1]).map(([s, k]) => `${k} ${s}`).join(", ") : "";
      node.querySelector("title").textContent = `${node.dataset.groupId} (task group: click to expand)` +
        (g?.state ? `: ${g.state}` : "") + (counts ? `\n${counts}` : "");
    }
  }

  function fillRuns(data) {
    const key = data.runs.map((r) => `${r.run_id}:${r.state}`).join("|");
    if (runSelect.dataset.key !== key) {
      runSelect.replaceChildren(...(data.runs.length ? data.runs.map((r) => el("option", {
        value: r.run_id, text: `${fmtDate(r.logical_date)} · ${r.state} · ${r.run_id}` }))
        : [el("option", { value: "", text: "no runs" })]));
      runSelect.dataset.key = key;
    }
    runSelect.value = data.run_id || "";
    runSelect.disabled = !data.runs.length;
  }

  async function loadGraph() {
    const query = [...expanded].map((g) => `expanded=${encodeURIComponent(g)}`).join("&");
    graph = await request("GET", `${dagUrl}/graph${query ? `?${query}` : ""}`);
    expanded = new Set(graph.expanded);
    draw(graph);
    document.getElementById("graph-expand").disabled = !Object.keys(graph.groups).length;
    document.getElementById("graph-collapse").disabled = !expanded.size;
  }

  async function refresh() {
    const data = await request("GET", `${dagUrl}/graph/states${runId ? `?run_id=${encodeURIComponent(runId)}` : ""}`);
    if (!graph || data.version !== graph.version) await loadGraph();
    states = data;
    fillRuns(data);
    paint(data);
    if (selectedTask) await showPanel(false);
  }

  // ------------------------------------------------------------------ the task panel
  function fact(name, value, cls) {
    return [el("dt", { text: name }), el("dd", { class: cls, text: value ?? "—" })];
  }

  async function showPanel(reset) {
    const task = selectedTask, run = states?.run_id;
    const facts = graph.tasks[task] || {};
    document.getElementById("gp-title").textContent = task;
    const gridUrl = `/dags/${encodeURIComponent(dagId)}/grid?task_id=${encodeURIComponent(task)}` +
      (run ? `&run_id=${encodeURIComponent(run)}` : "");
    document.getElementById("gp-grid").setAttribute("href", gridUrl);
    const base = [...fact("Operator", facts.operator),
      ...(facts.kind ? fact("Kind", `${facts.kind} task`, `st-text st-${facts.kind}`) : []),
      ...(facts.group ? fact("Group", facts.group) : [])];
    const box = document.getElementById("gp-facts");
    if (reset) box.replaceChildren(...base);
    if (!run) { box.replaceChildren(...base, ...fact("Run", "no runs yet")); return; }
    let t = null;
    try {
      t = await request("GET", `${dagUrl}/runs/${encodeURIComponent(run)}/tasks/${encodeURIComponent(task)}`);
    } catch (e) {
      if (e.status !== 404) throw e;
    }
    if (selectedTask !== task) return;
    if (!t) { box.replaceChildren(...base, ...fact("Run", run), ...fact("State", "no task instance in this run")); return; }
    box.replaceChildren(
      ...fact("State", t.state, `state-text ${stateClass(t.state)}`),
      ...(t.mapped ? fact("Mapped", summary({ count: t.count, states: t.mapped_states })) : []),
      ...(t.mapped ? [] : fact("Try", t.try_number ? `${t.try_number} of ${Math.max(t.max_tries + 1, t.try_number)}` : "not tried yet")),
      ...(t.mapped ? [] : fact("Started", fmtDate(t.start_date))),
      ...(t.mapped ? [] : fact("Duration", fmtDuration(t.duration))),
      ...base,
      ...fact("Run", `${t.run_id} (${t.run_state})`));
  }

  function showTask(task) {
    selectedTask = task;
    panel.hidden = false;
    for (const n of wrap.querySelectorAll("g.gnode.selected")) n.classList.remove("selected");
    wrap.querySelector(`g.gnode[data-task-id="${CSS.escape(task)}"]`)?.classList.add("selected");
    showPanel(true).catch((e) => flash(e.message, "error"));
  }

  document.getElementById("gp-close").addEventListener("click", () => {
    selectedTask = null; panel.hidden = true;
    for (const n of wrap.querySelectorAll("g.gnode.selected")) n.classList.remove("selected");
  });

  const live = poll(refresh, 2000);
  runSelect.addEventListener("change", () => {
    runId = runSelect.value || null;
    const url = new URL(window.location.href);
    if (runId) url.searchParams.set("run_id", runId); else url.searchParams.delete("run_id");
    window.history.replaceState(null, "", url);
    live.now();
  });
  document.getElementById("graph-expand").addEventListener("click", () => {
    expanded = new Set(Object.keys(graph?.groups || {}));
    saveAndLoad();
  });
  // the whole graph in the page's width (a big DAG), or its natural size
  const fitBox = document.getElementById("graph-fit");
  fitBox.checked = localStorage.getItem("squall.graph.fit") === "true";
  wrap.classList.toggle("fit", fitBox.checked);
  fitBox.addEventListener("change", () => {
    localStorage.setItem("squall.graph.fit", String(fitBox.checked));
    wrap.classList.toggle("fit", fitBox.checked);
  });
  document.getElementById("graph-collapse").addEventListener("click", () => {
    expanded = new Set();
    saveAndLoad();
  });
})();
