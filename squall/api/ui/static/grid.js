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
    return el("tr", { class: "runs" }, el("th", { class: "task-head", text: `${runs.length} run${runs.length === 1 ? "" : "s"}` }),
      ...runs.map((r) => el("th", { class: "run-head", title: runTitle(r), onclick: () => SquallRunPanel.open(r.run_id) },
        el("span", { class: `run-bar ${stateClass(r.state)}`, dataset: { runId: r.run_id } }),
        el("span", { class: "run-label", text: fmtDate(r.logical_date).slice(5, 16) }))));
  }

  // a run its backfill left unfinished says so, with the command that resumes it
  const runTitle = (r) => `${r.run_id}\n${r.run_type}, ${r.state}\nlogical date ${fmtDate(r.logical_date)}` +
    (r.note ? `\n${r.note}` : "");

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
    if (toggle && !toggle.disabled) toggle.checked = data.is_paused;
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
    const data = await request("GET", `${dagUrl}/grid`);
    const key = JSON.stringify([data.runs.map((r) => r.run_id), data.tasks, Object.keys(data.mapped || {}), data.setup_teardown]);
    const first = shape === null;
    if (key !== shape) { build(data); shape = key; }
    paint(data);
    if (first) performance.mark("squall-grid-shown");  // ms after navigation: how long it took
    showDag(data);
    showWaiting(data);
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

  // ---------------------------------------------------------------- actions (op and admin)
  const refresh = poll(refreshGrid, 2000);
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
      await request("POST", `${dagUrl}/pause`, { is_paused: toggle.checked });
      flash(`${dagId} ${toggle.checked ? "paused" : "unpaused"}`, "ok");
    } catch (e) { toggle.checked = !toggle.checked; flash(e.message, "error"); }
    finally { toggle.disabled = false; refresh.now(); }
  });
  const openTrigger = Squall.triggerDialog(() => refresh.now());
  document.getElementById("trigger-button").addEventListener("click", () => openTrigger(dagId));
})();
