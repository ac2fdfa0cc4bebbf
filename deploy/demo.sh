#!/usr/bin/env bash
# One command: set up .venv if needed, then run `stylefarm demo` (results in ./out/).
set -euo pipefail
# shellcheck source=deploy/_bootstrap.sh
. "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
exec python -c 'import sys; from shared.cli.demo import main; sys.exit(main(sys.argv[1:]))' "$@"
