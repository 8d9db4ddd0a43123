// Squall web UI: helpers shared by every page (no framework, no build step).
"use strict";

const Squall = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";
  const mayAct = () => document.body.dataset.mayAct === "true";

  class ApiError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  // fetch a /ui/api or /api/v1 URL; state-changing requests carry the CSRF token
  async function request(method, url, body, accept = "application/json") {
    const headers = { Accept: accept };
    if (method !== "GET") headers["X-CSRF-Token"] = csrf();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) { window.location.assign("/login"); throw new ApiError(401, "signed out"); }
    if (!response.ok) {
      let detail = response.statusText;
      try { const p = await response.json(); detail = p.detail || p.title || detail; } catch (e) { /* not JSON */ }
      throw new ApiError(response.status, detail);
    }
    return accept === "application/json" ? response.json() : response.text();
  }

  // el("td", {class: "x", text: "y"}, child, ...)
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  // every time a page shows: "2024-03-01 00:00:00 UTC", in the zone picked in the header
  // (timeZone() below); "—" for none
  function fmtDate(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const p = {};
    for (const part of zoneFormat().formatToParts(d)) p[part.type] = part.value;
    const zone = zoneLabel(p.timeZoneName);
    return `${p.year}-${p.month}-${p.day} ${p.hour === "24" ? "00" : p.hour}:${p.minute}:${p.second} ${zone}`;
  }
  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.round(seconds * 10) / 10;
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60), h = Math.floor(m / 60);
    return h ? `${h}h ${m % 60}m ${Math.round(s % 60)}s` : `${m}m ${Math.round(s % 60)}s`;
  }

  let flashTimer = null;
  function flash(message, kind = "info") {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = message;
    box.className = `flash ${kind}`;
    box.hidden = false;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => { box.hidden = true; }, kind === "error" ? 10000 : 4000);
  }

  // call fn now and every `ms` while the page is visible (light polling)
  function poll(fn, ms = 2000) {
    let timer = null, busy = false;
    const live = document.getElementById("live");
    async function tick() {
      clearTimeout(timer);
      if (document.visibilityState !== "visible") return;
      if (!busy) {
        busy = true;
        try { await fn(); live?.classList.remove("stale"); }
        catch (e) { live?.classList.add("stale"); if (e.status !== 401) console.warn(e); }
        finally { busy = false; }
      }
      timer = setTimeout(tick, ms);
    }
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") tick(); else clearTimeout(timer);
    });
    tick();
    return { now: tick };
  }

  const STATES = ["success", "running", "failed", "upstream_failed", "up_for_retry",
    "up_for_reschedule", "deferred", "queued", "scheduled", "restarting", "skipped", "removed", "none"];
  const stateClass = (s) => `state-${s || "none"}`;

  // the trigger dialog shared by the DAG list and the grid, with a field per DAG param
  // (trigger.js) filling the conf; onDone(result) after a trigger
  function triggerDialog(onDone) {
    const dialog = document.getElementById("trigger-dialog");
    if (!dialog) return () => {};
    const conf = document.getElementById("trigger-conf");
    const error = document.getElementById("trigger-error");
    const paramsBox = document.getElementById("trigger-params");
    let dagId = null, fields = [];
    const showError = (message) => {
      error.textContent = message;
      error.hidden = false;
      SquallParams.markInvalid(paramsBox, message);
    };
    const sync = (field) => {
      const merged = SquallParams.merge(conf.value, field);
      if (merged !== null) conf.value = merged;
    };
    document.getElementById("trigger-cancel").addEventListener("click", () => dialog.close());
    document.getElementById("trigger-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      for (const field of fields) {
        const got = SquallParams.read(field);
        if (got.error) { showError(got.error); return; }
      }
      let parsed = null;
      const text = conf.value.trim();
      if (text) {
        try { parsed = JSON.parse(text); } catch (e) { parsed = undefined; }
        if (parsed === undefined || parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
          showError("The configuration must be a JSON object, e.g. {\"key\": \"value\"}.");
          return;
        }
      }
      try {
        const result = await request("POST", `/ui/api/dags/${encodeURIComponent(dagId)}/trigger`, { conf: parsed });
        dialog.close();
        flash(`Triggered ${dagId}: run ${result.run_id}` + (result.is_paused ? " (the DAG is paused: it starts once unpaused)" : ""), "ok");
        onDone(result);
      } catch (e) { showError(e.message); }
    });
    return async (id) => {
      dagId = id;
      document.getElementById("trigger-dag").textContent = id;
      error.hidden = true;
      conf.value = "";
      fields = SquallParams.build(paramsBox, {}, sync);
      dialog.showModal();
      let params = {};
      try {
        params = (await request("GET", `/api/v1/dags/${encodeURIComponent(id)}/details`)).params || {};
      } catch (e) { console.warn(e); } // not parsed yet: the JSON alone
      if (dagId !== id) return;
      fields = SquallParams.build(paramsBox, params, sync);
      for (const field of fields) sync(field);
      paramsBox.dataset.ready = "true";
      (fields[0] || conf).focus();
    };
  }

  // ---------------------------------------------------------------- time zones
  // The zone every time is shown in: the header's choice (UTC, the browser's own zone, or
  // the deployment's default, [api] default_ui_timezone), remembered in localStorage; a
  // change fires "squall:timezone" on window, which pages answer by drawing again.
  const TZ_KEY = "squall.timezone";
  const browserZone = () => Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const knownZone = (z) => { try { new Intl.DateTimeFormat("en-US", { timeZone: z }); return true; } catch (e) { return false; } };
  function defaultZone() {
    const z = document.body?.dataset.defaultTz || "UTC";
    return z === "system" ? browserZone() : knownZone(z) ? z : "UTC";
  }
  function zoneChoice() {
    let c = null;
    try { c = localStorage.getItem(TZ_KEY); } catch (e) { /* storage off: the default */ }
    return c === "UTC" || c === "local" || c === "default" ? c : "default";
  }
  function timeZone() {
    const c = zoneChoice();
    return c === "UTC" ? "UTC" : c === "local" ? browserZone() : defaultZone();
  }
  let formatCache = null;
  function zoneFormat() {
    const zone = timeZone();
    if (!formatCache || formatCache.zone !== zone) {
      formatCache = { zone, format: new Intl.DateTimeFormat("en-US", {
        timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
        minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short" }) };
    }
    return formatCache.format;
  }
  const zoneLabel = (short) => (timeZone() === "UTC" ? "UTC" : short || timeZone());
  function setZoneChoice(choice) {
    try { localStorage.setItem(TZ_KEY, choice); } catch (e) { /* not remembered */ }
    window.dispatchEvent(new CustomEvent("squall:timezone", { detail: { zone: timeZone() } }));
  }
  // the header's switch: UTC, local (the browser's zone), the default when it is neither
  function zoneSwitch() {
    const select = document.getElementById("tz-select");
    if (!select) return;
    const local = browserZone(), fallback = defaultZone();
    const options = [el("option", { value: "UTC", text: "UTC" }),
      el("option", { value: "local", text: `Local (${local})` })];
    if (fallback !== "UTC") options.push(el("option", { value: "default", text: `Default (${fallback})` }));
    select.replaceChildren(...options);
    const c = zoneChoice();
    select.value = c === "default" ? (fallback === "UTC" ? "UTC" : "default") : c;
    select.title = `Times are shown in ${timeZone()}`;
    select.addEventListener("change", () => {
      setZoneChoice(select.value);
      select.title = `Times are shown in ${timeZone()}`;
    });
  }
  zoneSwitch();

  return { request, el, fmtDate, fmtDuration, flash, poll, mayAct, STATES, stateClass, triggerDialog, ApiError,
    timeZone, setZoneChoice };
})();
