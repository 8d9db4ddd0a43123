// The backfills page (with progress) and the pools page: read-only lists, polled.
"use strict";

(() => {
  const { request, el, fmtDate, poll, stateClass } = Squall;
  const page = document.body.dataset.page;

  function bar(parts, total) {
    // parts: [[cssClass, count, label], ...] as a stacked bar of `total`
    const box = el("div", { class: "bar" });
    for (const [cls, n, label] of parts) {
      if (!n || !total) continue;
      const seg = el("span", { class: `seg ${cls}`, title: `${label}: ${n}` });
      seg.style.width = `${Math.min(100, (100 * n) / total)}%`;
      box.append(seg);
    }
    return box;
  }

  const counts = (byState) => Object.entries(byState).sort()
    .map(([s, n]) => el("span", { class: "count" }, el("span", { class: `dot ${stateClass(s)}` }), ` ${s} ${n}`));

  function backfillRow(b) {
    const runs = b.runs_by_state;
    const created = Object.values(runs).reduce((a, n) => a + n, 0);
    const progress = el("div", { class: "progress" },
      bar([["state-success", runs.success, "success"], ["state-failed", runs.failed, "failed"],
        ["state-running", runs.running, "running"], ["state-queued", runs.queued, "queued"]], b.total_runs),
      el("span", { class: "small", text: `${b.finished_runs} of ${b.total_runs} runs finished (${created} created)` }));
    return el("tr", { dataset: { backfillId: b.id } },
      el("td", { text: `#${b.id}` }),
      el("td", {}, el("a", { href: `/dags/${encodeURIComponent(b.dag_id)}/grid`, text: b.dag_id })),
      el("td", { class: "small nowrap", text: `${fmtDate(b.from_date).slice(0, 10)} → ${fmtDate(b.to_date).slice(0, 10)}` }),
      el("td", {}, el("span", { class: `badge ${stateClass(b.state)}`, text: b.state })),
      el("td", {}, progress),
      el("td", { class: "small" }, ...counts(b.tis_by_state)),
      el("td", { class: "small nowrap", text: fmtDate(b.created_at) }),
      el("td", { class: "small reason" },
        el("div", { text: b.reason || (b.failed_runs.length ? `failed runs: ${b.failed_runs.join(", ")}` : "") }),
        ...(b.resume_command ? [el("div", { class: "run-note", text: `left ${b.unfinished_runs.length} run(s) unfinished; resume with:` }),
          el("code", { class: "small", text: b.resume_command })] : [])));
  }

  function poolRow(p) {
    const unlimited = p.slots < 0;
    return el("tr", { dataset: { pool: p.pool } },
      el("td", {}, el("code", { text: p.pool })),
      el("td", { class: "num", text: unlimited ? "unlimited" : p.slots }),
      el("td", { class: "num", text: p.running_slots }),
      el("td", { class: "num", text: p.queued_slots }),
      el("td", { class: "num", text: p.open_slots }),
      el("td", {}, unlimited ? el("span", { class: "muted small", text: "no limit" })
        : bar([["state-running", p.running_slots, "running"], ["state-queued", p.queued_slots, "queued"]], p.slots)),
      el("td", { class: "small", text: p.description }));
  }

  const views = {
    backfills: { url: "/ui/api/backfills", rows: "backfill-rows", key: "backfills", row: backfillRow, cols: 8, empty: "No backfills yet (squall dags backfill DAG_ID -s FROM -e TO)." },
    pools: { url: "/ui/api/pools", rows: "pool-rows", key: "pools", row: poolRow, cols: 7, empty: "No pools." },
  };
  const view = views[page];
  if (!view) return;
  const body = document.getElementById(view.rows);
  let last = null;
  const refresh = poll(async () => {
    const data = await request("GET", view.url);
    const text = JSON.stringify(data);
    if (text === last) return;
    last = text;
    const items = data[view.key];
    body.replaceChildren(...(items.length ? items.map(view.row)
      : [el("tr", {}, el("td", { colspan: view.cols, class: "muted", text: view.empty }))]));
  }, 3000);
  window.addEventListener("squall:timezone", () => { last = null; refresh.now(); });
})();
