// Live job cards (server-sent events, previews, cancel) and the gallery of finished renders.

import { FINAL, ApiError, api, apiJson, download, showImage, watchJob } from "./api.js";

const RENDER_METHODS = new Set(["fast", "adain", "optimize", "masked"]);

function percent(job) {
  return Math.round((job.status === "succeeded" ? 1 : job.progress.fraction) * 100);
}

function shortId(id) {
  return id.slice(0, 8);
}

function downloadButton(job) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "quiet";
  button.textContent = "Download";
  button.setAttribute("aria-label", `Download the result of job ${shortId(job.id)}`);
  button.addEventListener("click", () => download(job.links.result, `stylefarm-${shortId(job.id)}.png`));
  return button;
}

export function describeError(err) {
  if (err instanceof ApiError) return `${err.problem.title || "Error"}: ${err.message}`;
  return err?.message || String(err);
}

/** The list of jobs being watched, newest first. ``onFinished(job)`` after a final status. */
export class JobBoard {
  constructor(list, emptyHint, onFinished) {
    this.list = list;
    this.emptyHint = emptyHint;
    this.onFinished = onFinished;
    this.template = document.getElementById("job-template");
    this.cards = new Map();
    this.abort = new AbortController();
  }

  /** Show and watch the tenant's unfinished jobs (a tiled render waits for its tiles, then is assembled). */
  async loadActive() {
    const active = ["queued", "running", "waiting", "assembling"];
    const pages = await Promise.all(active.map((s) => apiJson(`/v1/jobs?status=${s}&limit=20`)));
    const jobs = pages.flatMap((p) => p.items).sort((a, b) => a.timings.created_at.localeCompare(b.timings.created_at));
    for (const job of jobs) this.add(job);
  }

  /** Show ``job`` (once) and follow its events. */
  add(job) {
    if (this.cards.has(job.id)) return;
    const card = this.template.content.firstElementChild.cloneNode(true);
    card.dataset.jobId = job.id;
    card.querySelector(".job-method").textContent = job.method;
    const idEl = card.querySelector(".job-id");
    idEl.textContent = shortId(job.id);
    idEl.title = job.id;
    card.querySelector(".cancel").addEventListener("click", () => this.cancel(card));
    this.cards.set(job.id, card);
    this.list.prepend(card);
    this.emptyHint.hidden = true;
    this.update(card, job);
    watchJob(job.id, (j) => this.update(card, j), this.abort.signal)
      .then((final) => final && this.onFinished(final))
      .catch((err) => this.fail(card, describeError(err)));
  }

  update(card, job) {
    const pct = percent(job);
    const done = FINAL.has(job.status);
    card.dataset.status = job.status;
    const badge = card.querySelector(".badge");
    badge.textContent = job.cancel_requested && !done ? "canceling" : job.status;
    badge.className = `badge ${job.status}`;
    const bar = card.querySelector(".bar");
    bar.setAttribute("aria-valuenow", String(pct));
    bar.setAttribute("aria-label", `Progress of ${job.method} job ${shortId(job.id)}`);
    bar.querySelector("span").style.width = `${pct}%`;
    card.querySelector(".pct").textContent = `${pct} %`;
    const p = job.progress;
    const steps = p.total > 0 ? ` · step ${p.step}/${p.total}` : "";
    card.querySelector(".stage").textContent = done ? "" : `${p.stage || job.status}${steps}`;
    const cancel = card.querySelector(".cancel");
    cancel.hidden = done;
    cancel.disabled = job.cancel_requested;
    if (job.status === "succeeded" && job.links.result && card.dataset.shown !== "result") {
      card.dataset.shown = "result";
      const size = job.result?.width ? `${job.result.width}×${job.result.height}` : "";
      this.showFigure(card, job.links.result, `Result ${size}`, `Result of job ${shortId(job.id)}`);
      card.querySelector("figcaption").append(" ", downloadButton(job));
    } else if (!done && job.links.preview && card.dataset.shown !== job.links.preview) {
      card.dataset.shown = job.links.preview;
      this.showFigure(card, job.links.preview, `Preview · step ${p.step}/${p.total}`, `Preview of job ${shortId(job.id)}`);
    }
    if (job.status === "failed") this.fail(card, job.error?.detail || "The job failed.");
  }

