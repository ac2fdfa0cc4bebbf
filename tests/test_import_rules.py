"""The import rules of docs/architecture.md, read statically from every module's source with ``ast``.

Every import counts: at module level, inside functions (lazy), under ``if TYPE_CHECKING:``, and
``importlib.import_module("...")`` with a literal name. ``from package import name`` counts as
importing ``package`` and ``package.name`` (the name may be a submodule).

Besides the per-file rules, the modules the API loads when it starts (the eager imports of
``api/**``, followed through our own modules and their parent packages) must not reach torch,
the engine or the worker; the subprocess test in tests/api/test_api_platform.py checks the same at
run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "worker", "shared")

SERVICES = ("sqlalchemy", "redis", "boto3", "botocore", "celery", "kombu", "fastapi")
ENGINE_ONLY = ("torch", "torchvision", "onnx", "onnxruntime", "scipy", "skimage", "sklearn", "cv2")


@dataclass(frozen=True)
class Rule:
    name: str
    files: tuple[str, ...]  # globs relative to the repository root
    forbidden: tuple[str, ...]  # module names; each forbids itself and its submodules


RULES = [
    Rule(
        "the engine is pure: no services, no SQL/storage/broker rooms, no job writer, no worker or API",
        ("shared/engine/**/*.py",),
        (*SERVICES, "shared.db", "shared.storage", "shared.broker", "shared.jobs.store", "worker", "api"),
    ),
    Rule(
        "the API never imports torch, the engine, its libraries or the worker",
        ("api/**/*.py",),
        (*ENGINE_ONLY, "shared.engine", "worker"),
    ),
    Rule(
        "job status and specs have no SQL (the API imports them without the writer)",
        ("shared/jobs/status.py", "shared/jobs/specs.py"),
        ("sqlalchemy",),
    ),
    Rule("shared/ is below the roles: never the worker or the API", ("shared/**/*.py",), ("worker", "api")),
    Rule(
        "the Python client needs httpx and pydantic only: no torch, no services, no images, no SQL",
        ("shared/client/**/*.py",),
        (
            *ENGINE_ONLY,
            *SERVICES,
            "PIL",
            "shared.engine",
            "shared.db",
            "shared.storage",
            "shared.broker",
            "shared.jobs.store",
            "shared.cli",
        ),
    ),
    Rule("the worker never imports the API", ("worker/**/*.py",), ("api",)),
]


@dataclass(frozen=True)
class Import:
    module: str
    line: int
    eager: bool  # runs when the importing module is imported (not inside a function)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(module: str | None, level: int, importer: str, is_package: bool) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(source: str, importer: str = "", is_package: bool = False) -> list[Import]:
    """Every module ``source`` imports, with its line and whether the import is eager."""
    found: list[Import] = []

    def visit(node: ast.AST, eager: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno, eager) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            package = _absolute(node.module, node.level, importer, is_package)
            found.append(Import(package, node.lineno, eager))
            found.extend(
                Import(f"{package}.{alias.name}", node.lineno, eager) for alias in node.names if alias.name != "*"
            )
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append(Import(node.args[0].value, node.lineno, eager))
        inner = eager and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(source), True)
    return found


def is_within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def project_files() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


def _imports_by_module() -> dict[str, list[Import]]:
    return {
        module_name(path): imports_of(path.read_text(), module_name(path), path.name == "__init__.py")
        for path in project_files()
    }


IMPORTS = _imports_by_module()


def files_of(rule: Rule) -> list[Path]:
    return sorted({path for pattern in rule.files for path in REPO.glob(pattern)})


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.files[0])
def test_given_rule_expect_no_file_imports_what_it_forbids(rule: Rule) -> None:
    files = files_of(rule)
    assert files, f"no file matches {rule.files}: the rule checks nothing"
    violations = [
        f"{path.relative_to(REPO)}:{imp.line} imports {imp.module}"
        for path in files
        for imp in IMPORTS[module_name(path)]
        if any(is_within(imp.module, forbidden) for forbidden in rule.forbidden)
    ]
    assert not violations, f"{rule.name}:\n" + "\n".join(violations)


def eager_closure(roots: list[str]) -> dict[str, str]:
    """Every module imported when ``roots`` are imported (eager imports only; our modules followed,
    parent packages included), each with the chain that first reached it."""
    seen: dict[str, str] = {}
    todo = [(root, root) for root in roots]
    while todo:
        module, chain = todo.pop()
        if module in seen:
            continue
        seen[module] = chain
        parts = module.split(".")
        for i in range(1, len(parts)):  # importing a.b.c runs a and a.b first
            todo.append((".".join(parts[:i]), chain))
        for imp in IMPORTS.get(module, []):
            if imp.eager and (imp.module in IMPORTS or imp.module.split(".")[0] not in PACKAGES):
                todo.append((imp.module, f"{chain} -> {imp.module}"))
    return seen


def test_given_api_start_expect_no_engine_library_reached_through_shared_modules() -> None:
    api_modules = [name for name in IMPORTS if is_within(name, "api")]
    reached = eager_closure(api_modules)
    assert "sqlalchemy" in reached and "shared.jobs.store" in reached  # the closure does follow imports
    forbidden = (*ENGINE_ONLY, "shared.engine", "worker")
    bad = sorted(
        f"{module}  ({chain})" for module, chain in reached.items() if any(is_within(module, f) for f in forbidden)
    )
    assert not bad, "the API's start-up imports reach:\n" + "\n".join(bad)


def test_given_status_and_specs_expect_no_sql_reached_on_import() -> None:
    reached = eager_closure(["shared.jobs.status", "shared.jobs.specs"])
    bad = sorted(f"{module}  ({chain})" for module, chain in reached.items() if is_within(module, "sqlalchemy"))
    assert not bad, "importing shared.jobs.status/specs reaches SQL:\n" + "\n".join(bad)


def test_given_the_client_expect_no_engine_service_or_image_library_reached_on_import() -> None:
    reached = eager_closure(["shared.client"])
    assert "httpx" in reached and "shared.jobs.specs" in reached  # the closure does follow imports
    forbidden = (*ENGINE_ONLY, *SERVICES, "PIL", "shared.engine", "shared.db", "shared.storage", "shared.broker")
    bad = sorted(
        f"{module}  ({chain})" for module, chain in reached.items() if any(is_within(module, f) for f in forbidden)
    )
    assert not bad, "importing shared.client reaches:\n" + "\n".join(bad)


# --- the scanner itself ------------------------------------------------------------------


def test_given_lazy_and_dynamic_imports_expect_scanner_reports_them_not_eager() -> None:
    source = (
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import torch\n"
        "def render():\n"
        "    from shared.engine import run_job\n"
        "    importlib.import_module('worker.tasks')\n"
        "    return lambda: __import__('x')\n"
    )
    found = {imp.module: (imp.line, imp.eager) for imp in imports_of(source)}
    assert found["os"] == (1, True)
    assert found["torch"] == (4, True)  # TYPE_CHECKING blocks count as well
    assert found["shared.engine"] == (6, False) and found["shared.engine.run_job"] == (6, False)
    assert found["worker.tasks"] == (7, False)


def test_given_relative_import_expect_absolute_module() -> None:
    found = {imp.module for imp in imports_of("from . import status\nfrom ..db import orm\n", "shared.jobs.store")}
    assert {"shared.jobs", "shared.jobs.status", "shared.db", "shared.db.orm"} <= found
