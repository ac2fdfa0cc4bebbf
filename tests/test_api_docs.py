"""docs/api.md is generated from the API's OpenAPI schema (deploy/gen_api_docs.py) and must
say what the code says."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api_docs", REPO / "deploy" / "gen_api_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_api_page_is_what_the_schema_generates() -> None:
    """Given the app's OpenAPI schema now, when the page is generated again, then it equals the
    committed docs/api.md (else: run python deploy/gen_api_docs.py and commit the result)."""
    gen = generator()
    schema = gen.openapi_schema()
    assert (REPO / "docs" / "api.md").read_text() == gen.render(schema)


def test_page_documents_every_operation_and_schema() -> None:
    gen = generator()
    schema = gen.openapi_schema()
    page = gen.render(schema)
    for method, path, _op in gen.operations(schema):
        assert f"### {method.upper()} `{path}`" in page
    for name in schema["components"]["schemas"]:
        assert f"### {name}\n" in page
    assert "| `size` | integer (32..8192) | no | `512` |" in page  # a bound and a default from shared/jobs/specs.py
