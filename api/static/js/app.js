// stylefarm studio: upload a content image, pick styles, paint masks, choose parameters
// (defaults from the API's spec schemas), submit, and watch jobs live.

import { ApiError, api, apiJson, getKey, setKey, showImage, uploadInput } from "./api.js";
import { refreshFarm } from "./farm.js";
import { Gallery, JobBoard, describeError } from "./jobs.js";
import { MaskPainter, REGION_COLOURS } from "./mask.js";
import { loadSchemas, propertySchema, readParams, renderParams, resolve, specSchema } from "./params.js";

const $ = (id) => document.getElementById(id);

const state = {
  method: "fast",
  content: null, // {id, width, height}
  fastModels: [],
  model: null, // the fast model whose thumbnails are shown
  picked: [], // fast: style indices
  styles: [], // other methods: {inputId, name, src, weight, maskId, maskName}
  active: 0, // masked: the region being painted
  thumbCache: new Map(), // style index -> input id of the uploaded thumbnail
};

let painter;
let board;
let gallery;

// --- messages -------------------------------------------------------------------------

function banner(text) {
  const el = $("banner");
  el.textContent = text || "";
  el.hidden = !text;
}

function formError(text) {
  const el = $("form-error");
  el.textContent = text || "";
  el.hidden = !text;
}

function busy(text) {
  $("submit-state").textContent = text || "";
}

// --- API key ---------------------------------------------------------------------------

function showKeyState() {
  $("key-state").textContent = getKey() ? "key saved in this browser" : "no key";
}

function initKey() {
  $("api-key").value = getKey();
  showKeyState();
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setKey($("api-key").value.trim());
    showKeyState();
    start();
  });
  $("key-forget").addEventListener("click", () => {
    setKey("");
    $("api-key").value = "";
    showKeyState();
    start();
  });
}

// --- navigation ------------------------------------------------------------------------

function route() {
  const view = (location.hash || "#studio").slice(1);
  for (const section of document.querySelectorAll("[data-view]")) section.hidden = section.dataset.view !== view;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view === "gallery") gallery.refresh().catch((err) => banner(describeError(err)));
  if (view === "farm") refreshFarm();
}

// --- content image ----------------------------------------------------------------------

async function setContent(file) {
  if (!file) return;
  formError("");
  busy("Uploading the content image…");
  try {
    const input = await uploadInput(file, file.name);
    state.content = { id: input.id, width: input.width, height: input.height };
    const img = $("content-img");
    img.src = URL.createObjectURL(file);
    await img.decode();
    $("content-view").hidden = false;
    $("content-drop").classList.add("small");
    $("content-meta").textContent = `${file.name} · ${input.width}×${input.height}`;
    painter.reset(input.width, input.height);
    busy("");
  } catch (err) {
    busy("");
    formError(describeError(err));
  }
}

function initContent() {
  $("content-file").addEventListener("change", (e) => setContent(e.target.files[0]));
  const drop = $("content-drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    setContent(e.dataTransfer.files[0]);
  });
}

// --- styles ----------------------------------------------------------------------------

function maxStyles() {
  const spec = specSchema(state.method);
  return (spec.properties.styles || spec.properties.regions)?.maxItems ?? 8;
}

function defaultWeight() {
  return resolve(specSchema("optimize").properties.styles.items.$ref).properties.weight.default;
}

async function loadModels() {
  const models = (await apiJson("/v1/models")).items;
  state.fastModels = models.filter((m) => m.kind === "fast" && Object.keys(m.links.thumbnails || {}).length);
  const builtin = propertySchema("fast", "model").default;
  state.model = state.fastModels.find((m) => m.name === builtin) || state.fastModels[0] || null;
  renderThumbs();
}

function renderThumbs() {
  const box = $("thumbs");
  box.replaceChildren();
  if (!state.model) {
    box.append(Object.assign(document.createElement("p"), {
      className: "hint",
      textContent: "No built-in styles yet: a worker registers them when it starts. Upload style images meanwhile.",
    }));
    return;
  }
  for (const [index, path] of Object.entries(state.model.links.thumbnails)) {
    const i = Number(index);
    const name = state.model.style_names[i] || `style ${i}`;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb";
    button.dataset.style = index;
    button.title = name;
    button.setAttribute("aria-pressed", "false");
    const img = new Image();
    img.alt = name;
    button.append(img);
    button.addEventListener("click", () => pickThumb(i, button));
    box.append(button);
    showImage(img, path).catch(() => {});
  }
  syncThumbs();
}

function syncThumbs() {
  for (const b of document.querySelectorAll("#thumbs .thumb")) {
    b.setAttribute("aria-pressed", String(state.method === "fast" && state.picked.includes(Number(b.dataset.style))));
  }
}

