#!/usr/bin/env bash
# Runs every test: the Swift package's (swift test) and the Python tools' (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
swift test
python3 -m pytest -q Tools
