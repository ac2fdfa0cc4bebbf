"""CI runs every backend: a backend the harness cannot start fails the tests that need it,
unless a developer explicitly allows a partial run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import ALLOW_MISSING_BACKENDS_ENV, Unavailable, missing_backend

REPO = Path(__file__).resolve().parents[1]


def test_given_missing_backend_expect_failure_not_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_MISSING_BACKENDS_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL could not be started: no initdb"):
        missing_backend("PostgreSQL", Unavailable("no initdb"))


@pytest.mark.parametrize("value", ["0", "", "yes"])
def test_given_anything_but_1_expect_failure(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ALLOW_MISSING_BACKENDS_ENV, value)
    with pytest.raises(pytest.fail.Exception):
        missing_backend("The S3 server (moto)", "not installed")


def test_given_partial_run_allowed_expect_skip_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_MISSING_BACKENDS_ENV, "1")
    with pytest.raises(pytest.skip.Exception, match=f"not installed.*{ALLOW_MISSING_BACKENDS_ENV}=1"):
        missing_backend("The S3 server (moto)", "not installed")


@pytest.mark.slow
@pytest.mark.parametrize(("allow", "expected_rc", "outcome"), [("", 1, "1 error"), ("1", 0, "1 skipped")])
def test_given_no_postgresql_binaries_expect_postgres_tests_fail_unless_allowed(
    tmp_path: Path, allow: str, expected_rc: int, outcome: str
) -> None:
    # given a machine where the harness finds no PostgreSQL (a plugin hides the binaries)
    (tmp_path / "no_postgres.py").write_text("import harness\nharness.find_pg_bindir = lambda: None\n")
    env = {k: v for k, v in os.environ.items() if k not in ("STYLEFARM_TEST_POSTGRES_URL", ALLOW_MISSING_BACKENDS_ENV)}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO / "tests"), str(REPO)])
    if allow:
        env[ALLOW_MISSING_BACKENDS_ENV] = allow
    # when a PostgreSQL test runs
    test = "tests/db/test_db_timeouts.py"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no_postgres", "-p", "no:cacheprovider", "-q", "-rfs", test],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # expect it to fail (an error in its fixture) with the reason, or, allowed, to skip with it
    assert run.returncode == expected_rc, run.stdout[-3000:] + run.stderr[-3000:]
    assert outcome in run.stdout and "PostgreSQL could not be started" in run.stdout
