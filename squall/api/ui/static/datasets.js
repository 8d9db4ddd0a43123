// The datasets page: each dataset with its producers (dag.task), its consumers (DAGs, with
// the ones it is queued for marked), and its newest events (when, from which run, extra,
// the runs they created). Polled while the page is visible; a filter narrows by URI.
"use strict";

(() => {
  const { request, el, fmtDate, poll } = Squall;
  const box = document.getElementById("datasets");
  const filter = document.getElementById("dataset-filter");
  const count = document.getElementById("dataset-count");
  const showOrphaned = document.getElementById("show-orphaned");
  let data = null, last = null;

  const grid = (dagId) => `/dags/${encodeURIComponent(dagId)}/grid`;
  const dagLink = (dagId, text = dagId) => el("a", { href: grid(dagId), class: "dag-link", text });
  const json = (value) => (value && Object.keys(value).length ? JSON.stringify(value) : "");

  function source(e) {
    if (!e.source_dag_id) {
      return el("span", { class: "muted", text: e.extra?.from_rest_api ? "external (REST API)" : "external" });
    }
    const mapIndex = e.source_map_index !== null && e.source_map_index >= 0 ? `[${e.source_map_index}]` : "";
    return el("span", { class: "event-source" },
      dagLink(e.source_dag_id, `${e.source_dag_id}.${e.source_task_id}${mapIndex}`),
      el("span", { class: "muted", text: " in run " }),
      el("code", { class: "small", text: e.source_run_id }));
  }

  function eventsTable(d) {
    if (!d.events.length) return el("p", { class: "muted small no-events", text: "No events yet." });
    return el("table", { class: "instances events" },
      el("thead", {}, el("tr", {}, el("th", { text: "When" }), el("th", { text: "Source" }),
        el("th", { text: "Extra" }), el("th", { text: "Runs created" }))),
      el("tbody", {}, ...d.events.map((e) => el("tr", { class: "event", dataset: { eventId: e.id } },
        el("td", { class: "nowrap small", text: fmtDate(e.timestamp) }),
        el("td", {}, source(e)),
        el("td", {}, el("code", { class: "small extra", text: json(e.extra) })),
        el("td", { class: "small" }, ...e.created_dagruns.flatMap((r, i) => [
          ...(i ? [", "] : []), el("a", { href: grid(r.dag_id), text: `${r.dag_id} / ${r.dag_run_id}` })]))))));
  }

  function card(d) {
    const producers = d.producers.length
      ? d.producers.map((p) => el("li", { class: "producer" }, dagLink(p.dag_id, `${p.dag_id}.${p.task_id}`)))
      : [el("li", { class: "muted", text: "none" })];
    const consumers = d.consumers.length
      ? d.consumers.map((c) => el("li", { class: "consumer", dataset: { dagId: c } }, dagLink(c),
        ...(d.queued_for.includes(c) ? [el("span", { class: "badge queued-badge", title: "an event of this dataset waits for this DAG's next run", text: "queued" })] : [])))
      : [el("li", { class: "muted", text: "none" })];
    return el("section", { class: `card dataset${d.orphaned ? " orphaned" : ""}`, id: `dataset-${d.id}`, dataset: { uri: d.uri } },
      el("div", { class: "dataset-head" },
        el("h2", {}, el("code", { class: "dataset-uri", text: d.uri })),
        ...(d.orphaned ? [el("span", { class: "badge orphaned-badge", title: "no DAG file names it any more", text: "orphaned" })] : []),
        ...(json(d.extra) ? [el("code", { class: "small muted", text: json(d.extra) })] : []),
        ...d.aliases.map((a) => el("span", { class: "tag", title: "alias", text: `alias ${a}` }))),
      el("div", { class: "dataset-links" },
        el("div", {}, el("h3", { text: "Producers" }), el("ul", { class: "producers" }, ...producers)),
        el("div", {}, el("h3", { text: "Consumers" }), el("ul", { class: "consumers" }, ...consumers))),
      el("h3", { text: "Recent events" }), eventsTable(d));
  }

  function render() {
    const wanted = filter.value.trim().toLowerCase();
    const shown = data.datasets.filter((d) => (!wanted || d.uri.toLowerCase().includes(wanted)) &&
      (showOrphaned.checked || !d.orphaned));
    count.textContent = `${shown.length} of ${data.datasets.length}`;
    box.replaceChildren(...(shown.length ? shown.map(card)
      : [el("p", { class: "muted", text: data.datasets.length ? "No dataset matches." : "No datasets: no DAG file names one yet." })]));
    if (window.location.hash) document.querySelector(`[data-uri="${CSS.escape(decodeURIComponent(window.location.hash.slice(1)))}"]`)?.classList.add("target");
  }

  filter.addEventListener("input", () => { if (data) render(); });
  showOrphaned.addEventListener("change", () => { if (data) render(); });
  window.addEventListener("squall:timezone", () => { if (data) render(); });
  poll(async () => {
    const got = await request("GET", "/ui/api/datasets");
    const text = JSON.stringify(got.datasets);
    if (text === last) return;
    last = text;
    data = got;
    render();
  }, 3000);
})();
