// Squall web UI: the trigger dialog's form built from the DAG's params (as Airflow 2.6+'s
// trigger form): one field per param, typed by its JSON schema (number, text, checkbox for a
// boolean, select for an enum, date / time inputs, a JSON textarea for an object or an array),
// with its title and description and its default filled in. The fields fill the run
// configuration JSON below them; the server validates it (squall/runs/trigger.py).
"use strict";

const SquallParams = (() => {
  const typesOf = (schema) => {
    const t = schema.type;
    return (Array.isArray(t) ? t : (t ? [t] : [])).filter((x) => x !== "null");
  };
  const nullable = (schema) => Array.isArray(schema.type) && schema.type.includes("null");

  function kindOf(schema, value) {
    if (Array.isArray(schema.enum)) return "enum";
    let t = typesOf(schema)[0];
    if (!t) {
      if (typeof value === "boolean") t = "boolean";
      else if (typeof value === "number") t = "number";
      else if (value !== null && typeof value === "object") t = "object";
      else t = "string";
    }
    if (t === "boolean") return "boolean";
    if (t === "integer" || t === "number") return "number";
    if (t === "object" || t === "array") return "json";
    if (schema.format === "date" || schema.format === "time") return schema.format;
    if (schema.format === "multiline") return "multiline";
    return "text";
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function input(name, kind, schema, value) {
    const id = `param-${name}`;
    const common = { id, name, "data-param": name, "data-kind": kind };
    if (kind === "boolean") {
      const box = el("input", { ...common, type: "checkbox" });
      box.checked = value === true;
      return box;
    }
    if (kind === "enum") {
      const select = el("select", common);
      const labels = schema.values_display || {};
      if (nullable(schema) || value === null || value === undefined) select.append(el("option", { value: "", text: "—" }));
      for (const option of schema.enum) {
        const node = el("option", { value: JSON.stringify(option), text: labels[option] ?? String(option) });
        node.selected = option === value;
        select.append(node);
      }
      return select;
    }
    if (kind === "json") {
      const area = el("textarea", { ...common, rows: 3, spellcheck: "false" });
      area.value = value === null || value === undefined ? "" : JSON.stringify(value, null, 2);
      return area;
    }
    if (kind === "multiline") {
      const area = el("textarea", { ...common, rows: 3 });
      area.value = value ?? "";
      return area;
    }
    const type = { number: "number", date: "date", time: "time" }[kind] || "text";
    const box = el("input", { ...common, type, step: kind === "number" ? (typesOf(schema)[0] === "integer" ? "1" : "any") : undefined,
      min: schema.minimum, max: schema.maximum, placeholder: value === null || value === undefined ? (nullable(schema) ? "null" : "required") : undefined });
    box.value = value === null || value === undefined ? "" : String(value);
    return box;
  }

  // the field's value as JSON; {error} when it cannot be read
  function read(field) {
    const kind = field.dataset.kind;
    if (kind === "boolean") return { value: field.checked };
    const text = field.value;
    if (kind === "enum") return { value: text === "" ? null : JSON.parse(text) };
    if (text.trim() === "") return { value: null };
    if (kind === "number") {
      const n = Number(text);
      return Number.isNaN(n) ? { value: text } : { value: n };
    }
    if (kind === "json") {
      try { return { value: JSON.parse(text) }; } catch (e) { return { error: `param ${field.dataset.param}: not valid JSON` }; }
    }
    return { value: text };
  }

  // build the fields of `params` (the details API's {name: {value, description, schema}})
  // in `container`; onChange(field) when one changes
  function build(container, params, onChange) {
    container.replaceChildren();
    const sections = new Map();
    for (const [name, param] of Object.entries(params || {})) {
      const schema = param.schema || {};
      if (schema.const !== undefined) continue; // a constant: nothing to choose
      const kind = kindOf(schema, param.value);
      const field = input(name, kind, schema, param.value);
      field.addEventListener(kind === "boolean" || kind === "enum" ? "change" : "input", () => onChange(field));
      const title = el("span", { class: "param-title", text: schema.title || name });
      const row = el("div", { class: "param-field", "data-param-row": name },
        kind === "boolean"
          ? el("label", { for: field.id }, field, " ", title, schema.title ? el("code", { text: name }) : null)
          : el("label", { for: field.id }, title, schema.title ? el("code", { text: name }) : null, field),
        param.description ? el("p", { class: "param-description", text: param.description }) : null);
      const section = schema.section || "";
      if (!sections.has(section)) {
        const box = section ? el("fieldset", { class: "param-section" }, el("legend", { text: section })) : el("div", { class: "param-section" });
        sections.set(section, box);
      }
      sections.get(section).append(row);
    }
    // the unnamed section first, as in Airflow's form
    if (sections.has("")) container.append(sections.get(""));
    for (const [name, box] of sections) if (name) container.append(box);
    container.hidden = sections.size === 0;
    return [...container.querySelectorAll("[data-param]")];
  }

  // the conf text with the field's value set; null when the text is not a JSON object
  function merge(confText, field) {
    let conf = {};
    if (confText.trim()) {
      try { conf = JSON.parse(confText); } catch (e) { return null; }
      if (conf === null || typeof conf !== "object" || Array.isArray(conf)) return null;
    }
    const got = read(field);
    if (got.error) return null;
    conf[field.dataset.param] = got.value;
    return JSON.stringify(conf, null, 2);
  }

  // mark the field the server's error names ("Invalid input for param NAME: ...")
  function markInvalid(container, message) {
    for (const row of container.querySelectorAll(".param-field.invalid")) row.classList.remove("invalid");
    const m = /param (\S+?):/.exec(message || "");
    const row = m && container.querySelector(`[data-param-row="${CSS.escape(m[1])}"]`);
    if (row) row.classList.add("invalid");
  }

  return { build, read, merge, markInvalid };
})();
