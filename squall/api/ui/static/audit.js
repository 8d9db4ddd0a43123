// The audit log page: /api/v1/eventLogs newest first, filtered by DAG, event, owner and
// dates (kept in the page's URL, so /audit?dag_id=x is a DAG's log), a page at a time.
"use strict";

(() => {
  const { request, el, fmtDate, poll } = Squall;
  const PAGE = 25;
  const form = document.getElementById("audit-filters");
  const body = document.getElementById("audit-rows");
  const info = document.getElementById("page-info");
  const prev = document.getElementById("page-prev");
  const next = document.getElementById("page-next");
  const FIELDS = ["dag_id", "event", "owner", "from", "to"];
  let offset = 0, last = null;

  function readUrl() {
    const params = new URLSearchParams(window.location.search);
    for (const name of FIELDS) form.elements[name].value = params.get(name) || "";
    offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  }

  function writeUrl() {
    const params = new URLSearchParams();
    for (const name of FIELDS) if (form.elements[name].value.trim()) params.set(name, form.elements[name].value.trim());
    if (offset) params.set("offset", offset);
    const query = params.toString();
    window.history.replaceState(null, "", query ? `?${query}` : window.location.pathname);
  }

  function query() {
    // a day of the browser's calendar: from its first instant to the next day's
    const params = new URLSearchParams({ order_by: "-when", limit: PAGE, offset });
    for (const name of ["dag_id", "event", "owner"]) {
      const value = form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    const from = form.elements.from.value, to = form.elements.to.value;
    if (from) params.set("after", new Date(new Date(`${from}T00:00:00`).getTime() - 1).toISOString());
    if (to) {
      const end = new Date(`${to}T00:00:00`);
      end.setDate(end.getDate() + 1);
      params.set("before", end.toISOString());
    }
    return `/api/v1/eventLogs?${params}`;
  }

  function extraCell(text) {
    let extra = {};
    try { extra = text ? JSON.parse(text) : {}; } catch (e) { return el("td", { class: "small", text }); }
    const shown = Object.entries(extra).filter(([k]) => k !== "source");
    return el("td", { class: "small" }, el("div", { class: "extra" },
      ...shown.map(([k, v]) => el("span", {}, el("b", { text: `${k}=` }),
        typeof v === "object" ? JSON.stringify(v) : String(v)))));
  }

  function row(e) {
    let source = null;
    try { source = e.extra ? JSON.parse(e.extra).source : null; } catch (err) { /* not JSON */ }
    const task = e.task_id ? `${e.task_id}${e.map_index !== null && e.map_index >= 0 ? ` [${e.map_index}]` : ""}` : "";
    return el("tr", { dataset: { eventLogId: e.event_log_id } },
      el("td", { class: "small nowrap", text: fmtDate(e.when), title: e.when }),
      el("td", {}, el("span", { class: `badge event ev-${e.event.replace(".", "-")}`, text: e.event })),
      el("td", {}, e.dag_id ? el("a", { href: `/dags/${encodeURIComponent(e.dag_id)}/grid`, text: e.dag_id }) : ""),
      el("td", {}, e.run_id ? el("code", { text: e.run_id }) : ""),
      el("td", {}, task ? el("code", { text: task }) : ""),
      el("td", { class: "owner" }, e.owner || "—", source ? " " : null, source ? el("span", { class: "source", text: source }) : null),
      extraCell(e.extra));
  }

  async function load() {
    const data = await request("GET", query());
    const text = JSON.stringify(data);
    if (text === last) return;
    last = text;
    const entries = data.event_logs;
    body.replaceChildren(...(entries.length ? entries.map(row)
      : [el("tr", {}, el("td", { colspan: 7, class: "muted", text: "No audit entries match." }))]));
    const total = data.total_entries;
    info.textContent = total ? `${offset + 1}–${offset + entries.length} of ${total}` : "0 entries";
    prev.disabled = offset === 0;
    next.disabled = offset + entries.length >= total;
  }

  readUrl();
  const poller = poll(load, 5000);
  const reload = () => { last = null; writeUrl(); poller.now(); };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); offset = 0; reload(); });
  form.elements.event.addEventListener("change", () => { offset = 0; reload(); });
  document.getElementById("f-reset").addEventListener("click", () => { form.reset(); offset = 0; reload(); });
  prev.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); reload(); });
  next.addEventListener("click", () => { offset += PAGE; reload(); });
})();
