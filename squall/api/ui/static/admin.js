// The variables and connections pages: list with search, and for ops add / edit / delete
// in dialogs. Secrets stay on the server: values of sensitive keys come as "***", a
// connection's password never comes at all (the server keeps it when the field is empty).
"use strict";

(() => {
  const { request, el, flash, mayAct } = Squall;
  const page = document.body.dataset.page;
  const $ = (id) => document.getElementById(id);
  const blankToNull = (v) => (v.trim() === "" ? null : v);

  // "Delete X?" with a confirmation dialog; resolves to true when confirmed
  function confirmDelete(what) {
    const dialog = $("confirm-dialog");
    $("confirm-title").textContent = `Delete ${what}?`;
    $("confirm-text").textContent = `This deletes ${what} for every DAG that uses it. It cannot be undone.`;
    return new Promise((resolve) => {
      const done = (ok) => { dialog.close(); cleanup(); resolve(ok); };
      const onOk = (ev) => { ev.preventDefault(); done(true); };
      const onCancel = () => done(false);
      const cleanup = () => {
        $("confirm-form").removeEventListener("submit", onOk);
        $("confirm-cancel").removeEventListener("click", onCancel);
      };
      $("confirm-form").addEventListener("submit", onOk);
      $("confirm-cancel").addEventListener("click", onCancel);
      dialog.showModal();
    });
  }

  function showError(box, message) { box.textContent = message; box.hidden = false; }

  // a list page: fetch url?search=, render rows, re-render on search
  function listPage({ url, key, rows, cols, row, search, empty }) {
    const body = $(rows);
    let timer = null;
    async function load() {
      const q = $(search).value.trim();
      try {
        const data = await request("GET", `${url}?search=${encodeURIComponent(q)}`);
        const items = data[key];
        body.replaceChildren(...(items.length ? items.map(row)
          : [el("tr", {}, el("td", { colspan: cols, class: "muted", text: q ? `Nothing matches “${q}”.` : empty }))]));
      } catch (e) { flash(e.message, "error"); }
    }
    $(search).addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(load, 200); });
    load();
    return load;
  }

  const actionCell = (name, onEdit, onDelete) => mayAct() ? el("td", { class: "narrow" },
    el("button", { type: "button", class: "action small-button edit", text: "Edit", dataset: { name }, onclick: onEdit }), " ",
    el("button", { type: "button", class: "action small-button failed delete", text: "Delete", dataset: { name }, onclick: onDelete })) : null;

  // ---- variables ----
  function variables() {
    const path = (key) => `/ui/api/variables/${encodeURIComponent(key)}`;
    let editing = null;  // the key being edited, null when adding
    const reload = listPage({ url: "/ui/api/variables", key: "variables", rows: "var-rows", cols: 5,
      search: "var-search", empty: "No variables yet.", row: (v) => el("tr", { dataset: { key: v.key } },
        el("td", {}, el("code", { class: "var-key", text: v.key })),
        el("td", { class: "value" }, el("code", { class: v.value === "***" ? "var-value masked" : "var-value", text: v.value })),
        el("td", { class: "muted", text: v.description || "" }),
        el("td", { class: "narrow", text: v.is_encrypted ? "yes" : "no" }),
        actionCell(v.key, () => open(v), () => remove(v.key))) });
    if (!mayAct()) return;
    const dialog = $("var-dialog");
    function open(v) {
      editing = v ? v.key : null;
      $("var-dialog-title").textContent = v ? `Edit ${v.key}` : "Add variable";
      $("var-key").value = v ? v.key : "";
      $("var-key").readOnly = !!v;
      $("var-value").value = v ? v.value : "";
      $("var-description").value = v ? v.description || "" : "";
      $("var-masked-note").hidden = !(v && v.value === "***");
      $("var-error").hidden = true;
      dialog.showModal();
    }
    async function remove(key) {
      if (!await confirmDelete(`variable ${key}`)) return;
      try { await request("DELETE", path(key)); flash(`Variable ${key} deleted`, "ok"); reload(); }
      catch (e) { flash(e.message, "error"); }
    }
    $("var-add").addEventListener("click", () => open(null));
    $("var-cancel").addEventListener("click", () => dialog.close());
    $("var-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const key = $("var-key").value.trim();
      if (!key) { showError($("var-error"), "A key is needed."); return; }
      const body = { value: $("var-value").value, description: blankToNull($("var-description").value) };
      try {
        if (editing === null) await request("POST", "/ui/api/variables", { key, ...body });
        else await request("PATCH", path(editing), body);
        dialog.close();
        flash(`Variable ${key} saved`, "ok");
        reload();
      } catch (e) { showError($("var-error"), e.message); }
    });
  }

  // ---- connections ----
  function connections() {
    const path = (id) => `/ui/api/connections/${encodeURIComponent(id)}`;
    const FIELDS = ["host", "login", "schema", "description"];
    let editing = null;
    const reload = listPage({ url: "/ui/api/connections", key: "connections", rows: "conn-rows", cols: 9,
      search: "conn-search", empty: "No connections yet.", row: (c) => el("tr", { dataset: { connId: c.connection_id } },
        el("td", {}, el("code", { text: c.connection_id })),
        el("td", { text: c.conn_type }),
        el("td", { text: c.host || "" }),
        el("td", { class: "num", text: c.port ?? "" }),
        el("td", { text: c.login || "" }),
        el("td", { text: c.schema || "" }),
        el("td", { class: "muted", text: c.has_password ? "set" : "—" }),
        el("td", { class: "muted", text: c.description || "" }),
        actionCell(c.connection_id, () => open(c), () => remove(c.connection_id))) });
    if (!mayAct()) return;
    const dialog = $("conn-dialog");
    function open(c) {
      editing = c ? c.connection_id : null;
      $("conn-dialog-title").textContent = c ? `Edit ${c.connection_id}` : "Add connection";
      $("conn-id").value = c ? c.connection_id : "";
      $("conn-id").readOnly = !!c;
      $("conn-type").value = c ? c.conn_type : "";
      for (const f of FIELDS) $(`conn-${f}`).value = c ? c[f] || "" : "";
      $("conn-port").value = c && c.port !== null ? String(c.port) : "";
      $("conn-password").value = "";
      $("conn-password-note").hidden = !c;
      $("conn-extra").value = c ? c.extra || "" : "";
      $("conn-error").hidden = true;
      dialog.showModal();
    }
    async function remove(id) {
      if (!await confirmDelete(`connection ${id}`)) return;
      try { await request("DELETE", path(id)); flash(`Connection ${id} deleted`, "ok"); reload(); }
      catch (e) { flash(e.message, "error"); }
    }
    $("conn-add").addEventListener("click", () => open(null));
    $("conn-cancel").addEventListener("click", () => dialog.close());
    $("conn-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const id = $("conn-id").value.trim();
      const body = { connection_id: id, conn_type: $("conn-type").value.trim() };
      for (const f of FIELDS) body[f] = blankToNull($(`conn-${f}`).value);
      const port = $("conn-port").value.trim();
      body.port = port === "" ? null : (/^\d+$/.test(port) ? Number(port) : port);
      const password = $("conn-password").value;
      if (password !== "") body.password = password;  // empty: keep the stored one
      body.extra = blankToNull($("conn-extra").value);
      try {
        if (editing === null) await request("POST", "/ui/api/connections", body);
        else await request("PATCH", path(editing), body);
        dialog.close();
        flash(`Connection ${id} saved`, "ok");
        reload();
      } catch (e) { showError($("conn-error"), e.message); }
    });
  }

  if (page === "variables") variables();
  else if (page === "connections") connections();
})();
