// Run-level actions shared by the grid's run panel and the runs list: clear a run (all its
// task instances, or only the failed ones), mark it success or failed. Each asks the server
// first with dry_run (the preview: which task instances would change, and how the runs
// would), shows it in a dialog, and acts only once the user confirms (as Airflow's).
"use strict";

const SquallRunActions = (() => {
  const { request, el, flash, stateClass } = Squall;
  const ACTIONS = {
    clear: { url: "/ui/api/runs/clear", body: { only_failed: false }, verb: "Clear", done: "Cleared" },
    clear_failed: { url: "/ui/api/runs/clear", body: { only_failed: true }, verb: "Clear only failed tasks of", done: "Cleared" },
    mark_success: { url: "/ui/api/runs/mark", body: { state: "success" }, verb: "Mark success", done: "Marked success" },
    mark_failed: { url: "/ui/api/runs/mark", body: { state: "failed" }, verb: "Mark failed", done: "Marked failed" },
  };
  const dialog = document.getElementById("run-confirm");
  let pending = null;   // {action, runs, onDone}

  const state = (s) => el("span", { class: `state-text ${stateClass(s)}`, text: s || "none" });
  const runName = (runs) => (runs.length === 1 ? `run ${runs[0].run_id}` : `${runs.length} runs`);

  function showPreview(a, runs, preview) {
    document.getElementById("run-confirm-title").textContent = `${a.verb} ${runName(runs)}?`;
    const n = preview.total_task_instances;
    const runChanges = preview.runs.filter((r) => r.state !== r.new_state);
    const summary = [`${n} task instance${n === 1 ? "" : "s"} would change`];
    if (runChanges.length) summary.push(`${runChanges.length} run${runChanges.length === 1 ? "" : "s"} would become ${[...new Set(runChanges.map((r) => r.new_state))].join(", ")}`);
    if (n > preview.task_instances.length) summary.push(`(the first ${preview.task_instances.length} are listed)`);
    document.getElementById("run-confirm-summary").textContent = summary.join("; ") + ".";
    const multiDag = new Set(preview.task_instances.map((t) => t.dag_id)).size > 1;
    const multiRun = new Set(preview.task_instances.map((t) => t.run_id)).size > 1;
    const head = [...(multiDag ? ["DAG"] : []), ...(multiRun ? ["run"] : []), "task", "map index", "now", "becomes"];
    const tiRow = (t) => el("tr", {
      class: "preview-ti", dataset: { dagId: t.dag_id, runId: t.run_id, taskId: t.task_id, mapIndex: t.map_index },
    }, ...(multiDag ? [el("td", { text: t.dag_id })] : []),
    ...(multiRun ? [el("td", { class: "small", text: t.run_id })] : []),
    el("td", {}, el("code", { text: t.task_id })),
    el("td", { text: t.map_index < 0 ? "" : String(t.map_index) }),
    el("td", {}, state(t.state)), el("td", {}, state(t.new_state)));
    document.getElementById("run-confirm-tis").replaceChildren(
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { text: h })))),
      el("tbody", {}, ...preview.task_instances.map(tiRow)));
    const nothing = n === 0 && !runChanges.length;
    document.getElementById("run-confirm-ok").disabled = nothing;
    if (nothing) document.getElementById("run-confirm-summary").textContent = "Nothing would change.";
  }

  // open the confirmation of `action` (a key of ACTIONS) on runs [{dag_id, run_id}]
  async function confirm(action, runs, onDone) {
    if (!dialog) return;
    const a = ACTIONS[action];
    let preview;
    try {
      preview = await request("POST", a.url, { ...a.body, runs, dry_run: true });
    } catch (e) { flash(e.message, "error"); return; }
    pending = { a, runs, onDone };
    document.getElementById("run-confirm-error").hidden = true;
    dialog.dataset.action = action;
    showPreview(a, runs, preview);
    dialog.showModal();
  }

  if (dialog) {
    document.getElementById("run-confirm-cancel").addEventListener("click", () => { pending = null; dialog.close(); });
    document.getElementById("run-confirm-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (!pending) return;
      const { a, runs, onDone } = pending;
      const ok = document.getElementById("run-confirm-ok");
      ok.disabled = true;
      try {
        const r = await request("POST", a.url, { ...a.body, runs, dry_run: false });
        pending = null;
        dialog.close();
        const count = r.cleared ? `${r.cleared.length} task instance(s)` : `${r.marked.length} run(s)`;
        const missed = r.changed_meanwhile.length ? `; ${r.changed_meanwhile.length} changed meanwhile, left alone` : "";
        flash(`${a.done} ${count}${missed}`, "ok");
        onDone?.(r);
      } catch (e) {
        const box = document.getElementById("run-confirm-error");
        box.textContent = e.message;
        box.hidden = false;
      } finally { ok.disabled = false; }
    });
  }

  return { confirm, ACTIONS };
})();
