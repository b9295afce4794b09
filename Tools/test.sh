#!/usr/bin/env bash
# Runs every test: the formatting check, the Swift package's tests (swift test), then pytest for the Python tools
# (in the virtual environment .venv/, made if missing: see Tools/python-env.sh). Among those, Tools/wheel/tests
# builds gradscope in release mode, packs it into a wheel and installs that in a fresh environment (minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
. Tools/python-env.sh
# The code is kept formatted by .swift-format (swift format format --in-place --recursive Sources Tests Package.swift).
if swift format --version >/dev/null 2>&1; then
    swift format lint --strict --recursive --parallel Sources Tests Package.swift
else
    echo "test.sh: swift format is not in this toolchain; formatting not checked"
fi
swift test
ensure_python_env
ensure_test_tools
# The binary swift test built, for the Python tests that run it (Tools/slurm/tests, gradscope-export's watch).
GRADSCOPE_BINARY="${GRADSCOPE_BINARY:-$(swift build --show-bin-path)/gradscope}"
export GRADSCOPE_BINARY
"$PYTHON" -m pytest -q Tools