  showFigure(card, path, caption, alt) {
    const figure = card.querySelector(".job-image");
    const img = figure.querySelector("img");
    img.alt = alt;
    figure.querySelector("figcaption").textContent = caption;
    figure.hidden = false;
    showImage(img, path).catch(() => {});
  }

  fail(card, message) {
    const el = card.querySelector(".job-error");
    el.textContent = message;
    el.hidden = false;
  }

  async cancel(card) {
    const button = card.querySelector(".cancel");
    button.disabled = true;
    try {
      await api(`/v1/jobs/${card.dataset.jobId}/cancel`, { method: "POST" });
      card.querySelector(".badge").textContent = "canceling";
    } catch (err) {
      this.fail(card, describeError(err));
      button.disabled = false;
    }
  }
}

/** Finished renders with before/after and download, newest first. */
export class Gallery {
  constructor(list, more, emptyHint) {
    this.list = list;
    this.more = more;
    this.emptyHint = emptyHint;
    this.cursor = null;
    this.shown = new Set();
    more.addEventListener("click", () => this.load(false));
  }

  async refresh() {
    this.list.replaceChildren();
    this.shown.clear();
    this.cursor = null;
    await this.load(true);
  }

  async load(first) {
    const query = new URLSearchParams({ status: "succeeded", limit: "24" });
    if (!first && this.cursor) query.set("cursor", this.cursor);
    const page = await apiJson(`/v1/jobs?${query}`);
    for (const job of page.items) this.append(job, false);
    this.cursor = page.next_cursor;
    this.more.hidden = !this.cursor;
    this.emptyHint.hidden = this.list.children.length > 0;
  }

  /** Add one finished job (``atTop`` for a job that just finished). */
  append(job, atTop) {
    if (job.status !== "succeeded" || !RENDER_METHODS.has(job.method) || this.shown.has(job.id)) return;
    this.shown.add(job.id);
    const item = document.createElement("li");
    item.className = "shot";
    item.dataset.jobId = job.id;
    const compare = document.createElement("div");
    compare.className = "compare";
    const before = new Image();
    before.alt = `Content image of job ${shortId(job.id)}`;
    before.className = "before";
    const after = new Image();
    after.alt = `Result of job ${shortId(job.id)}`;
    after.className = "after";
    const slider = document.createElement("input");
    slider.type = "range";
    slider.min = "0";
    slider.max = "100";
    slider.value = "50";
    slider.setAttribute("aria-label", `Before and after, job ${shortId(job.id)}`);
    const reveal = () => (after.style.clipPath = `inset(0 0 0 ${slider.value}%)`);
    slider.addEventListener("input", reveal);
    reveal();
    compare.append(before, after, slider);
    const caption = document.createElement("div");
    caption.className = "shot-caption";
    const when = new Date(job.timings.finished_at || job.timings.created_at);
    const size = job.result?.width ? `${job.result.width}×${job.result.height}` : "";
    caption.innerHTML = `<b></b> <span class="meta"></span>`;
    caption.querySelector("b").textContent = job.method;
    caption.querySelector(".meta").textContent = `${size} · ${when.toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" })}`;
    caption.append(downloadButton(job));
    item.append(compare, caption);
    if (atTop) this.list.prepend(item);
    else this.list.append(item);
    this.emptyHint.hidden = true;
    showImage(after, job.links.result).catch(() => after.replaceWith(document.createTextNode("result not available")));
    if (job.spec.content) {
      showImage(before, `/v1/inputs/${job.spec.content}/content`).catch(() => before.remove());
    }
  }
}
