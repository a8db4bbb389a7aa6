#!/usr/bin/env bash
# Run the test suite on a fresh machine: installs Mosquitto (Debian package) when missing, makes a
# virtualenv in .venv with the package and its test extras, then runs pytest with any arguments given.
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
exec .venv/bin/python -m pytest "$@"
