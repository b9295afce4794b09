#!/usr/bin/env bash
# Builds the libFuzzer target and fuzzes gradscope's HDF5 reader and layout
# detection for SECONDS. Seeds (never modified) are copied into a temporary
# working corpus; crashes, hangs and out-of-memory inputs are written to a
# temporary artifacts directory, then summarised by triage.py.
#
# Usage: Tools/fuzz/run-fuzz.sh SECONDS [more libFuzzer flags...]
#
# Environment:
#   FUZZ_TARGET       what is fuzzed: hdf5 (default), safetensors, torch (torch.save
#                     zip archives) or pickle (their data.pkl, in a well-formed zip)
#   FUZZ_JOBS         fuzzing processes in parallel (default 1). Fuzzing runs in
#                     libFuzzer's fork mode, so it goes on after a crash inside
#                     libhdf5 and collects every distinct one.
#   FUZZ_SANITIZERS   the -sanitize= value (default fuzzer,address)
#   FUZZ_EXTRA_SEEDS  colon-separated directories of extra seeds, e.g.
#                     ../shared/corpus; copied, never written
#   FUZZ_WORK         working directory (default: a new directory under $TMPDIR or /tmp)
#   FUZZ_NO_BUILD=1   use the binary already built
set -euo pipefail

if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS [libFuzzer flags...]" >&2
    exit 2
fi
seconds=$1
shift

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
jobs=${FUZZ_JOBS:-1}
target=${FUZZ_TARGET:-hdf5}
case "$target" in
    hdf5 | safetensors | torch | pickle) ;;
    *) echo "FUZZ_TARGET must be hdf5, safetensors, torch or pickle" >&2; exit 2 ;;
esac
export GRADSCOPE_FUZZ_TARGET=$target
sanitizers=${FUZZ_SANITIZERS:-fuzzer,address}
binary="$here/.build/release/gradscope-fuzz"

if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
    swift build -c release --package-path "$here" --scratch-path "$here/.build" \
        -Xswiftc -sanitize="$sanitizers" -Xswiftc -parse-as-library >&2
fi

work=${FUZZ_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gradscope-fuzz.XXXXXX")}
corpus="$work/corpus"
artifacts="$work/artifacts"
mkdir -p "$corpus" "$artifacts"

# Seeds: the sample runs, the small fixtures in seeds/, and any extra
# directories, copied under unique names so the originals are never touched.
copy_seeds() {
    local source=$1 prefix=$2
    [ -d "$source" ] || return 0
    find "$source" -type f -print0 | while IFS= read -r -d '' file; do
        local relative=${file#"$source"/}
        cp -- "$file" "$corpus/$prefix-${relative//\//_}"
    done
}
if [ "$target" = hdf5 ]; then
    copy_seeds "$root/SampleCheckpoints" samples
    copy_seeds "$here/seeds" fixtures
else
    copy_seeds "$here/seeds/$target" fixtures
fi
if [ "$target" = safetensors ] || [ "$target" = torch ]; then
    copy_seeds "$root/SampleCheckpoints/trainer-high-lr" samples
fi
if [ -n "${FUZZ_EXTRA_SEEDS:-}" ]; then
    IFS=: read -r -a extra <<<"$FUZZ_EXTRA_SEEDS"
    for directory in "${extra[@]}"; do
        copy_seeds "$directory" "extra-$(basename "$directory")"
    done
fi
# The sample runs' README and the like are harmless seeds, but keep the target's files only.
case "$target" in
    hdf5)
        find "$corpus" -type f ! -name '*.h5' ! -name '*.hdf5' ! -name '*.keras' ! -name '*.h5ad' \
            ! -name '*.mat' ! -name '*.nc' ! -name '*.net' -delete ;;
    safetensors) find "$corpus" -type f ! -name '*.safetensors' -delete ;;
    torch) find "$corpus" -type f ! -name '*.pt' ! -name '*.pth' ! -name '*.bin' ! -name '*.ckpt' -delete ;;
    pickle) find "$corpus" -type f ! -name '*.pkl' -delete ;;
esac
echo "seeds: $(find "$corpus" -type f | wc -l) files in $corpus" >&2
echo "artifacts: $artifacts" >&2

# allocator_may_return_null: a huge allocation requested by libhdf5 from a
# corrupt size field fails the way it does in production (NULL), not as a report.
# handle_abort: glibc's fortify checks (inside libhdf5) abort; report where.
# SWIFT_BACKTRACE: the Swift runtime's own crash handler would race the sanitizer's.
export ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=1:detect_leaks=0:handle_abort=1}
export SWIFT_BACKTRACE=enable=no
status=0
"$binary" "$corpus" \
    -fork="$jobs" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=131072 \
    -dict="$here/$target.dict" -detect_leaks=0 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$@" 2>&1 | tee "$work/fuzz.log" >&2 || status=$?

echo "fuzzing finished (status $status); log: $work/fuzz.log" >&2
if compgen -G "$artifacts/*" >/dev/null && [ "$target" != hdf5 ]; then
    echo "saved inputs in $artifacts (re-run one with GRADSCOPE_FUZZ_TARGET=$target $binary FILE)" >&2
    ls -l "$artifacts" >&2
elif compgen -G "$artifacts/*" >/dev/null; then
    python3 "$here/triage.py" "$artifacts" | tee "$work/triage.tsv"
else
    echo "no crashes, hangs or out-of-memory inputs" >&2
fi
