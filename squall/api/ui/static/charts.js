// The grid page's timing charts, plain SVG (no library): a run's Gantt chart, a task's
// durations over the last runs, and the small icons that mark a run's type (as Airflow
// 2.10's grid: none for a scheduled run). Times go through Squall.fmtDate (the header's zone).
"use strict";

const SquallCharts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const { fmtDate, fmtDuration } = Squall;

  function svgEl(tag, attrs = {}, ...children) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c) node.append(c);
    return node;
  }
  const tip = (text) => svgEl("title", { text });

  // the state's colour, from the stylesheet's --s-STATE
  const colours = {};
  function colour(state) {
    const s = state || "none";
    if (!(s in colours)) {
      colours[s] = getComputedStyle(document.documentElement).getPropertyValue(`--s-${s}`).trim() || "#cbd5e1";
    }
    return colours[s];
  }

  const RUN_TYPES = {
    scheduled: "Scheduled", manual: "Manual", backfill: "Backfill", dataset_triggered: "Dataset triggered",
  };
  const runTypeLabel = (t) => RUN_TYPES[t] || t || "unknown";
  // 10x10 glyphs: a play arrow (manual), an arrow going back (backfill), a database (dataset)
  const ICONS = {
    manual: ["M3 1.5 L9 5 L3 8.5 Z"],
    backfill: ["M4 1 L1 4 L4 7", "M1 4 H6.5 A2.5 2.5 0 0 1 6.5 9 H4"],
    dataset_triggered: ["M1.5 2.5 A3.5 1.4 0 0 0 8.5 2.5 A3.5 1.4 0 0 0 1.5 2.5 V7.5 A3.5 1.4 0 0 0 8.5 7.5 V2.5",
      "M1.5 5 A3.5 1.4 0 0 0 8.5 5"],
  };
  function runTypeIcon(type) {
    const paths = ICONS[type];
    if (!paths) return null;
    const filled = type === "manual";
    return svgEl("svg", { class: `run-type run-type-${type}`, viewBox: "0 0 10 10", width: 10, height: 10,
      "aria-label": runTypeLabel(type), "data-run-type": type },
    tip(`${runTypeLabel(type)} run`),
    ...paths.map((d) => svgEl("path", { d, fill: filled ? "currentColor" : "none", stroke: "currentColor",
      "stroke-width": filled ? 0 : 1.3, "stroke-linecap": "round", "stroke-linejoin": "round" })));
  }

  const ms = (iso) => (iso ? new Date(iso).getTime() : null);
  // a task instance's seconds from start to end (to now while it runs)
  function seconds(start, end, now = Date.now()) {
    if (!start) return null;
    return Math.max(0, ((end ? ms(end) : now) - ms(start)) / 1000);
  }

  // ---------------------------------------------------------------- the Gantt chart
  // data: /ui/api/dags/D/runs/R/gantt; one row per task (a mapped task's instances share
  // it: from the first start to the last end); a lighter bar before the start while queued.
  // onPick(task_id) when a row is clicked.
  function gantt(svg, data, width, onPick) {
    const now = Date.now();
    const rows = [];
    const byTask = new Map();
    for (const ti of data.task_instances) {
      let row = byTask.get(ti.task_id);
      if (!row) { row = { task_id: ti.task_id, tis: [] }; byTask.set(ti.task_id, row); rows.push(row); }
      row.tis.push(ti);
    }
    for (const row of rows) {
      const t = row.tis;
      const min = (xs) => (xs.length ? Math.min(...xs) : null);
      row.queued = min(t.map((i) => ms(i.queued_dttm)).filter((x) => x !== null));
      row.start = min(t.map((i) => ms(i.start_date)).filter((x) => x !== null));
      const unfinished = t.some((i) => i.start_date && !i.end_date);
      const ends = t.map((i) => ms(i.end_date)).filter((x) => x !== null);
      row.end = row.start === null ? null : unfinished || !ends.length ? now : Math.max(...ends);
      row.mapped = t[0].map_index >= 0;
      row.state = t.length === 1 ? t[0].state : (t.find((i) => i.state !== "success") || t[0]).state;
      row.tries = Math.max(...t.map((i) => i.try_number || 0));
      // queued and waiting still: the queued bar runs to now; never started otherwise: none
      row.waiting = row.start === null && t.some((i) => i.state === "queued" || i.state === "scheduled");
      if (row.start === null && !row.waiting) row.queued = null;
    }
    const points = rows.flatMap((r) => [r.queued, r.start, r.end, r.waiting ? now : null]).filter((x) => x !== null);
    const LABEL = 190, ROW = 22, TOP = 28, RIGHT = 52;
    const height = TOP + Math.max(rows.length, 1) * ROW + 8;
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.replaceChildren();
    if (!points.length) {
      svg.append(svgEl("text", { x: 8, y: 20, class: "chart-empty", text: "No task instance of this run has been queued or started yet." }));
      return;
    }
    const t0 = Math.min(...points), t1 = Math.max(...points, t0 + 1000);
    const span = width - LABEL - RIGHT;
    const x = (t) => LABEL + ((t - t0) / (t1 - t0)) * span;
    // the time axis, in the header's zone: the first day and the zone left, a tick every
    // 120 px or so
    const first = fmtDate(new Date(t0).toISOString());
    svg.append(svgEl("text", { x: LABEL - 8, y: TOP - 10, "text-anchor": "end", class: "chart-tick gantt-day",
      text: `${first.slice(0, 10)} ${first.slice(20)}` }));
    const ticks = Math.max(1, Math.min(8, Math.floor(span / 120)));
    for (let i = 0; i <= ticks; i++) {
      const t = t0 + ((t1 - t0) * i) / ticks;
      svg.append(svgEl("line", { x1: x(t), x2: x(t), y1: TOP - 6, y2: height - 4, class: "chart-grid" }),
        svgEl("text", { x: x(t), y: TOP - 10, class: "chart-tick", "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle",
          text: fmtDate(new Date(t).toISOString()).slice(11, 19) }));
    }
    rows.forEach((r, n) => {
      const y = TOP + n * ROW;
      const label = `${r.task_id}${r.mapped ? ` [${r.tis.length}]` : ""}`;
      const text = [`${label}: ${r.state || "no state"}`, `try ${r.tries}`,
        `queued ${fmtDate(r.queued ? new Date(r.queued).toISOString() : null)}`,
        `started ${fmtDate(r.start ? new Date(r.start).toISOString() : null)}`,
        `ended ${fmtDate(r.end && !r.tis.some((i) => i.start_date && !i.end_date) ? new Date(r.end).toISOString() : null)}`,
        `duration ${fmtDuration(r.start ? (r.end - r.start) / 1000 : null)}`].join("\n");
      const g = svgEl("g", { class: "gantt-row", dataset: { taskId: r.task_id, state: r.state || "" },
        onclick: () => onPick?.(r.task_id) }, tip(text));
      g.append(svgEl("rect", { x: 0, y, width, height: ROW, class: "gantt-hover" }),
        svgEl("text", { x: LABEL - 8, y: y + 15, "text-anchor": "end", class: "gantt-label", text: label.length > 28 ? `${label.slice(0, 27)}…` : label }));
      if (r.queued !== null && (r.start === null || r.queued < r.start)) {
        const qEnd = r.start ?? now;
        g.append(svgEl("rect", { x: x(r.queued), y: y + 5, width: Math.max(2, x(qEnd) - x(r.queued)), height: ROW - 10, rx: 2,
          class: "gantt-queued", fill: colour("queued") }));
      }
      if (r.start !== null) {
        g.append(svgEl("rect", { x: x(r.start), y: y + 3, width: Math.max(3, x(r.end) - x(r.start)), height: ROW - 6, rx: 3,
          class: "gantt-bar", fill: colour(r.state), dataset: { taskId: r.task_id, state: r.state || "" } }));
        if (r.tries > 1) {
          g.append(svgEl("text", { x: Math.min(x(r.end) + 4, width - RIGHT), y: y + 15, class: "gantt-tries", text: `try ${r.tries}` }));
        }
      }
      svg.append(g);
    });
  }

  // ---------------------------------------------------------------- a task's durations
  // data: /ui/api/dags/D/tasks/T/durations; a bar per run (oldest left): the time queued
  // (grey, below) and the time it ran (the state's colour), a dashed line at the median;
  // the bar of `currentRun` is outlined. onPick(run_id) when a bar is clicked.
  function taskDurations(svg, data, width, currentRun, onPick) {
    const now = Date.now();
    const runs = data.runs.map((r) => ({ ...r,
      ran: r.duration ?? (r.start_date ? seconds(r.start_date, r.end_date, now) : null),
      queued: r.queued_duration || 0 }));
    const height = 150, LEFT = 52, BOTTOM = 18, TOP = 10, RIGHT = 6;
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.replaceChildren();
    const totals = runs.map((r) => (r.ran ?? 0) + r.queued);
    const max = Math.max(...totals, 0);
    if (!runs.length || max === 0) {
      svg.append(svgEl("text", { x: 8, y: 24, class: "chart-empty", text: "No try of this task has run yet in the last runs." }));
      return;
    }
    const plotH = height - TOP - BOTTOM, plotW = width - LEFT - RIGHT;
    const slot = plotW / runs.length, barW = Math.max(3, Math.min(28, slot * 0.7));
    const y = (s) => TOP + plotH - (s / max) * plotH;
    for (const f of [0, 0.5, 1]) {
      svg.append(svgEl("line", { x1: LEFT, x2: width - RIGHT, y1: y(max * f), y2: y(max * f), class: "chart-grid" }),
        svgEl("text", { x: LEFT - 6, y: y(max * f) + 4, "text-anchor": "end", class: "chart-tick", text: fmtDuration(max * f) }));
    }
    runs.forEach((r, i) => {
      const cx = LEFT + slot * i + slot / 2;
      const g = svgEl("g", { class: `duration-bar${r.run_id === currentRun ? " current" : ""}`,
        dataset: { runId: r.run_id, seconds: r.ran ?? "" }, onclick: () => onPick?.(r.run_id) },
      tip([`${r.run_id} (${runTypeLabel(r.run_type)})`, `logical date ${fmtDate(r.logical_date)}`,
        `${r.state || "no task instance"}${r.try_number ? `, try ${r.try_number}` : ""}`,
        `queued ${fmtDuration(r.queued_duration)}`, `ran ${fmtDuration(r.ran)}`,
        `started ${fmtDate(r.start_date)}`, `ended ${fmtDate(r.end_date)}`].join("\n")));
      g.append(svgEl("rect", { x: cx - slot / 2, y: TOP, width: slot, height: plotH, class: "gantt-hover" }));
      if (r.queued) {
        g.append(svgEl("rect", { x: cx - barW / 2, y: y(r.queued), width: barW, height: Math.max(1, y(0) - y(r.queued)),
          class: "duration-queued", fill: colour("queued") }));
      }
      if (r.ran !== null) {
        const base = y(r.queued);
        g.append(svgEl("rect", { x: cx - barW / 2, y: y(r.queued + r.ran), width: barW,
          height: Math.max(1, base - y(r.queued + r.ran)), rx: 2, class: "duration-ran", fill: colour(r.state) }));
      }
      svg.append(g);
    });
    const ran = runs.map((r) => r.ran).filter((s) => s !== null).sort((a, b) => a - b);
    if (ran.length) {
      const mid = Math.floor(ran.length / 2);
      const median = ran.length % 2 ? ran[mid] : (ran[mid - 1] + ran[mid]) / 2;
      svg.append(svgEl("line", { x1: LEFT, x2: width - RIGHT, y1: y(median), y2: y(median), class: "chart-median" },
        tip(`median run time ${fmtDuration(median)}`)));
    }
    svg.append(svgEl("text", { x: LEFT, y: height - 4, class: "chart-tick", text: `${runs.length} runs, oldest left` }));
  }

  return { gantt, taskDurations, runTypeIcon, runTypeLabel, seconds };
})();
