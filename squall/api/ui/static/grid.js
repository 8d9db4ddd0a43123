// A DAG's grid: runs (columns, newest right) x tasks (rows), coloured by state, polled every
// 2 s while the page is visible; a cell opens the task instance panel with its log. A mapped
// task is one row: its cell shows how many instances it has, is coloured by the state that
// matters most among them (as Airflow's grid), and its panel lists the instances, each of
// which opens with its own log.
"use strict";

(() => {
  const { request, el, fmtDate, fmtDuration, flash, poll, mayAct, stateClass, STATES } = Squall;
  const dagId = document.body.dataset.dagId;
  const dagUrl = `/ui/api/dags/${encodeURIComponent(dagId)}`;
  const table = document.getElementById("grid");
  const panel = document.getElementById("ti-panel");
  const logBox = document.getElementById("ti-log");
  const trySelect = document.getElementById("ti-try");
  let shape = null;           // run ids + task ids the table was built for
  let selected = null;        // {task_id, run_id, map_index: null (the task) or N (an instance)}
  let shownTry = null, ti = null, logRunning = false;
  let kinds = {};             // task id -> "setup" | "teardown"

  document.getElementById("legend").replaceChildren(...STATES.map((s) =>
    el("span", { class: "legend-item" }, el("span", { class: `dot ${stateClass(s)}` }), s)));

  const tiUrl = (t, r) => `${dagUrl}/runs/${encodeURIComponent(r)}/tasks/${encodeURIComponent(t)}`;

  function header(runs) {
    return el("tr", { class: "runs" }, el("th", { class: "task-head" },
      el("span", { class: "duration-axis", id: "duration-axis" }),
      el("span", { text: `${runs.length} run${runs.length === 1 ? "" : "s"}` })),
      ...runs.map((r) => el("th", { class: "run-head", title: runTitle(r), onclick: () => SquallRunPanel.open(r.run_id) },
        el("span", { class: `run-bar ${stateClass(r.state)}`, dataset: { runId: r.run_id, runType: r.run_type } },
          SquallCharts.runTypeIcon(r.run_type)),
        el("span", { class: "run-label", text: fmtDate(r.logical_date).slice(5, 16) }))));
  }

  // a run its backfill left unfinished says so, with the command that resumes it
  const runTitle = (r) => `${r.run_id}\n${SquallCharts.runTypeLabel(r.run_type)} run, ${r.state}\n` +
    `logical date ${fmtDate(r.logical_date)}\nstarted ${fmtDate(r.start_date)}\nended ${fmtDate(r.end_date)}\n` +
    `duration ${fmtDuration(runSeconds(r))}` + (r.note ? `\n${r.note}` : "");

  // "5 mapped: 3 success, 2 running"
  const mappedSummary = (m) => `${m.count} mapped: ` +
    Object.entries(m.states).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .map(([s, n]) => `${n} ${s}`).join(", ");

  function build(data) {
    const body = el("tbody");
    body.append(header(data.runs));
    kinds = data.setup_teardown || {};
    for (const task of data.tasks) {
      const isMapped = Boolean(data.mapped?.[task]);
      const kind = kinds[task];
      const title = `${task}${kind ? ` (${kind} task)` : ""}${isMapped ? " (mapped)" : ""}`;
      const name = el("th", { class: "task", title },
        ...(kind ? [el("span", { class: `st-marker st-${kind}`, text: kind === "setup" ? "↑ setup" : "↓ teardown" })] : []),
        task, ...(isMapped ? [el("span", { class: "mapped-mark", text: " [ ]" })] : []));
      body.append(el("tr", {}, name,
        ...data.runs.map((r) => el("td", {
          class: "cell", tabindex: 0, dataset: { taskId: task, runId: r.run_id },
          onclick: () => select(task, r.run_id),
          onkeydown: (ev) => { if (ev.key === "Enter") select(task, r.run_id); },
        }))));
    }
    if (!data.runs.length) body.append(el("tr", {}, el("td", { class: "muted", text: "No runs yet." })));
    table.replaceChildren(body);
  }

  function paint(data) {
    paintRunBars(data);
    data.runs.forEach((r, i) => {
      const bar = table.querySelectorAll(".run-bar")[i];
      if (bar) {
        bar.className = `run-bar ${stateClass(r.state)}${r.note ? " orphaned" : ""}`;
        bar.parentElement.title = runTitle(r);
      }
    });
    for (const cell of table.querySelectorAll("td.cell")) {
      const i = data.runs.findIndex((r) => r.run_id === cell.dataset.runId);
      const state = data.states[cell.dataset.taskId]?.[i] ?? null;
      const m = data.mapped?.[cell.dataset.taskId]?.[i] ?? null;
      const cls = `cell ${state === null ? "state-absent" : stateClass(state)}${m ? " mapped" : ""}` +
        (selected && selected.task_id === cell.dataset.taskId && selected.run_id === cell.dataset.runId ? " selected" : "");
      if (cell.className !== cls) cell.className = cls;
      cell.dataset.state = state ?? "";
      const count = m ? String(m.count) : "";
      if (cell.textContent !== count) cell.textContent = count;
      if (m) cell.dataset.mapped = mappedSummary(m); else delete cell.dataset.mapped;
      cell.title = `${cell.dataset.taskId} · ${cell.dataset.runId}: ` +
        (m ? mappedSummary(m) : state ?? "no task instance");
    }
  }

  function showDag(data) {
    document.getElementById("dag-paused").hidden = !data.is_paused;
    document.getElementById("dag-schedule").textContent =
      `schedule ${data.schedule || "None"} · next run ${fmtDate(data.next_dagrun)}`;
    const toggle = document.getElementById("pause-toggle");
    if (toggle && !toggle.disabled) toggle.checked = !data.is_paused;  // on: active (Airflow's)
  }

  // a consumer DAG: its schedule's dataset condition, each dataset queued (an event no run
  // has taken yet) or still awaited; a part of the condition that holds now is marked
  let waitShown = null;
  const datasetLink = (uri) => el("a", { href: `/datasets#${encodeURIComponent(uri)}`, class: "wait-uri" }, el("code", { text: uri }));
  function waitNode(n) {
    if (n.kind === "dataset") {
      return el("li", { class: `wait-leaf${n.queued ? " queued" : ""}`, dataset: { uri: n.uri, queued: String(n.queued) } },
        datasetLink(n.uri),
        el("span", { class: "wait-state", text: n.queued ? `queued ${fmtDate(n.queued_at)}` : "waiting" }));
    }
    if (n.kind === "alias") {
      return el("li", { class: `wait-node${n.satisfied ? " satisfied" : ""}`, dataset: { alias: n.name } },
        el("span", { class: "wait-kind", text: `alias ${n.name}` }),
        n.datasets.length ? el("ul", {}, ...n.datasets.map(waitNode))
          : el("span", { class: "muted", text: " (no event has resolved it to a dataset yet)" }));
    }
    if (n.kind === "all" || n.kind === "any") {
      return el("li", { class: `wait-node${n.satisfied ? " satisfied" : ""}`, dataset: { kind: n.kind } },
        el("span", { class: "wait-kind", text: n.kind === "all" ? "all of" : "any of" }),
        el("ul", {}, ...n.children.map(waitNode)));
    }
    return el("li", { class: "muted", text: n.text });
  }
  function showWaiting(data) {
    const box = document.getElementById("waiting-for");
    const text = JSON.stringify(data.waiting_for ?? null);
    if (text === waitShown) return;
    waitShown = text;
    box.hidden = !data.waiting_for;
    if (!data.waiting_for) return;
    box.dataset.satisfied = String(data.waiting_for.satisfied);
    box.replaceChildren(
      el("strong", { text: "Waits for datasets " }),
      el("span", { class: "muted", id: "waiting-summary", text: data.waiting_for.satisfied
        ? "(the condition holds: a run is due)" : "(a run starts when the condition holds)" }),
      el("ul", {}, waitNode(data.waiting_for)));
  }

  async function refreshGrid() {
    let data;
    try { data = await request("GET", `${dagUrl}/grid`); }
    catch (e) { if (e.status === 404) { showMissing(e.message); return; } throw e; }
    showMissing(null);
    lastGrid = data;
    const key = JSON.stringify([data.runs.map((r) => r.run_id), data.tasks, Object.keys(data.mapped || {}), data.setup_teardown]);
    const first = shape === null;
    if (key !== shape) { build(data); shape = key; }
    paint(data);
    if (first) performance.mark("squall-grid-shown");  // ms after navigation: how long it took
    showDag(data);
    showWaiting(data);
    if (view === "gantt") await refreshGantt(data);
    if (selected) await refreshPanel(false);
  }

  // ---------------------------------------------------------------- the panel
  function fact(name, value, cls) {
    return [el("dt", { text: name }), el("dd", { class: cls, text: value ?? "—" })];
  }

  function renderFacts(t) {
    let duration = t.duration;
    if (duration === null && t.start_date && !t.end_date) duration = (Date.now() - new Date(t.start_date)) / 1000;
    if (t.mapped && t.map_index === null) {
      document.getElementById("ti-facts").replaceChildren(
        ...fact("State", t.state, `state-text ${stateClass(t.state)}`),
        ...fact("Mapped", mappedSummary({ count: t.count, states: t.mapped_states })),
        ...fact("Operator", t.operator),
        ...fact("Run", `${t.run_id} (${t.run_state})`),
        ...fact("Run type", SquallCharts.runTypeLabel(t.run_type), "run-type-text"),
        ...(t.run_note ? fact("Run note", t.run_note, "run-note") : []));
      return;
    }
    document.getElementById("ti-facts").replaceChildren(
      ...fact("State", t.state, `state-text ${stateClass(t.state)}`),
      ...(t.mapped ? fact("Map index", `${t.map_index} (of ${t.count})`) : []),
      ...fact("Try", t.try_number ? `${t.try_number} of ${Math.max(t.max_tries + 1, t.try_number)}` : "not tried yet"),
      ...fact("Reason", t.state_reason),
      ...fact("Host", t.hostname),
      ...fact("Started", fmtDate(t.start_date)),
      ...fact("Ended", fmtDate(t.end_date)),
      ...fact("Duration", fmtDuration(duration)),
      ...fact("Operator", t.operator),
      ...(kinds[t.task_id] ? fact("Kind", `${kinds[t.task_id]} task`, `st-text st-${kinds[t.task_id]}`) : []),
      ...fact("Pool / queue", `${t.pool} / ${t.queue}`),
      ...fact("Run", `${t.run_id} (${t.run_state})`),
      ...fact("Run type", SquallCharts.runTypeLabel(t.run_type), "run-type-text"),
      ...(t.run_note ? fact("Run note", t.run_note, "run-note") : []));
  }

  function tries(t) {
    const n = t.try_number;
    const current = [...trySelect.options].map((o) => o.value).join(",");
    const wanted = Array.from({ length: n }, (_, i) => String(i + 1)).join(",");
    if (current !== wanted) {
      trySelect.replaceChildren(...Array.from({ length: n }, (_, i) => el("option", { value: i + 1, text: `try ${i + 1}` })));
    }
    if (shownTry === null || shownTry > n) shownTry = n || null;
    if (shownTry) trySelect.value = String(shownTry);
    trySelect.hidden = n === 0;
  }

  // the log of try n: {text, token, append} from the API (a continuation token follows a
  // running try: only what was added is fetched), else this host's log folder; null if neither
  async function fetchLog(t, n, token) {
    const source = document.getElementById("log-source");
    const mi = t.mapped ? `map_index=${t.map_index}` : "";
    const base = `/api/v1/dags/${encodeURIComponent(t.dag_id)}/dagRuns/${encodeURIComponent(t.run_id)}/taskInstances/${encodeURIComponent(t.task_id)}/logs/${n}?${mi}`;
    let why = "";
    try {
      const r = await fetch(token ? `${base}&token=${encodeURIComponent(token)}` : `${base}&full_content=true`,
        { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (r.ok) {
        const body = await r.json();
        source.textContent = "from the API";
        return { text: body.content ?? "", token: body.continuation_token || null, append: Boolean(token) };
      }
      if (r.status !== 404) { try { why = (await r.json()).detail || ""; } catch (e) { why = r.statusText; } }
    } catch (e) { /* fall back to this host's log folder */ }
    try {
      const text = await request("GET", `${tiUrl(t.task_id, t.run_id)}/log/${n}?${mi}`, undefined, "text/plain");
      source.textContent = "from this host's log folder";
      return { text, token: null, append: false };
    } catch (e) {
      source.textContent = why;
      return null;
    }
  }

  let logToken = null;
  async function showLog(t, force) {
    if (!t.try_number) { logBox.textContent = "Not run yet: no log."; logBox.classList.remove("unavailable"); return; }
    const running = t.state === "running" && shownTry === t.try_number;
    if (!force && !running && !logRunning) return;
    logRunning = running;
    const atBottom = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 4;
    const log = await fetchLog(t, shownTry, force ? null : logToken);
    if (!selected || selected.task_id !== t.task_id || selected.run_id !== t.run_id ||
        (t.mapped && selected.map_index !== t.map_index)) return;
    logToken = log ? log.token : null;
    logBox.classList.toggle("unavailable", log === null);
    if (log === null) logBox.textContent = "Log not available.";
    else if (log.append) logBox.append(log.text);
    else logBox.textContent = log.text || "(the log is empty)";
    if (running && (atBottom || force)) logBox.scrollTop = logBox.scrollHeight;
  }

  // a mapped task's instances: map index, state, try, duration; each opens its own log
  function renderInstances(t) {
    const box = document.getElementById("ti-instances");
    const listing = t.mapped && t.map_index === null;
    box.hidden = !listing;
    document.getElementById("ti-back").hidden = !(t.mapped && t.map_index !== null);
    document.getElementById("ti-log-section").hidden = listing;
    if (!listing) return;
    const open = (n) => { selected = { ...selected, map_index: n }; shownTry = null; ti = null; logToken = null;
      logBox.textContent = "Loading…"; refreshPanel(true).catch((e) => flash(e.message, "error")); };
    box.replaceChildren(el("table", { class: "instances" },
      el("thead", {}, el("tr", {}, ...["map index", "state", "try", "duration"].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...t.instances.map((i) => el("tr", {
        class: "instance", tabindex: 0, dataset: { mapIndex: i.map_index, state: i.state },
        onclick: () => open(i.map_index), onkeydown: (ev) => { if (ev.key === "Enter") open(i.map_index); },
      }, el("td", { text: String(i.map_index) }),
      el("td", {}, el("span", { class: `state-text ${stateClass(i.state)}`, text: i.state })),
      el("td", { text: String(i.try_number) }),
      el("td", { text: fmtDuration(i.duration) }))))));
  }

  async function refreshPanel(force) {
    const sel = selected;
    const query = sel.map_index === null ? "" : `?map_index=${sel.map_index}`;
    const t = await request("GET", tiUrl(sel.task_id, sel.run_id) + query);
    if (selected !== sel) return;
    const changed = !ti || ti.try_number !== t.try_number || ti.state !== t.state;
    ti = t;
    document.getElementById("ti-title").textContent =
      t.mapped ? (t.map_index === null ? `${t.task_id} [${t.count}]` : `${t.task_id} [${t.map_index}]`) : `${t.task_id}`;
    renderFacts(t);
    if (force || changed) refreshDurations(sel).catch((e) => console.warn(e));
    renderInstances(t);
    if (t.mapped && t.map_index === null) return;
    tries(t);
    await showLog(t, force || changed);
  }

  document.getElementById("ti-back").addEventListener("click", () => {
    if (!selected) return;
    selected = { ...selected, map_index: null }; ti = null;
    refreshPanel(true).catch((e) => flash(e.message, "error"));
  });

  function select(task, run) {
    selected = { task_id: task, run_id: run, map_index: null };
    shownTry = null; ti = null; logRunning = false; logToken = null;
    panel.hidden = false;
    logBox.textContent = "Loading…";
    for (const c of table.querySelectorAll("td.cell.selected")) c.classList.remove("selected");
    table.querySelector(`td.cell[data-task-id="${CSS.escape(task)}"][data-run-id="${CSS.escape(run)}"]`)?.classList.add("selected");
    refreshPanel(true).catch((e) => flash(e.message, "error"));
  }

  document.getElementById("ti-close").addEventListener("click", () => {
    selected = null; panel.hidden = true;
    for (const c of table.querySelectorAll("td.cell.selected")) c.classList.remove("selected");
  });
  trySelect.addEventListener("change", () => { shownTry = Number(trySelect.value); if (ti) showLog(ti, true); });

  // ---------------------------------------------------------------- durations and time
  // A run's bar in the header is as tall as its duration relative to the longest shown (as
  // Airflow's grid); the Gantt tab draws one run's task instances; the panel charts the
  // selected task's duration over the last runs (charts.js).
  const BAR_MAX = 64, BAR_MIN = 12;
  let lastGrid = null, view = "grid", ganttRun = null, ganttShown = null;

  // a run's seconds from start to end (to now while it runs); null before it starts
  const runSeconds = (r) => SquallCharts.seconds(r.start_date, r.end_date);

  function paintRunBars(data) {
    const secs = data.runs.map(runSeconds);
    const max = Math.max(0, ...secs.filter((s) => s !== null));
    const bars = table.querySelectorAll(".run-bar");
    data.runs.forEach((r, i) => {
      const bar = bars[i];
      if (!bar) return;
      const s = secs[i];
      const h = s === null || max === 0 ? BAR_MIN : Math.max(BAR_MIN, Math.round((s / max) * BAR_MAX));
      if (bar.style.height !== `${h}px`) bar.style.height = `${h}px`;
      bar.dataset.seconds = s === null ? "" : String(s);
    });
    const axis = document.getElementById("duration-axis");
    if (axis) axis.textContent = max ? `longest ${fmtDuration(max)}` : "";
  }

  // an unknown DAG (or one deleted since): say so instead of "Loading…" for ever
  function showMissing(message) {
    const box = document.getElementById("grid-missing");
    const missing = message !== null;
    if (!missing && box.hidden) return;  // the usual case
    box.hidden = !missing;
    box.textContent = missing ? `DAG ${dagId} not found: ${message}. It may have been deleted, or its file not parsed yet.` : "";
    for (const id of ["legend", "view-tabs", "dag-schedule"]) {
      const node = document.getElementById(id);
      if (node) node.hidden = missing;
    }
    for (const node of document.querySelectorAll("#pause-toggle, #trigger-button")) {
      (node.closest("label") || node).hidden = missing;
    }
    if (missing) {
      shape = null;
      table.replaceChildren(el("tbody", {}, el("tr", {}, el("td", { class: "muted", id: "grid-not-found", text: `DAG ${dagId} not found.` }))));
    }
  }

  // the tabs: the grid, or the Gantt chart of one run (picked in its list; at first the
  // selected task instance's run, else the newest)
  function showView(name) {
    view = name;
    for (const tab of document.querySelectorAll("#view-tabs .tab")) {
      tab.classList.toggle("active", tab.dataset.view === name);
      tab.setAttribute("aria-selected", String(tab.dataset.view === name));
    }
    document.querySelector(".grid-wrap").hidden = name !== "grid";
    document.getElementById("gantt-view").hidden = name !== "gantt";
    document.getElementById("legend").hidden = false;
    if (name === "gantt") {
      if (selected) ganttRun = selected.run_id;
      ganttShown = null;
      if (lastGrid) refreshGantt(lastGrid).catch((e) => flash(e.message, "error"));
    }
  }
  for (const tab of document.querySelectorAll("#view-tabs .tab")) tab.addEventListener("click", () => showView(tab.dataset.view));

  const ganttSelect = document.getElementById("gantt-run");
  ganttSelect.addEventListener("change", () => {
    ganttRun = ganttSelect.value; ganttShown = null;
    if (lastGrid) refreshGantt(lastGrid).catch((e) => flash(e.message, "error"));
  });

  async function refreshGantt(data) {
    const runs = [...data.runs].reverse();  // newest first
    if (!runs.some((r) => r.run_id === ganttRun)) ganttRun = runs.length ? runs[0].run_id : null;
    const options = runs.map((r) => `${r.run_id}|${r.run_type}`).join(",");
    if (ganttSelect.dataset.options !== options) {
      ganttSelect.replaceChildren(...runs.map((r) => el("option", { value: r.run_id,
        text: `${fmtDate(r.logical_date)} · ${SquallCharts.runTypeLabel(r.run_type)} · ${r.state}` })));
      ganttSelect.dataset.options = options;
    }
    const svg = document.getElementById("gantt");
    if (!ganttRun) { svg.replaceChildren(); document.getElementById("gantt-summary").textContent = "No runs yet."; return; }
    ganttSelect.value = ganttRun;
    const run = ganttRun;
    const g = await request("GET", `${dagUrl}/runs/${encodeURIComponent(run)}/gantt`);
    if (run !== ganttRun || view !== "gantt") return;
    const text = JSON.stringify(g) + SquallTime();
    const running = g.task_instances.some((t) => t.start_date && !t.end_date);
    if (text === ganttShown && !running) return;
    ganttShown = text;
    ganttData = g;
    drawGantt();
    document.getElementById("gantt-summary").textContent =
      `${SquallCharts.runTypeLabel(g.run_type)} run, ${g.state} · started ${fmtDate(g.start_date)} · ` +
      `ended ${fmtDate(g.end_date)} · ${fmtDuration(SquallCharts.seconds(g.start_date, g.end_date))}`;
  }
  const SquallTime = () => Squall.timeZone();
  let ganttData = null;
  function drawGantt() {
    const box = document.getElementById("gantt-view");
    if (!ganttData || box.hidden) return;
    const svg = document.getElementById("gantt"), run = ganttData.run_id;
    SquallCharts.gantt(svg, ganttData, Math.max(480, box.clientWidth - 24), (task) => select(task, run));
    svg.dataset.runId = run;
  }
  // the charts fit their boxes again when the panel opens, closes or is resized
  if (window.ResizeObserver) {
    const widths = new Map();
    const observer = new ResizeObserver((entries) => {
      for (const entry of entries) {
        const w = Math.round(entry.contentRect.width);
        if (widths.get(entry.target) === w || w === 0) continue;
        widths.set(entry.target, w);
        if (entry.target.id === "gantt-view") drawGantt(); else drawDurations();
      }
    });
    observer.observe(document.getElementById("gantt-view"));
    observer.observe(document.getElementById("ti-durations"));
  }

  // the selected task's duration in the last runs (the panel's chart)
  async function refreshDurations(sel) {
    const box = document.getElementById("ti-durations");
    const d = await request("GET", `${dagUrl}/tasks/${encodeURIComponent(sel.task_id)}/durations`);
    if (selected !== sel && (!selected || selected.task_id !== sel.task_id)) return;
    box.dataset.taskId = sel.task_id;
    box.lastData = d;
    drawDurations();
  }
  function drawDurations() {
    const box = document.getElementById("ti-durations");
    if (!box.lastData || !selected) return;
    const width = Math.max(240, box.clientWidth || panel.clientWidth - 30);
    SquallCharts.taskDurations(document.getElementById("ti-duration-chart"), box.lastData, width,
      selected.run_id, (run) => select(selected.task_id, run));
  }

  // the header's time zone switch: draw every time again in the new zone
  window.addEventListener("squall:timezone", () => {
    shape = null; ganttShown = null;
    if (lastGrid) {
      build(lastGrid); shape = JSON.stringify([lastGrid.runs.map((r) => r.run_id), lastGrid.tasks, Object.keys(lastGrid.mapped || {}), lastGrid.setup_teardown]);
      paint(lastGrid); showDag(lastGrid); waitShown = null; showWaiting(lastGrid);
      if (view === "gantt") refreshGantt(lastGrid).catch((e) => console.warn(e));
    }
    if (ti) renderFacts(ti);
    drawDurations();
  });

  // ---------------------------------------------------------------- the log panel
  // wide by default (a share of the page, dragged wider or narrower by its left edge, or
  // the whole width), log lines unwrapped with a horizontal scroll unless "wrap lines"
  const layout = document.querySelector(".grid-layout");
  const remembered = (key, fallback) => { try { return localStorage.getItem(key) ?? fallback; } catch (e) { return fallback; } };
  const remember = (key, value) => { try { localStorage.setItem(key, value); } catch (e) { /* not kept */ } };
  const wrapBox = document.getElementById("log-wrap");
  wrapBox.checked = remembered("squall.logWrap", "false") === "true";
  logBox.classList.toggle("wrap", wrapBox.checked);
  wrapBox.addEventListener("change", () => { logBox.classList.toggle("wrap", wrapBox.checked); remember("squall.logWrap", String(wrapBox.checked)); });
  const savedWidth = Number(remembered("squall.panelWidth", "0"));
  if (savedWidth >= 320) panel.style.setProperty("--panel-width", `${savedWidth}px`);
  const wideButton = document.getElementById("panel-wide");
  wideButton.addEventListener("click", () => {
    const full = layout.classList.toggle("panel-full");
    wideButton.textContent = full ? "⇔ show the grid" : "⇔ full width";
    drawDurations();
  });
  document.getElementById("ti-close").addEventListener("click", () => {
    layout.classList.remove("panel-full"); wideButton.textContent = "⇔ full width";
  });
  document.getElementById("panel-resizer").addEventListener("pointerdown", (ev) => {
    ev.preventDefault();
    const right = panel.getBoundingClientRect().right;
    const move = (e) => {
      const w = Math.min(Math.max(320, right - e.clientX), layout.clientWidth - 120);
      panel.style.setProperty("--panel-width", `${w}px`);
    };
    const up = () => {
      window.removeEventListener("pointermove", move); window.removeEventListener("pointerup", up);
      remember("squall.panelWidth", String(Math.round(panel.getBoundingClientRect().width)));
      drawDurations();
    };
    window.addEventListener("pointermove", move); window.addEventListener("pointerup", up);
  });

  // ---------------------------------------------------------------- actions (op and admin)
  const refresh = poll(refreshGrid, 2000);
  // ?task_id=T&run_id=R (the graph page's links): open that task instance's panel
  const asked = new URLSearchParams(window.location.search);
  if (asked.get("task_id") && asked.get("run_id")) select(asked.get("task_id"), asked.get("run_id"));
  if (!mayAct()) return;

  const option = (id) => document.getElementById(id).checked;
  async function act(verb, body, done) {
    if (!selected) return;
    const sel = selected;
    for (const b of panel.querySelectorAll("button.action")) b.disabled = true;
    try {
      const result = await request("POST", `${tiUrl(sel.task_id, sel.run_id)}/${verb}`,
        { ...body, map_index: sel.map_index });
      flash(done(result), "ok");
    } catch (e) {
      flash(`${sel.task_id}: ${e.message}`, "error");
    } finally {
      for (const b of panel.querySelectorAll("button.action")) b.disabled = false;
      refresh.now();
    }
  }
  document.getElementById("ti-clear").addEventListener("click", () =>
    act("clear", { upstream: option("opt-upstream"), downstream: option("opt-downstream"),
      recursive: option("opt-recursive") },
      (r) => `Cleared ${r.cleared.length} task instance(s)` + (r.changed_meanwhile.length ? `; ${r.changed_meanwhile.length} changed meanwhile, left alone` : "")));
  for (const state of ["success", "failed"]) {
    document.getElementById(`ti-mark-${state}`).addEventListener("click", () =>
      act("mark", { state, upstream: option("opt-upstream"), downstream: option("opt-downstream") },
        (r) => `Marked ${r.changed.length} task instance(s) ${state}` + (r.already ? ` (${r.already} already were)` : "")));
  }

  const toggle = document.getElementById("pause-toggle");
  toggle.addEventListener("change", async () => {
    toggle.disabled = true;
    try {
      await request("POST", `${dagUrl}/pause`, { is_paused: !toggle.checked });
      flash(`${dagId} ${toggle.checked ? "unpaused" : "paused"}`, "ok");
    } catch (e) { toggle.checked = !toggle.checked; flash(e.message, "error"); }
    finally { toggle.disabled = false; refresh.now(); }
  });
  const openTrigger = Squall.triggerDialog(() => refresh.now());
  document.getElementById("trigger-button").addEventListener("click", () => openTrigger(dagId));
})();
