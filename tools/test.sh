#!/usr/bin/env bash
# Run the test suite on a fresh machine: installs Mosquitto (Debian package) when missing, makes a
# virtualenv in .venv with the package and its test extras, runs the gates (ruff lint and format,
# mypy, the import-linter contracts), then pytest with coverage and its floor (pyproject.toml, [tool.coverage.report]). Arguments go to
# pytest (e.g. -m "not slow" for the quick part, or a test path); GATES=0 skips the gates.
set -euo pipefail
cd "$(dirname "$0")/.."

have_mosquitto() { command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; }
if ! have_mosquitto; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq mosquitto mosquitto-clients >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; }
    have_mosquitto || { echo "tools/test.sh: could not install mosquitto" >&2; exit 1; }
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"

if [ "${GATES:-1}" != 0 ]; then
    echo "== ruff (lint, format)"
    .venv/bin/ruff check mcm_firmware tests tools
    .venv/bin/ruff format --check mcm_firmware tests tools
    echo "== mypy"
    .venv/bin/mypy
    echo "== import contracts"
    .venv/bin/lint-imports --no-cache | grep -E "kept|broken" | tail -1
    .venv/bin/lint-imports --no-cache >/dev/null
fi
echo "== pytest"
rm -f .coverage .coverage.*
exec .venv/bin/python -m pytest --cov --cov-report=term:skip-covered "$@"
