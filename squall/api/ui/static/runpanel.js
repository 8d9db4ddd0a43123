// The grid's run panel: a run's header (its bar) opens it, with the run's facts (id, type,
// state, logical date, data interval, start, end, duration, conf) and, for op and admin,
// its actions (clear, clear only failed, mark success, mark failed; runactions.js confirms
// each with a preview). grid.js calls SquallRunPanel.open(runId) on a header click; the
// grid's URL with ?run_id=... (and no task_id) opens the panel of that run (the runs list
// links there).
"use strict";

const SquallRunPanel = (() => {
  const { request, el, fmtDate, fmtDuration, flash, stateClass, mayAct } = Squall;
  const dagId = document.body.dataset.dagId;
  const panel = document.getElementById("run-panel");
  let runId = null, timer = null;

  const runUrl = (r) => `/ui/api/dags/${encodeURIComponent(dagId)}/runs/${encodeURIComponent(r)}`;
  const fact = (name, value, cls) => [el("dt", { text: name }), el("dd", { class: cls, text: value ?? "—" })];

  function mark() {
    for (const h of document.querySelectorAll("th.run-selected")) h.classList.remove("run-selected");
    if (runId) document.querySelector(`.run-bar[data-run-id="${CSS.escape(runId)}"]`)?.closest("th")?.classList.add("run-selected");
  }

  function render(r) {
    document.getElementById("run-title").textContent = r.run_id;
    panel.dataset.state = r.state;
    let duration = r.duration;
    if (duration === null && r.start_date) duration = (Date.now() - new Date(r.start_date)) / 1000;
    const tis = Object.entries(r.task_states).sort().map(([s, n]) => `${n} ${s}`).join(", ");
    document.getElementById("run-facts").replaceChildren(
      ...fact("State", r.state, `state-text ${stateClass(r.state)}`),
      ...fact("Run type", r.run_type + (r.backfill_id ? ` (backfill #${r.backfill_id})` : "")),
      ...fact("Logical date", fmtDate(r.logical_date)),
      ...fact("Data interval", r.data_interval_start ? `${fmtDate(r.data_interval_start)} → ${fmtDate(r.data_interval_end)}` : null),
      ...fact("Queued", fmtDate(r.queued_at)),
      ...fact("Started", fmtDate(r.start_date)),
      ...fact("Ended", fmtDate(r.end_date)),
      ...fact("Duration", fmtDuration(duration)),
      ...fact("Externally triggered", r.external_trigger ? "yes" : "no"),
      ...fact("Task instances", tis || "none"),
      ...(r.note ? fact("Note", r.note, "run-note") : []));
    const conf = JSON.stringify(r.conf, null, 2);
    document.getElementById("run-conf").textContent = conf === "{}" ? "{} (none)" : conf;
    mark();
  }

  async function refresh() {
    clearTimeout(timer);
    const wanted = runId;
    if (!wanted) return;
    try {
      const r = await request("GET", runUrl(wanted));
      if (runId === wanted) render(r);
    } catch (e) {
      if (runId === wanted) flash(e.message, "error");
    }
    if (runId === wanted && document.visibilityState === "visible") timer = setTimeout(refresh, 2000);
  }

  function open(id) {
    const tiPanel = document.getElementById("ti-panel");
    if (tiPanel && !tiPanel.hidden) document.getElementById("ti-close")?.click();
    runId = id;
    panel.hidden = false;
    document.getElementById("run-title").textContent = id;
    document.getElementById("run-facts").replaceChildren(el("dd", { class: "muted", text: "Loading…" }));
    refresh();
  }

  function close() {
    runId = null;
    clearTimeout(timer);
    panel.hidden = true;
    mark();
  }

  document.getElementById("run-close").addEventListener("click", close);
  // a task instance's cell opens its own panel: this one gives way
  document.getElementById("grid").addEventListener("click", (ev) => { if (ev.target.closest("td.cell")) close(); });
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") refresh(); });

  if (mayAct()) {
    const act = (action) => () => {
      if (runId) SquallRunActions.confirm(action, [{ dag_id: dagId, run_id: runId }], () => refresh());
    };
    document.getElementById("run-clear").addEventListener("click", act("clear"));
    document.getElementById("run-clear-failed").addEventListener("click", act("clear_failed"));
    document.getElementById("run-mark-success").addEventListener("click", act("mark_success"));
    document.getElementById("run-mark-failed").addEventListener("click", act("mark_failed"));
  }

  // ?run_id=R alone (with task_id too, grid.js opens that task instance's panel instead)
  const query = new URLSearchParams(window.location.search);
  if (query.get("run_id") && !query.get("task_id")) open(query.get("run_id"));
  return { open, close };
})();
