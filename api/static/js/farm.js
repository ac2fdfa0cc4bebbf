// The farm view: workers and queue depth from GET /v1/workers and GET /v1/queues, shown
// as tables whatever their exact fields; "not available" where the server lacks them.

import { ApiError, apiJson } from "./api.js";

function cell(value) {
  if (value === null || value === undefined) return "—";
  if (Array.isArray(value)) return value.map((v) => (typeof v === "object" ? JSON.stringify(v) : String(v))).join(", ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function rowsOf(data) {
  if (Array.isArray(data)) return data;
  for (const key of ["items", "workers", "queues"]) if (Array.isArray(data?.[key])) return data[key];
  if (data && typeof data === "object" && Object.values(data).every((v) => typeof v !== "object" || v === null)) {
    return Object.entries(data).map(([name, value]) => ({ name, value }));
  }
  return null;
}

function table(rows, caption) {
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const t = document.createElement("table");
  t.createCaption().textContent = caption;
  const head = t.createTHead().insertRow();
  for (const c of columns) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = c.replace(/_/g, " ");
    head.append(th);
  }
  const body = t.createTBody();
  for (const r of rows) {
    const tr = body.insertRow();
    for (const c of columns) tr.insertCell().textContent = cell(r[c]);
  }
  return t;
}

function note(text, cls = "hint") {
  const p = document.createElement("p");
  p.className = cls;
  p.textContent = text;
  return p;
}

async function show(box, path, what) {
  try {
    const data = await apiJson(path);
    const rows = rowsOf(data);
    if (rows && rows.length === 0) box.replaceChildren(note(`No ${what} right now.`));
    else if (rows) box.replaceChildren(table(rows, `${rows.length} ${what}`));
    else box.replaceChildren(Object.assign(document.createElement("pre"), { textContent: JSON.stringify(data, null, 2) }));
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 405)) {
      box.replaceChildren(note(`Not available: this server has no ${path} endpoint yet.`, "hint unavailable"));
    } else {
      box.replaceChildren(note(`Could not load ${what}: ${err.message}`, "error"));
    }
  }
}

export async function refreshFarm() {
  await Promise.all([
    show(document.getElementById("farm-workers"), "/v1/workers", "workers"),
    show(document.getElementById("farm-queues"), "/v1/queues", "queues"),
  ]);
}
