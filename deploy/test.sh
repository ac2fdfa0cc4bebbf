#!/usr/bin/env bash
# One command: set up .venv if needed, make PostgreSQL and chromium available for the tests
# (apt, when root and missing), run the lint and type gate (ruff check, mypy; configured in
# pyproject.toml), then the whole suite. Fails on any lint or type finding, on any test failure,
# when no test ran at all (pytest exit code 5), and when PostgreSQL or the S3 server (moto)
# cannot be started: the tests that need them fail instead of skipping
# (STYLEFARM_ALLOW_MISSING_BACKENDS=1 makes them skip, for a partial local run only).
set -euo pipefail
# shellcheck source=deploy/_bootstrap.sh
. "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"

echo "+ ruff check ." >&2
ruff check .
echo "+ mypy" >&2
mypy

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
    apt_install postgresql || echo "warning: PostgreSQL is not installed and cannot be installed here; its tests will FAIL (STYLEFARM_ALLOW_MISSING_BACKENDS=1 skips them)" >&2
fi

# The studio's browser test (tests/e2e/test_e2e_studio.py) drives Debian's chromium through
# Playwright; browsers are never downloaded by Playwright itself.
if ! command -v chromium >/dev/null; then
    apt_install chromium fonts-liberation || echo "note: chromium is not installed and cannot be installed here; the studio browser test will skip" >&2
fi

set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
