"""End to end on a real one-node Slurm cluster (Debian's slurm-wlm and munge, started here as root):
the job array of Tools/slurm scans a sample run in shards, the merge job merges them, and the merged
findings and steps are those of a local `gradscope scan --format json` of the same run.

Skipped, with the reason on one line, only where no cluster can be started (not root, or the
packages are not installed: .ci/run installs them). The gradscope binary is GRADSCOPE_BINARY
(Tools/test.sh sets it), else the one `swift build --show-bin-path` names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from local_slurm import LocalSlurm, unavailable_reason  # noqa: E402

SLURM_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(SLURM_DIR))
SAMPLE = os.path.join(ROOT, "SampleCheckpoints", "explode-then-dead")
SHARDS = 3

_reason = unavailable_reason()
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")


def _binary() -> str:
    named = os.environ.get("GRADSCOPE_BINARY")
    if named:
        if not os.access(named, os.X_OK):
            pytest.fail(f"GRADSCOPE_BINARY={named} is not an executable file")
        return named
    try:
        bin_dir = subprocess.run(
            ["swift", "build", "--show-bin-path"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        pytest.fail(f"no gradscope binary: set GRADSCOPE_BINARY or build it (swift build): {error}")
    path = os.path.join(bin_dir, "gradscope")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no gradscope binary at {path}: run `swift build` first, or set GRADSCOPE_BINARY")
    return path


def _leftovers(cluster: LocalSlurm) -> list:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = cluster.leftover_pids()
        if not left:
            return []
        time.sleep(0.1)
    out = subprocess.run(["ps", "-o", "pid,args", "-p", ",".join(map(str, left))], capture_output=True, text=True).stdout
    return [out]


def test_cluster_runs_an_array_and_stops_what_it_started(tmp_path):
    """The harness itself: a 4-task array runs, every task sees its index and the count, and
    afterwards no daemon or step process of the cluster is left."""
    cluster = LocalSlurm()
    try:
        cluster.start()
        assert cluster.processes["slurmd"].poll() is None
        job = cluster.sbatch(
            "--array=0-3", f"--output={tmp_path}/out_%a.txt",
            "--wrap", "echo task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT")
        cluster.wait_until_idle(60)
        outputs = sorted((tmp_path / f"out_{i}.txt").read_text().strip() for i in range(4))
        assert outputs == [f"task {i} of 4" for i in range(4)], f"job {job}"
    finally:
        cluster.stop()
    assert all(process.poll() is not None for process in cluster.processes.values())
    assert _leftovers(cluster) == []
    assert not os.path.exists(cluster.dir)


# A stand-in for gradscope that checks the scripts' plumbing whatever the binary can do: the shard
# and the summary each task is given, exit code 1 (findings) as success, the merge of every summary
# in shard order, a failed task stopping the merge.
STAND_IN = """#!/bin/sh
cmd=$1; shift
case $cmd in
scan)
    run=$1; shift
    while [ $# -gt 0 ]; do case $1 in --shard) shard=$2; shift;; --summary) out=$2; shift;; esac; shift; done
    if [ "${shard%/*}" = "${FAIL_SHARD:-none}" ]; then echo "gradscope: $run: cannot read" >&2; exit 2; fi
    echo "$run $shard" > "$out"
    exit 1;;
merge)
    format=table; files=""
    while [ $# -gt 0 ]; do case $1 in --format) format=$2; shift;; *) files="$files ${1##*/}";; esac; shift; done
    echo "{\\"format\\": \\"$format\\", \\"files\\": \\"${files# }\\"}"
    exit 1;;
report)
    while [ $# -gt 0 ]; do if [ "$1" = -o ]; then echo "<html></html>" > "$2"; fi; shift; done;;
esac
"""


@pytest.mark.parametrize("failing", [None, 1])
def test_scripts_with_a_stand_in_binary(tmp_path, failing):
    stand_in = tmp_path / "gradscope"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    env = {"GRADSCOPE": str(stand_in)}
    if failing is not None:
        env["FAIL_SHARD"] = str(failing)
    out = tmp_path / "out"
    cluster = LocalSlurm()
    try:
        cluster.start()
        submit = subprocess.run(
            [os.path.join(SLURM_DIR, "submit.sh"), SAMPLE, "3", str(out), "--cpus-per-task=1"],
            env={**cluster.env, **env}, capture_output=True, text=True, timeout=60)
        assert submit.returncode == 0, submit.stderr
        assert submit.stdout.splitlines()[0].startswith("scan array job: ")
        cluster.wait_until_idle(60)
    finally:
        cluster.stop()
    assert _leftovers(cluster) == []
    made = {p.name: p.read_text().strip() for p in (out / "summaries").glob("*.summary")}
    shards = [i for i in range(3) if i != failing]
    assert made == {f"shard-{i}-of-3.summary": f"{os.path.realpath(SAMPLE)} {i}/3" for i in shards}
    if failing is None:
        merged = json.loads((out / "report.json").read_text())
        assert merged == {"format": "json", "files": " ".join(f"shard-{i}-of-3.summary" for i in range(3))}
        assert (out / "report.html").exists() and (out / "report.txt").exists()
    else:
        # The merge job never ran: afterok, and cancelled by --kill-on-invalid-dep.
        assert not (out / "report.json").exists() and not (out / "report.html").exists()
        logs = "".join(p.read_text() for p in (out / "logs").glob("scan-*_1.out"))
        assert "cannot read" in logs and "gradscope scan failed (exit 2)" in logs


def _findings(report: dict) -> list:
    return sorted(
        (f["kind"], f["severity"], f.get("tensor") or "", f.get("first_step") or -1, f.get("last_step") or -1)
        for f in report["findings"]
    )


def test_sharded_scan_on_slurm_matches_a_local_scan(tmp_path):
    binary = _binary()
    help_text = subprocess.run([binary, "scan", "--help"], capture_output=True, text=True).stdout
    if "--shard" not in help_text or "--summary" not in help_text:
        pytest.fail(
            f"{binary} has no `scan --shard I/N --summary OUT` (its `scan --help` lacks them): the Slurm job array "
            "needs the sharded scan and `gradscope merge`/`gradscope report` of summaries; build a gradscope that has them")
    env = {"GRADSCOPE": binary, "XDG_CACHE_HOME": str(tmp_path / "cache"), "NO_COLOR": "1"}

    local = subprocess.run(
        [binary, "scan", SAMPLE, "--format", "json", "--quiet"], capture_output=True, text=True,
        env={**os.environ, **env})
    assert local.returncode in (0, 1), local.stderr
    expected = json.loads(local.stdout)
    assert expected["findings"], "the sample run should have findings to compare"

    out = tmp_path / "out"
    cluster = LocalSlurm()
    try:
        cluster.start()
        submit = subprocess.run(
            # One CPU per task (the scripts ask for 4 by default; the test machine may have 2).
            [os.path.join(SLURM_DIR, "submit.sh"), SAMPLE, str(SHARDS), str(out), "--cpus-per-task=1"],
            env={**cluster.env, **env}, capture_output=True, text=True, timeout=60)
        assert submit.returncode == 0, submit.stderr
        lines = submit.stdout.splitlines()
        array = lines[0].split(":")[1].split()[0]
        merge = lines[1].split(":")[1].split()[0]
        assert array.isdigit() and merge.isdigit(), submit.stdout
        cluster.wait_until_idle(90)
        states = {**cluster.job_states(array), **cluster.job_states(merge)}
        logs = "\n".join(p.read_text() for p in sorted((out / "logs").glob("*.out")))
        assert (out / "report.json").exists(), f"no merged report; jobs: {states}\n{logs}"
    finally:
        cluster.stop()
    assert _leftovers(cluster) == []

    summaries = sorted(p.name for p in (out / "summaries").glob("*.summary"))
    assert summaries == [f"shard-{i}-of-{SHARDS}.summary" for i in range(SHARDS)]
    merged = json.loads((out / "report.json").read_text())
    assert merged["steps"] == expected["steps"]
    assert _findings(merged) == _findings(expected)
    assert (out / "report.html").stat().st_size > 0
    assert "<html" in (out / "report.html").read_text(errors="replace").lower()
