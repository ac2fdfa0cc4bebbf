#!/usr/bin/env bash
# One command: set up .venv if needed, make PostgreSQL available for the tests (apt, when
# root and missing; otherwise the PostgreSQL tests skip with a reason), run the lint and type
# gate (ruff check and mypy, configured in pyproject.toml; no formatter is configured), then
# the whole suite. Fails on any lint or type finding, on any test failure, and when no test
# ran at all (pytest exit code 5).
set -euo pipefail
# shellcheck source=deploy/_bootstrap.sh
. "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"

echo "+ ruff check ." >&2
ruff check .
echo "+ mypy" >&2
mypy

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
    apt_install postgresql || echo "note: PostgreSQL is not installed and cannot be installed here; its tests will skip" >&2
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
