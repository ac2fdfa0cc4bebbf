// The stylefarm REST API as the studio uses it: the API key header, problem+json errors,
// images behind the key, and job events read from the server-sent event stream with
// fetch() (EventSource cannot send the key header).

const KEY_STORAGE = "stylefarm.apiKey";
export const FINAL = new Set(["succeeded", "failed", "canceled"]);

export function getKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

function authHeaders(extra) {
  const headers = new Headers(extra || {});
  const key = getKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return headers;
}

/** An RFC 9457 problem answered by the API. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function problemOf(response) {
  let problem;
  try {
    problem = await response.json();
  } catch {
    problem = { title: response.statusText || `HTTP ${response.status}`, detail: "" };
  }
  return new ApiError(response.status, problem);
}

/** fetch() with the key; throws ApiError for answers that are not 2xx. */
export async function api(path, { method = "GET", json, body, headers, signal } = {}) {
  const h = authHeaders(headers);
  if (json !== undefined) {
    h.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers: h, body, signal });
  if (!response.ok) throw await problemOf(response);
  return response;
}

export async function apiJson(path, options) {
  return (await api(path, options)).json();
}

/** POST /v1/inputs; returns the input (its id is the sha256 of the bytes). */
export async function uploadInput(blob, name) {
  const form = new FormData();
  form.append("file", blob, name || "image.png");
  return apiJson("/v1/inputs", { method: "POST", body: form });
}

/** Show an API image in an <img>: the URL itself without a key (the browser follows a
 *  redirect to storage), or the bytes fetched with the key as a blob URL. */
export async function showImage(img, path) {
  let src = path;
  if (getKey()) src = URL.createObjectURL(await (await api(path)).blob());
  const loaded = new Promise((resolve, reject) => {
    img.addEventListener("load", resolve, { once: true });
    img.addEventListener("error", () => reject(new Error(`could not load ${path}`)), { once: true });
  });
  const previous = img.dataset.blob;
  img.src = src;
  if (src.startsWith("blob:")) img.dataset.blob = src;
  else delete img.dataset.blob;
  try {
    await loaded;
  } finally {
    if (previous) URL.revokeObjectURL(previous);
  }
}

/** Save an API file under ``name`` (through a blob when a key is needed). */
export async function download(path, name) {
  const a = document.createElement("a");
  a.download = name;
  a.href = getKey() ? URL.createObjectURL(await (await api(path)).blob()) : path;
  document.body.append(a);
  a.click();
  a.remove();
  if (a.href.startsWith("blob:")) setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

/** The events of one server-sent event stream: {id, event, data}. */
export async function* readEvents(path, { lastEventId, signal } = {}) {
  const headers = authHeaders({ Accept: "text/event-stream" });
  if (lastEventId) headers.set("Last-Event-ID", lastEventId);
  const response = await fetch(path, { headers, signal, cache: "no-store" });
  if (!response.ok) throw await problemOf(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { id: lastEventId || null, event: "message", data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line === "") {
        if (event.data.length) yield { id: event.id, event: event.event, data: event.data.join("\n") };
        event = { id: event.id, event: "message", data: [] };
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") event.data.push(text);
        else if (field === "event") event.event = text;
        else if (field === "id") event.id = text;
      }
    }
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });

/** Follow a job's events until a final status, reconnecting with Last-Event-ID after a
 *  dropped connection. ``onJob(job, kind)`` gets the job of every event. */
export async function watchJob(jobId, onJob, signal) {
  let lastEventId = null;
  let delay = 1000;
  while (!signal?.aborted) {
    try {
      for await (const ev of readEvents(`/v1/jobs/${encodeURIComponent(jobId)}/events`, { lastEventId, signal })) {
        lastEventId = ev.id;
        delay = 1000;
        const job = JSON.parse(ev.data);
        onJob(job, ev.event);
        if (FINAL.has(job.status)) return job;
      }
    } catch (err) {
      if (signal?.aborted) return null;
      if (err instanceof ApiError && err.status < 500) throw err;
    }
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 15000);
  }
  return null;
}
