"""Write docs/api.md from the API's OpenAPI schema: ``python deploy/gen_api_docs.py [--check]``.

The page lists every documented endpoint (parameters, request body, responses) and every
schema (fields, types, bounds, defaults), all read from ``create_app().openapi()``, so it says
what the code says. ``--check`` writes nothing and exits 1 when docs/api.md differs from what
the code would generate; ``tests/test_api_docs.py`` runs the same comparison.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "api.md"
HTTP_METHODS = ("get", "post", "put", "patch", "delete")
LENGTH_LIMITS = (
    ("minLength", "min length"),
    ("maxLength", "max length"),
    ("minItems", "min items"),
    ("maxItems", "max items"),
    ("minProperties", "min entries"),
    ("maxProperties", "max entries"),
)


def openapi_schema() -> dict[str, Any]:
    """The schema of an app built from the settings' defaults (never the environment's)."""
    sys.path.insert(0, str(REPO))
    from api.main import create_app
    from shared.db import session as db_session
    from shared.settings import Settings

    with tempfile.TemporaryDirectory(prefix="stylefarm-api-docs-") as home:
        try:
            schema = create_app(Settings.model_construct(home=Path(home)), migrate=False).openapi()
        finally:
            db_session.configure(None)
    return schema


# --- text helpers ----------------------------------------------------------------------------


def prose(text: str | None) -> str:
    """A docstring as Markdown: ``literal`` -> `literal`, paragraphs kept."""
    if not text:
        return ""
    text = re.sub(r"``(.+?)``", r"`\1`", text.strip())
    return "\n".join(line.rstrip() for line in text.splitlines())


def cell(text: str | None) -> str:
    """Text for one table cell: one line, pipes escaped."""
    return " ".join(prose(text).split()).replace("|", "\\|")


def anchor(name: str) -> str:
    return "schema-" + re.sub(r"[^a-z0-9-]", "", name.lower())


def ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def literal(value: Any) -> str:
    """A JSON value as inline code."""
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else f"`{value}`" if value else '`""`'


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def bounds(schema: dict[str, Any]) -> list[str]:
    """The limits a schema puts on its value, as short phrases."""
    out = []
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        out.append(f"{_number(low)}..{_number(high)}")
    elif low is not None:
        out.append(f">= {_number(low)}")
    elif high is not None:
        out.append(f"<= {_number(high)}")
    if "exclusiveMinimum" in schema:
        out.append(f"> {_number(schema['exclusiveMinimum'])}")
    if "exclusiveMaximum" in schema:
        out.append(f"< {_number(schema['exclusiveMaximum'])}")
    for key, label in LENGTH_LIMITS:
        if key in schema:
            out.append(f"{label} {schema[key]}")
    if "pattern" in schema:
        out.append(f"pattern `{schema['pattern']}`")
    if "pattern" in schema.get("propertyNames", {}):
        out.append(f"keys `{schema['propertyNames']['pattern']}`")
    if "format" in schema:
        out.append(schema["format"])
    return out


def type_of(schema: dict[str, Any] | bool) -> str:
    """A schema as a short Markdown type: ``integer (32..2048)``, ``array of [StyleRef]``..."""
    if schema is True or schema == {}:
        return "any"
    if not isinstance(schema, dict):
        return "any"
    if "$ref" in schema:
        name = ref_name(schema["$ref"])
        return f"[{name}](#{anchor(name)})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"]
            nullable = len(options) < len(schema[key])
            text = " or ".join(type_of(o) for o in options) or "null"
            limits = bounds(schema)  # limits beside anyOf apply to every option
            return text + (f" ({', '.join(limits)})" if limits else "") + (" or null" if nullable else "")
    if "const" in schema:
        return literal(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(literal(v) for v in schema["enum"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array":
        text = f"array of {type_of(schema.get('items', {}))}"
    elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        text = f"object of {type_of(schema['additionalProperties'])}"
    else:
        text = str(kind)
    limits = bounds(schema)
    return f"{text} ({', '.join(limits)})" if limits else text


# --- the page --------------------------------------------------------------------------------


def endpoint_anchor(method: str, path: str) -> str:
    return f"{method}-" + re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in schema.get("paths", {}).items()
            for method, op in ops.items() if method in HTTP_METHODS]


def render_parameters(op: dict[str, Any]) -> list[str]:
    params = op.get("parameters", [])
    if not params:
        return []
    lines = ["**Parameters**", "", "| name | in | type | required | description |", "| --- | --- | --- | --- | --- |"]
    for p in params:
        schema = p.get("schema", {})
        default = f" Default {literal(schema['default'])}." if "default" in schema else ""
        desc = cell(p.get("description") or schema.get("description")) + default
        lines.append(f"| `{p['name']}` | {p['in']} | {cell(type_of(schema))} | {'yes' if p.get('required') else 'no'} "
                     f"| {desc.strip()} |")
    return [*lines, ""]


def render_body(op: dict[str, Any]) -> list[str]:
    body = op.get("requestBody")
    if not body:
        return []
    lines = []
    for media, content in body.get("content", {}).items():
        schema = content.get("schema", {})
        required = "required" if body.get("required") else "optional"
        what = type_of(schema)
        if "discriminator" in schema:
            what = f"one of {what.replace(' or ', ', ')}, chosen by `{schema['discriminator']['propertyName']}`"
        lines.append(f"**Request body** (`{media}`, {required}): {what}")
        lines.append("")
    return lines


def render_responses(op: dict[str, Any]) -> list[str]:
    lines = ["**Responses**", "", "| status | meaning | body |", "| --- | --- | --- |"]
    for status, response in op.get("responses", {}).items():
        content = response.get("content", {})
        bodies = [f"`{media}` {type_of(c.get('schema', {}))}".strip() for media, c in content.items()]
        headers = [f"header `{h}`" for h in response.get("headers", {})]
        lines.append(f"| {status} | {cell(response.get('description'))} | {cell('; '.join(bodies + headers)) or '-'} |")
    return [*lines, ""]


def render_schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f'<a id="{anchor(name)}"></a>', f"### {name}", ""]
    if schema.get("description"):
        lines += [prose(schema["description"]), ""]
    props = schema.get("properties")
    if not props:
        lines += [f"Type: {type_of({k: v for k, v in schema.items() if k not in ('title', 'description')})}", ""]
        return lines
    required = set(schema.get("required", []))
    lines += ["| field | type | required | default | description |", "| --- | --- | --- | --- | --- |"]
    for field, prop in props.items():
        default = literal(prop["default"]) if "default" in prop else ""
        lines.append(f"| `{field}` | {cell(type_of(prop))} | {'yes' if field in required else 'no'} "
                     f"| {cell(default)} | {cell(prop.get('description'))} |")
    if schema.get("additionalProperties") is False:
        lines += ["", "No other fields are accepted."]
    return [*lines, ""]


def render(schema: dict[str, Any]) -> str:
    info = schema.get("info", {})
    ops = operations(schema)
    lines = [
        f"# The {info.get('title', 'API')} API (version {info.get('version', '?')})",
        "",
        "<!-- Generated from the OpenAPI schema by `python deploy/gen_api_docs.py`: do not edit by hand. "
        "tests/test_api_docs.py fails when this page and the code disagree. -->",
        "",
        prose(info.get("description")),
        "",
        "A running API serves the same schema at `/openapi.json` and interactive pages at `/docs`. "
        "Every error is an RFC 9457 problem (`application/problem+json`, schema [Problem](#schema-problem)). "
        "With `STYLEFARM_API_KEYS` set, send a key as `Authorization: Bearer <key>` or `X-API-Key: <key>`. "
        "`GET /metrics` (Prometheus text, not in the schema) is described in [operations.md](operations.md).",
        "",
        "## Endpoints",
        "",
        "| method | path | summary |",
        "| --- | --- | --- |",
    ]
    for method, path, op in ops:
        lines.append(f"| {method.upper()} | [`{path}`](#{endpoint_anchor(method, path)}) | {cell(op.get('summary'))} |")
    lines.append("")
    for method, path, op in ops:
        lines += [f'<a id="{endpoint_anchor(method, path)}"></a>', f"### {method.upper()} `{path}`", ""]
        if op.get("summary"):
            lines += [f"*{cell(op['summary'])}*", ""]
        if op.get("description"):
            lines += [prose(op["description"]), ""]
        lines += render_parameters(op) + render_body(op) + render_responses(op)
    lines += ["## Schemas", ""]
    for name, definition in sorted(schema.get("components", {}).get("schemas", {}).items()):
        lines += render_schema(name, definition)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is out of date; write nothing")
    parser.add_argument("--output", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    text = render(openapi_schema())
    current = args.output.read_text() if args.output.exists() else ""
    if args.check:
        if current != text:
            print(f"{args.output} is out of date: run python deploy/gen_api_docs.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