async function pickThumb(index, button) {
  formError("");
  if (state.method === "fast") {
    const at = state.picked.indexOf(index);
    if (at >= 0) state.picked.splice(at, 1);
    else state.picked.push(index);
    syncThumbs();
    renderChosen();
    return;
  }
  if (state.styles.length >= maxStyles()) return formError(`At most ${maxStyles()} styles.`);
  try {
    button.disabled = true;
    let inputId = state.thumbCache.get(index);
    if (!inputId) {
      const blob = await (await api(state.model.links.thumbnails[index])).blob();
      inputId = (await uploadInput(blob, `style-${index}.png`)).id;
      state.thumbCache.set(index, inputId);
    }
    addStyle({ inputId, name: state.model.style_names[index] || `style ${index}`, src: button.querySelector("img").src });
  } catch (err) {
    formError(describeError(err));
  } finally {
    button.disabled = false;
  }
}

function addStyle(style) {
  state.styles.push({ weight: defaultWeight(), maskId: null, maskName: null, ...style });
  state.active = state.styles.length - 1;
  renderChosen();
}

async function uploadStyles(files) {
  formError("");
  for (const file of files) {
    if (state.styles.length >= maxStyles()) return formError(`At most ${maxStyles()} styles.`);
    try {
      busy(`Uploading ${file.name}…`);
      const input = await uploadInput(file, file.name);
      addStyle({ inputId: input.id, name: file.name, src: URL.createObjectURL(file) });
    } catch (err) {
      formError(`${file.name}: ${describeError(err)}`);
    }
  }
  busy("");
}

async function uploadRegionMask(i, file) {
  try {
    busy(`Uploading ${file.name}…`);
    const input = await uploadInput(file, file.name);
    Object.assign(state.styles[i], { maskId: input.id, maskName: file.name });
    renderChosen();
  } catch (err) {
    formError(describeError(err));
  } finally {
    busy("");
  }
}

