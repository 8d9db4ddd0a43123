// The runs list (Airflow's Browse -> DAG Runs): runs of every DAG, newest first, a page at a
// time, filtered by DAG, state, run type and logical-date range. The filters live in the
// URL's query (a link shares them). Op and admin select rows and clear or mark them, each
// action confirmed with its preview (runactions.js). Polled every 5 s; a selection stays.
"use strict";

(() => {
  const { request, el, fmtDate, fmtDuration, poll, mayAct, stateClass } = Squall;
  const FILTERS = ["dag_id", "state", "run_type", "logical_date_gte", "logical_date_lte"];
  const query = new URLSearchParams(window.location.search);
  const rows = document.getElementById("runs-rows");
  const errorBox = document.getElementById("runs-error");
  const dagSelect = document.getElementById("f-dag_id");
  const acting = mayAct();
  const chosen = new Map();   // "dag_id\u0000run_id" -> {dag_id, run_id}
  const key = (r) => `${r.dag_id}\u0000${r.run_id}`;
  let shown = [], last = null;

  for (const name of FILTERS) {
    const field = document.getElementById(`f-${name}`);
    const value = query.get(name) || "";
    if (name === "dag_id" && value) dagSelect.append(el("option", { value, text: value }));
    field.value = value;
  }
  // the URL carries only the filters given (and no page: a new filter starts at page 1)
  document.getElementById("runs-filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const next = new URLSearchParams();
    for (const name of FILTERS) {
      const value = document.getElementById(`f-${name}`).value.trim();
      if (value) next.set(name, value);
    }
    if (query.get("limit")) next.set("limit", query.get("limit"));
    window.location.assign(`/dagruns${next.toString() ? `?${next}` : ""}`);
  });

  const gridLink = (r) => `/dags/${encodeURIComponent(r.dag_id)}/grid?run_id=${encodeURIComponent(r.run_id)}`;

  function row(r) {
    const box = acting ? el("td", {}, el("input", {
      type: "checkbox", class: "run-check", checked: chosen.has(key(r)),
      "aria-label": `select ${r.dag_id} ${r.run_id}`,
      onchange: (ev) => { if (ev.target.checked) chosen.set(key(r), { dag_id: r.dag_id, run_id: r.run_id }); else chosen.delete(key(r)); updateBulk(); },
    })) : null;
    return el("tr", { class: "run-row", dataset: { dagId: r.dag_id, runId: r.run_id, state: r.state, runType: r.run_type } },
      box,
      el("td", {}, el("span", { class: `badge ${stateClass(r.state)}`, text: r.state })),
      el("td", {}, el("a", { href: `/dags/${encodeURIComponent(r.dag_id)}/grid`, class: "dag-link", text: r.dag_id })),
      el("td", {}, el("a", { href: gridLink(r), class: "run-link" }, el("code", { text: r.run_id }))),
      el("td", { text: r.run_type }),
      el("td", { class: "nowrap", text: fmtDate(r.logical_date) }),
      el("td", { class: "nowrap small", text: fmtDate(r.start_date) }),
      el("td", { class: "nowrap small", text: fmtDate(r.end_date) }),
      el("td", { class: "num", text: fmtDuration(r.duration) }));
  }

  function pager(data) {
    const first = data.total ? (data.page - 1) * data.limit + 1 : 0;
    const lastOne = Math.min(data.total, data.page * data.limit);
    const pages = Math.max(1, Math.ceil(data.total / data.limit));
    const link = (page, text, id) => {
      const q = new URLSearchParams(query);
      q.set("page", page);
      return el("a", { href: `/dagruns?${q}`, id, text });
    };
    document.getElementById("runs-count").textContent = `${data.total} run${data.total === 1 ? "" : "s"}`;
    document.getElementById("runs-pager").replaceChildren(
      el("span", { id: "runs-range", text: `${first}–${lastOne} of ${data.total} · page ${data.page} of ${pages}` }),
      ...(data.page > 1 ? [link(data.page - 1, "← newer", "runs-prev")] : []),
      ...(data.page < pages ? [link(data.page + 1, "older →", "runs-next")] : []));
  }

  function updateBulk() {
    if (!acting) return;
    document.getElementById("runs-selected").textContent = `${chosen.size} selected`;
    for (const id of ["bulk-clear", "bulk-clear-failed", "bulk-mark-success", "bulk-mark-failed"]) {
      document.getElementById(id).disabled = chosen.size === 0;
    }
    const all = document.getElementById("runs-all");
    all.checked = shown.length > 0 && shown.every((r) => chosen.has(key(r)));
  }

  async function refresh() {
    const q = new URLSearchParams();
    for (const [name, value] of query) if (value) q.set(name, value);
    let data;
    try {
      data = await request("GET", `/ui/api/runs?${q}`);
    } catch (e) {
      if (e.status !== 400) throw e;
      errorBox.textContent = `Filter not applied: ${e.message}`;
      errorBox.hidden = false;
      rows.replaceChildren(el("tr", {}, el("td", { colspan: 9, class: "muted", text: "Fix the filter above." })));
      return;
    }
    errorBox.hidden = true;
    const known = new Set([...dagSelect.options].map((o) => o.value));
    for (const id of data.dag_ids) if (!known.has(id)) dagSelect.append(el("option", { value: id, text: id }));
    const text = JSON.stringify(data);
    if (text === last) return;
    last = text;
    shown = data.runs;
    rows.replaceChildren(...(shown.length ? shown.map(row)
      : [el("tr", {}, el("td", { colspan: 9, class: "muted", text: "No runs match these filters." }))]));
    pager(data);
    updateBulk();
  }

  const live = poll(refresh, 5000);
  if (!acting) return;
  document.getElementById("runs-all").addEventListener("change", (ev) => {
    for (const r of shown) {
      if (ev.target.checked) chosen.set(key(r), { dag_id: r.dag_id, run_id: r.run_id }); else chosen.delete(key(r));
    }
    for (const box of rows.querySelectorAll("input.run-check")) box.checked = ev.target.checked;
    updateBulk();
  });
  const bulk = (action) => () => SquallRunActions.confirm(action, [...chosen.values()], () => {
    chosen.clear(); last = null; live.now();
  });
  document.getElementById("bulk-clear").addEventListener("click", bulk("clear"));
  document.getElementById("bulk-clear-failed").addEventListener("click", bulk("clear_failed"));
  document.getElementById("bulk-mark-success").addEventListener("click", bulk("mark_success"));
  document.getElementById("bulk-mark-failed").addEventListener("click", bulk("mark_failed"));
})();
