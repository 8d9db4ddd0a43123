// The DAG list: the pause switch (on: active, as Airflow's), schedule, last runs, next run, import errors.
"use strict";

(() => {
  const { request, el, fmtDate, flash, poll, mayAct, stateClass } = Squall;
  const rows = document.getElementById("dag-rows");
  const filter = document.getElementById("dag-filter");
  let last = null, data = null;

  const openTrigger = Squall.triggerDialog(() => refresh.now());

  function importErrors(errors) {
    const banner = document.getElementById("import-errors");
    banner.hidden = errors.length === 0;
    if (!errors.length) return;
    document.getElementById("import-errors-title").textContent =
      `${errors.length} DAG file${errors.length > 1 ? "s" : ""} failed to load`;
    const list = document.getElementById("import-errors-list");
    list.replaceChildren(...errors.map((e) => el("div", { class: "import-error" },
      el("div", {}, el("code", { text: e.filename }), el("span", { class: "muted", text: `  ${fmtDate(e.timestamp)}` })),
      el("pre", { text: e.stacktrace }))));
  }

  async function setPaused(dagId, paused, input) {
    input.disabled = true;
    try {
      await request("POST", `/ui/api/dags/${encodeURIComponent(dagId)}/pause`, { is_paused: paused });
      flash(`${dagId} ${paused ? "paused" : "unpaused"}`, "ok");
    } catch (e) {
      input.checked = !input.checked;
      flash(`Could not ${paused ? "pause" : "unpause"} ${dagId}: ${e.message}`, "error");
    } finally { input.disabled = false; refresh.now(); }
  }

  function row(d) {
    const grid = `/dags/${encodeURIComponent(d.dag_id)}/grid`;
    let pausedCell;
    if (mayAct()) {
      const input = el("input", { type: "checkbox", class: "action pause-switch", title: "Pause/Unpause DAG", "aria-label": "Pause/Unpause DAG", dataset: { dagId: d.dag_id } });
      input.checked = !d.is_paused;
      input.addEventListener("change", () => setPaused(d.dag_id, !input.checked, input));
      pausedCell = el("label", { class: "switch" }, input);
    } else {
      pausedCell = el("span", { class: d.is_paused ? "badge" : "badge on", text: d.is_paused ? "paused" : "active" });
    }
    const dots = el("span", { class: "dots" }, ...d.recent_runs.map((r) => el("a", {
      class: `dot ${stateClass(r.state)}`, href: grid, title: `${r.run_id}: ${r.state}`,
    })));
    const tags = (d.tags || []).map((t) => el("span", { class: "tag", text: t }));
    return el("tr", { class: d.is_paused ? "paused" : "", dataset: { dagId: d.dag_id, search: `${d.dag_id} ${d.dag_display_name || ""} ${(d.tags || []).join(" ")}`.toLowerCase() } },
      el("td", { class: "narrow" }, pausedCell),
      el("td", {}, el("a", { class: "dag-link", href: grid, text: d.dag_display_name || d.dag_id, title: d.dag_id }), " ", ...tags,
        d.description ? el("div", { class: "muted small", text: d.description }) : null,
        el("div", { class: "dag-links small" },
          el("a", { class: "graph-link", href: `/dags/${encodeURIComponent(d.dag_id)}/graph`, text: "graph", title: "the DAG's graph" }), " · ",
          el("a", { class: "details-link", href: `/dags/${encodeURIComponent(d.dag_id)}/details`, text: "details" }), " · ",
          el("a", { class: "code-link", href: `/dags/${encodeURIComponent(d.dag_id)}/code`, text: "code" }))),
      el("td", {}, el("code", { text: d.schedule || "None" }),
        d.timetable_description ? el("div", { class: "muted small", text: d.timetable_description }) : null),
      el("td", {}, dots, d.recent_runs.length ? null : el("span", { class: "muted", text: "no runs" })),
      el("td", { text: fmtDate(d.next_dagrun) }),
      mayAct() ? el("td", { class: "narrow" }, el("button", { type: "button", class: "action small-button", text: "Trigger", onclick: () => openTrigger(d.dag_id) })) : null);
  }

  function applyFilter() {
    const q = filter.value.trim().toLowerCase();
    let shown = 0;
    for (const tr of rows.querySelectorAll("tr[data-dag-id]")) {
      tr.hidden = q !== "" && !tr.dataset.search.includes(q);
      if (!tr.hidden) shown += 1;
    }
    if (data) document.getElementById("dag-count").textContent = `${shown} of ${data.dags.length}`;
  }

  const refresh = poll(async () => {
    const text = JSON.stringify(data = await request("GET", "/ui/api/dags"));
    if (text === last) return;
    last = text;
    importErrors(data.import_errors);
    rows.replaceChildren(...(data.dags.length ? data.dags.map(row)
      : [el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No DAGs yet: put DAG files in the DAG folder and start the scheduler." }))]));
    applyFilter();
  }, 3000);
  filter.addEventListener("input", applyFilter);
  window.addEventListener("squall:timezone", () => { last = null; refresh.now(); });
})();