function renderChosen() {
  const box = $("chosen");
  box.replaceChildren();
  const masked = state.method === "masked";
  if (state.method === "fast") {
    if (state.picked.length) {
      const names = state.picked.map((i) => state.model.style_names[i] || `style ${i}`);
      box.append(Object.assign(document.createElement("p"), {
        className: "meta",
        textContent: `${state.picked.length > 1 ? "Mix of" : "Style:"} ${names.join(" + ")}`,
      }));
    }
    return;
  }
  const coverage = masked ? painter.coverage(REGION_COLOURS.slice(0, state.styles.length)) : [];
  state.styles.forEach((style, i) => {
    const row = document.createElement("div");
    row.className = "style-row";
    row.dataset.index = String(i);
    if (masked) {
      row.style.setProperty("--region", REGION_COLOURS[i]);
      row.classList.add("region");
      const pick = document.createElement("input");
      pick.type = "radio";
      pick.name = "region";
      pick.checked = i === state.active;
      pick.setAttribute("aria-label", `Paint region ${i + 1}`);
      pick.addEventListener("change", () => {
        state.active = i;
        painter.colour = REGION_COLOURS[i];
      });
      row.append(pick);
    }
    const img = new Image();
    img.src = style.src;
    img.alt = style.name;
    const name = document.createElement("span");
    name.className = "style-name";
    name.textContent = masked ? `Region ${i + 1}: ${style.name}` : style.name;
    const weight = document.createElement("input");
    weight.type = "number";
    weight.min = "0";
    weight.step = "any";
    weight.value = style.weight;
    weight.className = "weight";
    weight.setAttribute("aria-label", `Weight of ${style.name}`);
    weight.addEventListener("change", () => (style.weight = Number(weight.value)));
    row.append(img, name);
    if (state.method !== "masked") row.append(weight);
    if (masked) {
      const info = document.createElement("span");
      info.className = "meta";
      info.textContent = style.maskId ? `mask: ${style.maskName}` : `painted ${(coverage[i] * 100).toFixed(1)} %`;
      const file = document.createElement("label");
      file.className = "button-like small";
      file.textContent = style.maskId ? "Replace mask" : "Upload mask";
      const input = Object.assign(document.createElement("input"), { type: "file", accept: "image/*", className: "visually-hidden" });
      input.addEventListener("change", () => input.files[0] && uploadRegionMask(i, input.files[0]));
      file.append(input);
      row.append(info, file);
      if (style.maskId) {
        const drop = Object.assign(document.createElement("button"), { type: "button", className: "quiet small", textContent: "Paint instead" });
        drop.addEventListener("click", () => {
          Object.assign(style, { maskId: null, maskName: null });
          renderChosen();
        });
        row.append(drop);
      }
    }
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "quiet small";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove ${style.name}`);
    remove.addEventListener("click", () => {
      state.styles.splice(i, 1);
      state.active = Math.min(state.active, Math.max(0, state.styles.length - 1));
      renderChosen();
    });
    row.append(remove);
    box.append(row);
  });
  if (masked) painter.colour = REGION_COLOURS[state.active] || REGION_COLOURS[0];
}

// --- method ----------------------------------------------------------------------------

const HINTS = {
  fast: "Pick one style, or several to mix them.",
  adain: "Pick built-in styles or upload style images; weights blend them.",
  optimize: "Pick built-in styles or upload style images; weights blend them.",
  masked: "Each style is a region: paint where it goes over the content image, or upload a mask for it.",
};

function setMethod(method) {
  state.method = method;
  $("style-hint").textContent = HINTS[method];
  $("style-file").closest("label").hidden = method === "fast";
  $("painter").hidden = method !== "masked";
  $("mask-canvas").hidden = method !== "masked";
  renderParams($("params"), method);
  syncThumbs();
  renderChosen();
}

// --- submit ----------------------------------------------------------------------------

async function buildSpec() {
  if (!state.content) throw new Error("Upload a content image first.");
  const spec = { method: state.method, content: state.content.id, ...readParams($("params")) };
  if (state.method === "fast") {
    if (!state.picked.length) throw new Error("Pick a style.");
    spec.model = state.model.id;
    if (state.picked.length === 1) spec.style = state.picked[0];
    else spec.mix = Object.fromEntries(state.picked.map((i) => [i, 1]));
    return spec;
  }
  if (!state.styles.length) throw new Error("Pick or upload at least one style.");
  const refs = state.styles.map((s) => ({ image: s.inputId, weight: s.weight }));
  if (state.method !== "masked") return { ...spec, styles: refs };
  const painted = await painter.masks(REGION_COLOURS.slice(0, state.styles.length));
  const regions = [];
  for (const [i, style] of state.styles.entries()) {
    let mask = style.maskId;
    if (!mask) mask = (await uploadInput(painted[i], `mask-${i + 1}.png`)).id;
    regions.push({ style: { image: style.inputId }, mask });
  }
  return { ...spec, regions };
}

async function submit(e) {
  e.preventDefault();
  formError("");
  const button = $("submit");
  button.disabled = true;
  try {
    busy("Submitting…");
    const spec = await buildSpec();
    const job = await apiJson("/v1/jobs", {
      method: "POST",
      json: spec,
      headers: { "Idempotency-Key": crypto.randomUUID() },
    });
    board.add(job);
    busy(`Job ${job.id.slice(0, 8)} submitted.`);
  } catch (err) {
    busy("");
    formError(describeError(err));
  } finally {
    button.disabled = false;
  }
}

// --- start -----------------------------------------------------------------------------

function initPainter() {
  painter = new MaskPainter($("mask-canvas"));
  painter.onchange = () => state.method === "masked" && renderChosen();
  for (const radio of document.querySelectorAll("input[name=tool]")) {
    radio.addEventListener("change", () => (painter.tool = radio.value));
  }
  $("brush-size").addEventListener("input", (e) => (painter.size = Number(e.target.value)));
  $("mask-clear").addEventListener("click", () => painter.clear());
  $("mask-fill").addEventListener("click", () => painter.fill());
}

let started = null;

async function start() {
  banner("");
  board?.abort.abort();
  $("job-list").replaceChildren();
  board = new JobBoard($("job-list"), $("jobs-empty"), (job) => gallery.append(job, true));
  try {
    await loadSchemas();
    setMethod(document.querySelector("input[name=method]:checked").value);
    await Promise.all([loadModels(), board.loadActive()]);
    route();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      banner(`This farm needs an API key: ${err.message} Enter it at the top right.`);
      $("api-key").focus();
    } else {
      banner(`The API is not reachable: ${describeError(err)}`);
    }
  }
}

function main() {
  initKey();
  initPainter();
  initContent();
  gallery = new Gallery($("gallery"), $("gallery-more"), $("gallery-empty"));
  for (const radio of document.querySelectorAll("input[name=method]")) {
    radio.addEventListener("change", () => setMethod(radio.value));
  }
  $("style-file").addEventListener("change", (e) => {
    uploadStyles([...e.target.files]);
    e.target.value = "";
  });
  $("create-form").addEventListener("submit", submit);
  $("gallery-refresh").addEventListener("click", () => gallery.refresh().catch((err) => banner(describeError(err))));
  $("farm-refresh").addEventListener("click", refreshFarm);
  window.addEventListener("hashchange", route);
  setInterval(() => location.hash === "#farm" && !document.hidden && refreshFarm(), 10_000);
  started = start();
}

main();
export { started };
