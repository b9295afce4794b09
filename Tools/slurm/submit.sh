#!/usr/bin/env bash
# Scans a run on a Slurm cluster: a job array of N shards, then a merge job after all of them.
#
#   Tools/slurm/submit.sh RUN N OUT_DIR [sbatch options for both jobs, e.g. --partition=cpu]
#
# Prints the two job ids. Writes OUT_DIR/summaries/shard-I-of-N.summary (one per task),
# OUT_DIR/logs/ (each job's output), then OUT_DIR/report.html, report.json and report.txt.
# Environment: GRADSCOPE, the binary's path as the compute nodes see it (default: gradscope on
# PATH); GRADSCOPE_SCAN_ARGS, more options for each shard's scan. Both are passed to the jobs.
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 RUN N OUT_DIR [sbatch options]" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
run=$(realpath "$1")
count=$2
mkdir -p "$3"
out=$(realpath "$3")
shift 3
case "$count" in
'' | *[!0-9]*)
    echo "$0: N must be a positive number of shards, not '$count'" >&2
    exit 2
    ;;
esac
if [ "$count" -lt 1 ]; then
    echo "$0: N must be at least 1" >&2
    exit 2
fi
mkdir -p "$out/summaries" "$out/logs"

# --parsable prints "id" or "id;cluster".
array=$(sbatch --parsable --array="0-$((count - 1))" --output="$out/logs/scan-%A_%a.out" "$@" \
    "$here/scan-array.sbatch" "$run" "$out/summaries")
array=${array%%;*}
merge=$(sbatch --parsable --dependency="afterok:$array" --kill-on-invalid-dep=yes --output="$out/logs/merge-%j.out" "$@" \
    "$here/merge.sbatch" "$out/summaries" "$out")
merge=${merge%%;*}
echo "scan array job: $array ($count tasks)"
echo "merge job: $merge (after all of $array succeed)"
echo "report: $out/report.html"
