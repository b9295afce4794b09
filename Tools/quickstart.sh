#!/usr/bin/env bash
# Installs what gradscope needs on Debian/Ubuntu (libhdf5-dev, libdeflate-dev; numpy, h5py and
# pytest for the Python tools, in the virtual environment .venv/, see
# Tools/python-env.sh), builds it, and runs it on a bundled sample run.
set -euo pipefail
cd "$(dirname "$0")/.."
. Tools/python-env.sh

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
if ! pkg-config --exists hdf5 libdeflate 2>/dev/null; then
    $SUDO apt-get update
    $SUDO apt-get install -y libhdf5-dev libdeflate-dev pkg-config
fi
ensure_python_env

swift build -c release --product gradscope
BIN="$(swift build -c release --show-bin-path)/gradscope"
echo
echo "gradscope is built: $BIN"
echo
SAMPLE=SampleCheckpoints/ctr-plateau
if [ -d "$SAMPLE" ] && "$BIN" help scan >/dev/null 2>&1; then
    echo "\$ gradscope scan $SAMPLE"
    "$BIN" scan "$SAMPLE" || true
else
    FIRST=$(find SampleCheckpoints -name '*.h5' | sort | head -n 1)
    echo "\$ gradscope ls $FIRST"
    "$BIN" ls "$FIRST"
fi
