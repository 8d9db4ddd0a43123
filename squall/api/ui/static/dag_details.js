// A DAG's Details and Code tabs, filled from /ui/api/dags/{id}/details and /code.
"use strict";

(() => {
  const { request, el, fmtDate } = Squall;
  const page = document.body.dataset.page;
  const dagId = document.body.dataset.dagId;
  const base = `/ui/api/dags/${encodeURIComponent(dagId)}`;
  const $ = (id) => document.getElementById(id);
  const show = (v) => (v === null || v === undefined || v === "" ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));

  function fail(box, e) { box.textContent = e.message; box.hidden = false; }

  async function details() {
    let d;
    try { d = await request("GET", `${base}/details`); }
    catch (e) { fail($("details-error"), e); $("dag-facts").tBodies[0].replaceChildren(); $("dag-params").tBodies[0].replaceChildren(); return; }
    const interval = d.next_dagrun_data_interval_start
      ? `${fmtDate(d.next_dagrun_data_interval_start)} → ${fmtDate(d.next_dagrun_data_interval_end)}` : "—";
    const facts = [
      ["Schedule", d.schedule ? `${d.schedule}` : "None", "schedule"],
      ["Schedule description", d.timetable_description, "timetable"],
      ["Dataset schedule", d.dataset_schedule, "datasets"],
      ["Next run (logical date)", d.next_dagrun ? fmtDate(d.next_dagrun) : null, "next-run"],
      ["Next data interval", interval, "next-interval"],
      ["Run after", d.next_dagrun_create_after ? fmtDate(d.next_dagrun_create_after) : null, "create-after"],
      ["Paused", d.is_paused ? "yes" : "no", "paused"],
      ["Owners", (d.owners || []).join(", "), "owners"],
      ["Tags", (d.tags || []).map((t) => t.name).join(", "), "tags"],
      ["Start date", d.start_date ? fmtDate(d.start_date) : null, "start-date"],
      ["End date", d.end_date ? fmtDate(d.end_date) : null, "end-date"],
      ["Catchup", d.catchup ? "yes" : "no", "catchup"],
      ["Max active runs", d.max_active_runs, "max-runs"],
      ["Max active tasks", d.max_active_tasks, "max-tasks"],
      ["Timezone", d.timezone, "timezone"],
      ["File", d.fileloc, "fileloc"],
      ["Last parsed", d.last_parsed ? fmtDate(d.last_parsed) : null, "last-parsed"],
    ];
    $("dag-facts").tBodies[0].replaceChildren(...facts.map(([name, value, key]) =>
      el("tr", { dataset: { fact: key } }, el("th", { text: name }), el("td", { text: show(value) }))));
    const params = d.param_list || [];
    $("dag-params").tBodies[0].replaceChildren(...(params.length ? params.map((p) =>
      el("tr", { dataset: { param: p.name } }, el("td", {}, el("code", { text: p.name })),
        el("td", {}, el("code", { text: show(p.default) })), el("td", { class: "muted", text: p.description || "" })))
      : [el("tr", {}, el("td", { colspan: 3, class: "muted", text: "This DAG has no params." }))]));
    // doc_md (or the description) as plain text: nothing from the DAG file becomes markup
    $("dag-doc").textContent = d.doc_md || d.description || "No description.";
  }

  async function code() {
    let c;
    try { c = await request("GET", `${base}/code`); }
    catch (e) { fail($("code-error"), e); return; }
    $("code-file").textContent = `${c.fileloc} · ${c.lines} lines`;
    const lines = c.source.replace(/\n$/, "").split("\n");
    $("dag-code").tBodies[0].replaceChildren(...lines.map((line, i) =>
      el("tr", { id: `L${i + 1}` }, el("td", { class: "ln", text: String(i + 1) }), el("td", { class: "src", text: line }))));
  }

  if (page === "details") details();
  else if (page === "code") code();
})();
