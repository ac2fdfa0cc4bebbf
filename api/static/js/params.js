// Parameter fields built from the job spec JSON schemas the API publishes in its OpenAPI
// document (components.schemas.FastSpec, ...). Defaults, bounds, choices and help texts all
// come from there, i.e. from shared/jobs/specs.py; this file only decides which fields a
// person sees first.

import { apiJson } from "./api.js";

export const SPEC_NAMES = { fast: "FastSpec", adain: "AdainSpec", optimize: "OptimizeSpec", masked: "MaskedSpec" };

const GATYS_MAIN = ["size", "steps", "optimizer", "style_weight", "preserve_color"];
const GATYS_MORE = ["content_weight", "tv_weight", "learning_rate", "init", "style_scale", "levels", "seed"];

/** Which fields each method shows: [main, more (folded)]. */
const FIELDS = {
  fast: [["size", "strength", "preserve_color"], []],
  adain: [["size", "alpha", "preserve_color"], ["style_size"]],
  optimize: [GATYS_MAIN, GATYS_MORE],
  masked: [["mode", ...GATYS_MAIN], ["feather", ...GATYS_MORE]],
};

let schemas = null;

/** The spec schemas (components.schemas of /openapi.json), fetched once. */
export async function loadSchemas() {
  if (!schemas) schemas = (await apiJson("/openapi.json")).components.schemas;
  return schemas;
}

export function specSchema(method) {
  return schemas[SPEC_NAMES[method]];
}

/** The schema of a property, with ``anyOf: [X, null]`` unwrapped (``nullable`` set). */
export function propertySchema(method, name) {
  const prop = specSchema(method).properties[name];
  if (!prop || !prop.anyOf) return prop;
  const inner = prop.anyOf.find((s) => s.type !== "null") || {};
  return { ...inner, ...prop, anyOf: undefined, nullable: prop.anyOf.some((s) => s.type === "null") };
}

/** ``$ref`` -> its schema (e.g. the StyleRef of ``styles.items``). */
export function resolve(ref) {
  return schemas[ref.split("/").pop()];
}

function label(name, prop) {
  return prop.title || name.replace(/_/g, " ");
}

function field(method, name) {
  const prop = propertySchema(method, name);
  if (!prop) return null;
  const id = `param-${name}`;
  const wrap = document.createElement("div");
  wrap.className = "field";
  const lab = document.createElement("label");
  lab.htmlFor = id;
  lab.textContent = label(name, prop);
  let input;
  if (prop.enum) {
    input = document.createElement("select");
    for (const value of prop.enum) input.append(new Option(value, value, false, value === prop.default));
  } else if (prop.type === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = Boolean(prop.default);
    wrap.classList.add("check");
  } else if (prop.type === "integer" || prop.type === "number") {
    input = document.createElement("input");
    input.type = "number";
    input.step = prop.type === "integer" ? "1" : "any";
    if (prop.minimum !== undefined) input.min = prop.minimum;
    if (prop.maximum !== undefined) input.max = prop.maximum;
    if (prop.exclusiveMinimum !== undefined) input.min = prop.exclusiveMinimum;
    input.value = prop.default ?? "";
    input.required = !prop.nullable;
    if (prop.nullable) input.placeholder = "none";
  } else {
    input = document.createElement("input");
    input.type = "text";
    input.value = prop.default ?? "";
  }
  input.id = id;
  input.name = name;
  input.dataset.kind = prop.enum ? "enum" : prop.type;
  input.dataset.exclusiveMin = prop.exclusiveMinimum ?? "";
  if (prop.nullable) input.dataset.nullable = "1";
  wrap.append(lab, input);
  if (prop.description) {
    const hint = document.createElement("small");
    hint.id = `${id}-hint`;
    hint.textContent = prop.description;
    input.setAttribute("aria-describedby", hint.id);
    wrap.append(hint);
  }
  return wrap;
}

/** Fill ``container`` with the fields of ``method``. */
export function renderParams(container, method) {
  const [main, more] = FIELDS[method];
  container.replaceChildren(...main.map((n) => field(method, n)).filter(Boolean));
  const extra = more.map((n) => field(method, n)).filter(Boolean);
  if (extra.length) {
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "More parameters";
    const grid = document.createElement("div");
    grid.className = "params";
    grid.append(...extra);
    details.append(summary, grid);
    container.append(details);
  }
}

/** The values of the fields in ``container`` as spec members; throws with a readable
 *  message when a field is out of its bounds. */
export function readParams(container) {
  const out = {};
  for (const input of container.querySelectorAll("[name]")) {
    const name = input.name;
    if (input.dataset.kind === "boolean") {
      out[name] = input.checked;
    } else if (input.dataset.kind === "integer" || input.dataset.kind === "number") {
      if (input.value === "" && input.dataset.nullable) {
        out[name] = null;
        continue;
      }
      const excl = input.dataset.exclusiveMin;
      if (!input.checkValidity() || input.value === "" || (excl !== "" && Number(input.value) <= Number(excl))) {
        const lab = container.querySelector(`label[for="${input.id}"]`)?.textContent || name;
        const range = [input.min && `min ${excl !== "" ? ">" : ""}${input.min}`, input.max && `max ${input.max}`];
        throw new Error(`${lab}: enter a ${input.dataset.kind === "integer" ? "whole " : ""}number (${range.filter(Boolean).join(", ")}).`);
      }
      out[name] = Number(input.value);
    } else {
      out[name] = input.value;
    }
  }
  return out;
}
