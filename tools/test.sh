#!/usr/bin/env bash
# Run the test suite on a fresh machine: installs Mosquitto and tshark (Debian packages) when missing, makes a
# virtualenv in .venv with the package and its test extras, runs the gates (ruff lint and format,
# mypy, the import-linter contracts), then pytest with coverage and its floor (pyproject.toml, [tool.coverage.report]). Arguments go to
# pytest (e.g. -m "not slow" for the quick part, or a test path); GATES=0 skips the gates.
# pytest runs in TEST_WORKERS worker processes (pytest-xdist; default 2, 0 runs in this process).
set -euo pipefail
cd "$(dirname "$0")/.."

have_mosquitto() { command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; }
have_tshark() { command -v tshark >/dev/null 2>&1; }
if ! have_mosquitto || ! have_tshark; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    # tshark's package asks whether non-root users may capture: answer no, without a prompt
    echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections 2>/dev/null || true
    PKGS="mosquitto mosquitto-clients tshark"
    $SUDO apt-get install -y -qq $PKGS >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $PKGS >/dev/null; }
    have_mosquitto || { echo "tools/test.sh: could not install mosquitto" >&2; exit 1; }
    have_tshark || { echo "tools/test.sh: could not install tshark" >&2; exit 1; }
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"

# On x86 with AVX-512 numpy dispatches SIMD float64 exp and log of its own, a few ulps from the C
# library's (and numba's): the compiled kernels' equality tests compare bit for bit against numpy
# with that dispatch off, where this numpy accepts the setting (docs/performance.md, "Compiled tick")
NPY_OFF="X86_V4 AVX512_ICL AVX512_SPR"
if [ -z "${NPY_DISABLE_CPU_FEATURES+x}" ] \
    && NPY_DISABLE_CPU_FEATURES="$NPY_OFF" .venv/bin/python -W error -c "import numpy" 2>/dev/null; then
    export NPY_DISABLE_CPU_FEATURES="$NPY_OFF"
fi

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
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --cov --cov-report=term:skip-covered "$@"
