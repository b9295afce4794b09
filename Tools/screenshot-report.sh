#!/usr/bin/env bash
# Renders `gradscope report` for a run and screenshots it with headless Chromium,
# to check the page as a browser draws it.
#
#   Tools/screenshot-report.sh RUN [OUT.png]
#
# RUN      a run directory or checkpoint (e.g. SampleCheckpoints/ctr-plateau)
# OUT.png  the screenshot (default: report-<run name>.png in the current directory)
#
# Environment:
#   GRADSCOPE  the gradscope binary (default: .build/debug/gradscope)
#   CHROMIUM   the browser (default: chromium, chromium-browser or google-chrome, the first found)
#   WIDTH, HEIGHT  the window in pixels (default 1400 x 3000)
#   SLICE      cut the screenshot into pieces this many pixels high as well, OUT-1.png, OUT-2.png, ...
#              (needs ImageMagick: CONVERT names its convert, default convert), for viewers that shrink tall images
#   KEEP_HTML  a path to keep the rendered report at (default: a temporary file, removed)
#
# Needs chromium (Debian: apt-get install -y chromium). Writes nothing but the PNGs (and KEEP_HTML).
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
run="$1"
name="$(basename "${run%/}")"
out="${2:-report-$name.png}"
gradscope="${GRADSCOPE:-.build/debug/gradscope}"
width="${WIDTH:-1400}"
height="${HEIGHT:-3000}"

browser="${CHROMIUM:-}"
if [[ -z "$browser" ]]; then
    for candidate in chromium chromium-browser google-chrome; do
        if command -v "$candidate" >/dev/null 2>&1; then browser="$candidate"; break; fi
    done
fi
if [[ -z "$browser" ]]; then
    echo "screenshot-report: no chromium found (apt-get install -y chromium, or set CHROMIUM)" >&2
    exit 2
fi
if [[ ! -x "$gradscope" ]]; then
    echo "screenshot-report: $gradscope not found: build first (swift build) or set GRADSCOPE" >&2
    exit 2
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
html="${KEEP_HTML:-$workdir/report.html}"

status=0
"$gradscope" report "$run" -o "$html" --quiet || status=$?
if [[ $status -ge 2 ]]; then
    echo "screenshot-report: gradscope report failed (exit $status)" >&2
    exit "$status"
fi
echo "report: $(wc -c <"$html") bytes, gradscope exit $status"

absolute="$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"

shoot() {
    local target="$1" png="$2"
    # A private profile directory keeps the run from touching the user's browser profile.
    "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
        --user-data-dir="$workdir/profile" --window-size="$width,$height" \
        --screenshot="$png" "$target" >/dev/null 2>&1
    echo "screenshot: $png"
}

shoot "file://$absolute" "$out"
if [[ -n "${SLICE:-}" ]]; then
    convert="${CONVERT:-convert}"
    if ! command -v "$convert" >/dev/null 2>&1; then
        echo "screenshot-report: SLICE needs ImageMagick's convert (apt-get install -y imagemagick, or set CONVERT)" >&2
        exit 2
    fi
    "$convert" "$out" -crop "${width}x${SLICE}" +repage -scene 1 "${out%.png}-%d.png"
    echo "slices: ${out%.png}-*.png"
fi
