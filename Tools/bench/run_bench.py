"""gradscope benchmark: one command, prints a table and the ratios.

    python3 Tools/bench/run_bench.py                  # everything, default sizes
    python3 Tools/bench/run_bench.py --dir /tmp/gsbench --reps 5
    python3 Tools/bench/run_bench.py --big-tensor     # only the 1 GiB-tensor memory run
    python3 Tools/bench/run_bench.py --quick          # 1 peer run per variant, 150/300 saves in the many-saves run
    python3 Tools/bench/run_bench.py --many           # only the many-saves workload (--many-saves N, --many-params P)

What it does:
  1. builds gradscope in release mode as the wheel ships it, with the Swift runtime and
     Foundation linked in (swift build -c release --static-swift-stdlib --scratch-path
     .build-bench, from the repository root) unless --gradscope PATH is given;
  2. writes a synthetic run (generate.py: ~50M float32 parameters, 6 steps, weights and
     gradients, three planted pathologies) as three variants: native contiguous, native
     chunked + gzip level 4, and a hand-written h5py state_dict;
  3. per variant: runs `gradscope scan DIR --format json --quiet`, the plain h5py + numpy
     peer (peer.py) and a raw sequential read of the files (raw_read.py), each as its own
     process, --reps times each, interleaved, every run preceded by a read of all the files
     (page cache warm); reports the median wall time, the CPU time, throughput (file bytes /
     median wall time) and the peak memory of each;
  4. scaling: the native variant at a second size (--size-param, --scale-steps);
  5. big tensor: one 16384 x 16384 float32 matrix (1 GiB), 2 steps: peak memory;
  6. many saves: a 12-block transformer (149 tensors, ~2.5M parameters) saved N (default 300)
     and 2N times, written by hand with h5py (/model, /grads); gradscope with and without
     --no-isolation, the peer and the raw read on both runs: ratios, the memory of all processes
     at both lengths side by side (flat memory: two equal numbers) and the per-file cost,
     (gradscope wall time - raw read wall time) / files;
  7. checks that gradscope's JSON findings (and the peer's) name the planted pathologies.

Memory columns: "peak RSS" is the resident high-water mark of the largest single process
(the command, or any process it starts), as /usr/bin/time reports it (ru_maxrss); it counts
touched pages of memory-mapped files. "all procs" is the largest sampled (every 20 ms) memory
of the command and all its child processes together, as proportional set size (a page shared
by several processes, e.g. of a library, counts once); "anon" and "file" are its anonymous
and file-backed parts. "procs" is the most processes seen at once. The memory target is
checked against the larger of "peak RSS" and "all procs". The sampling is done in one extra
run of each tool that is not timed (the peer's timed runs are sampled): on a 2-core machine
it took 4.5% of the wall time of a scan that keeps both cores busy, and none from a command
that uses one (see Bench.measure).

Timing on a shared machine is noisy: "other load" is the CPU time the rest of the machine
used during the run, as a fraction of all CPUs (0% = quiet, 50% = one of two CPUs busy
elsewhere); "CPU s" (user + sys of the process and its children) is insensitive to it.
"disk MB" is what the machine read from disk during the run (0 when the page cache held
the files).

Without --dir the data goes to a temporary directory and each variant is deleted once
measured (peak disk about 12 GB, for the many-saves runs: 2N + 1 files of 20 MB; 2.4 GB
without them); with --dir it is kept and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import generate  # noqa: E402
import raw_read  # noqa: E402

PEER = HERE / "peer.py"
RAW = HERE / "raw_read.py"
TOOLS = ("gradscope", "peer", "raw read")
NO_ISOLATION = "gradscope --no-isolation"
MANY_TOOLS = ("gradscope", NO_ISOLATION, "peer", "raw read")
ROW_TOOLS = MANY_TOOLS  # the order of the tables' rows
MANY_FLAT_FACTOR = 1.25  # twice the saves may cost at most this much more memory to count as flat
TARGET_PEER_RATIO = {"native": 10.0, "gzip": 2.0}
TARGET_RAW_FRACTION = 0.5
HDF5_VARIANTS = ("native", "gzip", "h5py")
RAW_FRACTION_VARIANTS = ("native", "safetensors", "torch")  # gradscope's throughput must be half the raw read's
TARGET_RSS_MB = 256
QUICK_MANY_SAVES = 150
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


# --------------------------------------------------------------------------- measuring

def cpu_ticks():
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def disk_read_kb() -> int:
    """KiB read from block devices so far, machine-wide (pgpgin in /proc/vmstat)."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("pgpgin "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _memory_kb(pid: int) -> dict:
    """Proportional set size (shared pages split among the processes mapping them) and its
    anonymous and file-backed parts, from /proc/PID/smaps_rollup."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Pss", "Pss_Anon", "Pss_File"):
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
            except (OSError, ValueError):
                pass
    return pids


class MemorySampler(threading.Thread):
    """Samples the memory of a process tree: the peak of the summed proportional set
    sizes (so libraries and files mapped by several processes count once), with its
    anonymous and file-backed parts."""

    def __init__(self, pid: int, interval: float = 0.02, skip_root: bool = False):
        super().__init__(daemon=True)
        self.pid, self.interval, self.skip_root = pid, interval, skip_root
        self.stop_event = threading.Event()
        self.peak_anon = self.peak_file = self.peak_total = 0
        self.max_processes = 0

    def run(self):
        while not self.stop_event.is_set():
            pids = _tree(self.pid)
            if self.skip_root:
                pids = pids[1:]  # /usr/bin/time itself
            anon = file = total = 0
            for p in pids:
                m = _memory_kb(p)
                anon += m.get("Pss_Anon", 0)
                file += m.get("Pss_File", 0)
                total += m.get("Pss", 0)
            self.peak_anon = max(self.peak_anon, anon)
            self.peak_file = max(self.peak_file, file)
            self.peak_total = max(self.peak_total, total)
            self.max_processes = max(self.max_processes, len(pids))
            self.stop_event.wait(self.interval)


TIME = shutil.which("time", path="/usr/bin:/bin")


def run_measured(cmd: list[str], stdout_path: Path, sample: bool = True) -> dict:
    """Runs cmd as a child process; wall time, CPU time and memory of that process alone.

    The peak RSS comes from /usr/bin/time, which starts the command from its own small
    process: a child forked straight from this (larger) Python process would inherit this
    process's high-water mark in its ru_maxrss. With `sample`, the memory of all its processes
    is sampled too (MemorySampler; "all procs", "anon", "file" and "procs" are 0 without).
    """
    busy0, _ = cpu_ticks()
    disk0 = disk_read_kb()
    with open(stdout_path, "wb") as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".time") as timing:
        launcher = [TIME, "-q", "-f", "%M", "-o", timing.name] if TIME else []
        t0 = time.perf_counter()
        proc = subprocess.Popen(launcher + cmd, stdout=out, stderr=err)
        sampler = MemorySampler(proc.pid, skip_root=bool(TIME))
        if sample:
            sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if sample:
            sampler.stop_event.set()
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
        maxrss_kb = usage.ru_maxrss
        if TIME:
            lines = [l for l in timing.read().split() if l.strip()]
            try:
                maxrss_kb = int(lines[-1])
            except (IndexError, ValueError):
                pass
    busy1, _ = cpu_ticks()
    disk_mb = (disk_read_kb() - disk0) / 1024
    cpu = usage.ru_utime + usage.ru_stime
    other = max(0.0, (busy1 - busy0) / CLK_TCK - cpu) / (wall * NCPU) if wall > 0 else 0.0
    return {"wall": wall, "cpu": cpu, "user": usage.ru_utime, "sys": usage.ru_stime,
            "maxrss_mb": maxrss_kb / 1024, "total_mb": sampler.peak_total / 1024, "anon_mb": sampler.peak_anon / 1024,
            "file_mb": sampler.peak_file / 1024, "processes": sampler.max_processes,
            "other_load": other, "disk_mb": disk_mb, "returncode": proc.returncode, "stderr": stderr[-2000:]}


def summarize(runs: list[dict], memory_runs: list[dict] = ()) -> dict:
    """Times from `runs`; memory from them and from `memory_runs` (sampled runs not timed)."""
    walls = [r["wall"] for r in runs]
    every = list(runs) + list(memory_runs)
    return {
        "runs": len(runs), "wall": statistics.median(walls), "wall_min": min(walls), "wall_max": max(walls),
        "cpu": statistics.median(r["cpu"] for r in runs),
        "maxrss_mb": max(r["maxrss_mb"] for r in every), "total_mb": max(r["total_mb"] for r in every),
        "anon_mb": max(r["anon_mb"] for r in every),
        "file_mb": max(r["file_mb"] for r in every), "processes": max(r["processes"] for r in every),
        "other_load": statistics.median(r["other_load"] for r in runs),
        "disk_mb": max(r["disk_mb"] for r in runs),
        "samples": [round(w, 4) for w in walls],
        "memory_run_walls": [round(r["wall"], 4) for r in memory_runs],
    }


# --------------------------------------------------------------------------- gradscope

def build_gradscope(log) -> Path:
    binary = REPO / ".build-bench" / "release" / "gradscope"
    # Linked as Tools/wheel ships it: each process starts without resolving the Swift libraries'
    # symbols, and every call into the runtime (retain, release) is a direct call.
    cmd = ["swift", "build", "-c", "release", "--static-swift-stdlib", "--scratch-path", ".build-bench", "--product", "gradscope"]
    log(f"building: {' '.join(cmd)}")
    t0 = time.perf_counter()
    for _ in range(3):  # a source file saved mid-build makes swift build stop: try again
        result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if result.returncode == 0 or "modified during the build" not in result.stdout + result.stderr:
            break
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        if binary.exists():
            log(f"warning: the build failed; using the existing {binary}\n{tail}")
            return binary
        sys.exit(f"run_bench: the release build failed:\n{tail}")
    log(f"built in {time.perf_counter() - t0:.1f} s")
    return binary


def source_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "Sources", "Package.swift"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return f"{head}{' + uncommitted changes in Sources/' if dirty else ''}" if head else "unknown"
    except OSError:
        return "unknown"


def check_findings(findings: list[dict], planted: dict) -> tuple[bool, list[str]]:
    """OK/MISMATCH lines for each planted pathology, then other findings."""
    lines, ok = [], True
    matched = set()
    for kind, want in planted.items():
        hits = [i for i, f in enumerate(findings) if f.get("kind") == kind and f.get("tensor") == want["tensor"]]
        exact = [i for i in hits if f_step(findings[i]) == want["first_step"]]
        if exact:
            matched.add(exact[0])
            lines.append(f"OK        {kind:11s} {want['tensor']} from step {want['first_step']}")
        else:
            ok = False
            got = ", ".join(f"{findings[i].get('tensor')} from step {f_step(findings[i])}" for i in hits) or "nothing"
            lines.append(f"MISMATCH  {kind:11s} expected {want['tensor']} from step {want['first_step']}, got {got}")
    for i, f in enumerate(findings):
        if i not in matched:
            lines.append(f"(also)    {f.get('kind', '?'):11s} {f.get('tensor')} from step {f_step(f)}"
                         + (f" [{f['severity']}]" if "severity" in f else ""))
    return ok, lines


def f_step(finding: dict):
    return finding.get("first_step")


# --------------------------------------------------------------------------- the benchmark

class Bench:
    def __init__(self, args, gradscope: Path, data: Path, keep: bool):
        self.args, self.gradscope, self.data, self.keep = args, gradscope, data, keep
        self.out = data / "outputs"
        self.out.mkdir(parents=True, exist_ok=True)
        source = "given with --gradscope" if args.gradscope else source_state()
        self.results = {"machine": machine(), "gradscope": str(gradscope), "source": source,
                        "args": vars(args), "variants": {}, "scaling": [], "big_tensor": None, "many": None,
                        "checks": {}}
        self.all_ok = True

    def log(self, text=""):
        print(text, flush=True)

    def commands(self, directory: Path) -> dict:
        # --no-cache: every repetition reads the files, as a first scan does (a re-scan taken from the
        # cache of measured saves is another workload, not the one compared with the peer).
        return {
            "gradscope": [str(self.gradscope), "scan", str(directory), "--format", "json", "--quiet", "--no-cache"],
            NO_ISOLATION: [str(self.gradscope), "scan", str(directory), "--format", "json", "--quiet", "--no-isolation",
                           "--no-cache"],
            "peer": [sys.executable, str(PEER), str(directory), "--json"],
            "raw read": [sys.executable, str(RAW), str(directory), "--json"],
        }

    def measure(self, label: str, directory: Path, tools=TOOLS, reps=None, peer_reps=None) -> dict:
        """Runs each tool reps times, interleaved; returns {tool: summary} (+ "outputs").

        The timed runs of every tool but the peer are not sampled: reading every process's
        /proc/PID/smaps_rollup 50 times a second takes CPU from a command that keeps every core
        busy (a scan of 300 saves on 2 cores: 4.5% of its wall time, 1.384 -> 1.446 s median of
        10 alternated runs, the scan's own CPU time the same) and none from one that uses one
        core. Their memory of all processes comes from one more run each, sampled and not
        timed. The peer, single-threaded and slow, is sampled in its timed runs."""
        reps = reps or self.args.reps
        peer_reps = self.args.peer_reps if peer_reps is None else peer_reps
        files = raw_read.files_of(str(directory))
        cmds = self.commands(directory)
        runs = {t: [] for t in tools}
        outputs = {}
        for rep in range(max(reps, peer_reps if "peer" in tools else 0)):
            for tool in tools:
                limit = peer_reps if tool == "peer" else reps
                if rep >= limit:
                    continue
                path = self.out / f"{label}-{tool.replace(' ', '_')}-{rep}.json"
                # Warm the page cache before every run: some kernels reclaim page cache that
                # sat idle for a while (e.g. DAMON-based reclaim), even with memory to spare.
                raw_read.read_all(files)
                r = self.run_checked(tool, cmds[tool], path, directory, sample=tool == "peer")
                runs[tool].append(r)
                if rep == 0:
                    outputs[tool] = path
                self.log(f"  {label:9s} {tool:24s} run {rep + 1}: {r['wall']:7.3f} s wall, {r['cpu']:7.3f} s CPU, "
                         f"peak RSS {r['maxrss_mb']:7.0f} MB, other load {r['other_load']:.0%}, disk read {r['disk_mb']:.0f} MB")
        memory_runs = {t: [] for t in tools}
        for tool in tools:
            if tool == "peer" or not runs[tool]:
                continue
            raw_read.read_all(files)
            r = self.run_checked(tool, cmds[tool], self.out / f"{label}-{tool.replace(' ', '_')}-memory.json", directory, sample=True)
            memory_runs[tool].append(r)
            self.log(f"  {label:9s} {tool:24s} memory run (sampled, not timed): {r['wall']:7.3f} s wall, "
                     f"all processes {r['total_mb']:7.0f} MB, largest process {r['maxrss_mb']:7.0f} MB")
        summary = {t: summarize(v, memory_runs[t]) for t, v in runs.items() if v}
        summary["outputs"] = {t: str(p) for t, p in outputs.items()}
        return summary

    def run_checked(self, tool: str, cmd: list[str], path: Path, directory: Path, sample: bool) -> dict:
        r = run_measured(cmd, path, sample=sample)
        ok_codes = (0, 1) if tool.startswith("gradscope") else (0,)
        if r["returncode"] not in ok_codes:
            sys.exit(f"run_bench: {tool} on {directory} exited with {r['returncode']}:\n{r['stderr']}")
        return r

    def correctness(self, label: str, outputs: dict, planted: dict) -> None:
        for tool in ("gradscope", NO_ISOLATION, "peer"):
            if tool not in outputs:
                continue
            try:
                findings = json.loads(Path(outputs[tool]).read_text())["findings"]
            except (OSError, ValueError, KeyError) as e:
                self.results["checks"][f"{label}/{tool}"] = {"ok": False, "lines": [f"MISMATCH  unreadable JSON: {e}"]}
                self.all_ok = False
                continue
            ok, lines = check_findings(findings, planted)
            self.all_ok &= ok
            self.results["checks"][f"{label}/{tool}"] = {"ok": ok, "lines": lines}

    def drop(self, root: Path, variant: str) -> None:
        if not self.keep:
            shutil.rmtree(root / variant, ignore_errors=True)
            generate.manifest_path(root, variant).unlink(missing_ok=True)

    def generate(self, root: Path, variant: str, params: int, steps: int, big: bool = False) -> dict:
        # In a child process: this one stays small (see run_measured).
        t0 = time.perf_counter()
        cmd = [sys.executable, str(HERE / "generate.py"), str(root), "--variants", variant, "--params", str(max(params, 1)),
               "--steps", str(steps), "--seed", str(self.args.seed), "--jobs", str(self.args.jobs)]
        result = subprocess.run(cmd + (["--big-tensor"] if big else []), capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"run_bench: generating {root / variant} failed:\n{result.stderr[-3000:]}")
        manifest = json.loads(generate.manifest_path(root, variant).read_text())
        self.log(f"data: {root / variant}: {len(manifest['files'])} files, {manifest['bytes'] / 1e9:.2f} GB, "
                 f"{manifest['params']:,} params/step ({manifest['compression']}), ready in {time.perf_counter() - t0:.1f} s")
        return manifest

    def main_run(self):
        a = self.args
        for variant in a.variants:
            manifest = self.generate(self.data, variant, a.params, a.steps)
            # The peer reads HDF5 only: safetensors and torch.save runs are measured against the raw read.
            s = self.measure(variant, self.data / variant, tools=TOOLS if variant in HDF5_VARIANTS else ("gradscope", "raw read"))
            s["bytes"] = manifest["bytes"]
            s["manifest"] = {k: manifest[k] for k in ("params", "steps", "tensors_per_step", "compression", "width")}
            self.results["variants"][variant] = s
            self.correctness(variant, s["outputs"], manifest["planted"])
            if variant == "native" and not a.no_scaling:
                self.scaling(s)
            self.drop(self.data, variant)

    def scaling(self, native_summary: dict):
        a = self.args
        root = self.data / f"scale_{a.scale_params}_{a.scale_steps}"
        self.drop(self.data, "native")
        manifest = self.generate(root, "native", a.scale_params, a.scale_steps)
        s = self.measure("scale", root / "native", tools=("gradscope", "raw read"))
        s["bytes"] = manifest["bytes"]
        self.correctness("scale", s["outputs"], manifest["planted"])
        self.results["scaling"] = [
            {"params": manifest["params"], "steps": a.scale_steps, "bytes": manifest["bytes"], **strip(s)},
            {"params": native_summary["manifest"]["params"], "steps": a.steps, "bytes": native_summary["bytes"],
             **strip(native_summary)},
        ]
        self.drop(root, "native")
        if not self.keep:
            shutil.rmtree(root, ignore_errors=True)

    def big_tensor(self):
        root = self.data / "big"
        manifest = self.generate(root, "native", 0, 2, big=True)
        tools = ("gradscope", "raw read") + (("peer",) if self.args.big_peer_reps > 0 else ())
        s = self.measure("big", root / "native", tools=tools, peer_reps=self.args.big_peer_reps)
        s["bytes"] = manifest["bytes"]
        self.results["big_tensor"] = s
        self.drop(root, "native")
        if not self.keep:
            shutil.rmtree(root, ignore_errors=True)

    def many(self):
        """The many-saves workload: a 12-block transformer saved N and 2N times by hand with h5py."""
        a = self.args
        root = self.data / "many"
        t0 = time.perf_counter()
        cmd = [sys.executable, str(HERE / "generate.py"), str(root), "--many", str(a.many_saves),
               "--params", str(a.many_params), "--seed", str(a.seed)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"run_bench: generating {root} failed:\n{result.stderr[-3000:]}")
        names = generate.many_dirs(a.many_saves)
        manifests = {n: json.loads(generate.manifest_path(root, n).read_text()) for n in names}
        disk = disk_usage(root)
        for n in names:
            m = manifests[n]
            self.log(f"data: {root / n}: {len(m['files'])} files, {m['bytes'] / 1e9:.2f} GB, {m['params']:,} params/save "
                     f"in {m['tensors_per_step']} datasets per file")
        self.log(f"      {disk / 1e9:.2f} GB on disk (the shorter run's first saves are hard links), "
                 f"ready in {time.perf_counter() - t0:.1f} s")
        lengths = {}
        for n in names:
            m = manifests[n]
            s = self.measure(n, root / n, tools=MANY_TOOLS, peer_reps=a.many_peer_reps)
            s["bytes"], s["files"] = m["bytes"], len(m["files"])
            s["manifest"] = {k: m[k] for k in ("params", "saves", "tensors_per_step", "width", "blocks", "compression")}
            self.correctness(n, s["outputs"], m["planted"])
            lengths[n] = s
        self.results["many"] = {"saves": a.many_saves, "disk_bytes": disk, "lengths": lengths}
        if not self.keep:
            shutil.rmtree(root, ignore_errors=True)


def strip(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k in ROW_TOOLS}


def disk_usage(root: Path) -> int:
    """Bytes allocated on disk under root, each file counted once however many links it has."""
    seen, total = set(), 0
    for path in root.rglob("*"):
        st = path.lstat()
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(l for l in f if l.startswith("MemTotal")).split()[1]) // 1024
    except (OSError, StopIteration, ValueError):
        pass
    return {"cpu": model, "cpus": NCPU, "memory_mb": mem, "python": platform.python_version(), "kernel": platform.release()}


# --------------------------------------------------------------------------- report

def gbps(nbytes, seconds):
    return nbytes / 1e9 / seconds if seconds > 0 else float("inf")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    def fmt(r):
        return "  ".join(str(c).rjust(w) if i >= 2 else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    lines = [fmt(header), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)


HEADER = ["variant", "tool", "runs", "wall s (median)", "min..max", "CPU s", "GB/s", "peak RSS MB", "all procs MB", "anon MB",
          "file MB", "procs", "other load", "disk MB"]


def tool_rows(label: str, s: dict, nbytes: int) -> list[list[str]]:
    rows = []
    for tool in ROW_TOOLS:
        if tool not in s:
            continue
        t = s[tool]
        rows.append([label if not rows else "", tool, t["runs"], f"{t['wall']:.3f}", f"{t['wall_min']:.2f}..{t['wall_max']:.2f}",
                     f"{t['cpu']:.2f}", f"{gbps(nbytes, t['wall']):.2f}", f"{t['maxrss_mb']:.0f}", f"{t['total_mb']:.0f}",
                     f"{t['anon_mb']:.0f}",
                     f"{t['file_mb']:.0f}", t["processes"], f"{t['other_load']:.0%}", f"{t['disk_mb']:.0f}"])
    return rows


def many_report(many: dict, a, targets: list) -> list[str]:
    """The many-saves section: the table, ratios, memory at both lengths side by side, per-file cost."""
    out = []
    lengths = many["lengths"]
    names = list(lengths)
    first = lengths[names[0]]["manifest"]
    out.append(f"\n== many saves: {first['params']:,} float32 parameters in {first['tensors_per_step'] // 2} weights + "
               f"{first['tensors_per_step'] // 2} gradients per save ({first['blocks']} blocks, width {first['width']}; "
               f"/model + /grads written with h5py), {' and '.join(str(lengths[n]['files']) for n in names)} saves; "
               f"medians of {a.reps} runs (peer: {a.many_peer_reps}) ==")
    rows = []
    for n in names:
        s = lengths[n]
        rows += tool_rows(f"{s['files']} saves ({s['bytes'] / 1e9:.2f} GB)", s, s["bytes"])
    out.append(table(rows, HEADER))
    out.append("")
    out.append("ratios (median wall time; CPU-time ratio in brackets):")
    for n in names:
        s = lengths[n]
        g, gi, p, raw = s.get("gradscope"), s.get(NO_ISOLATION), s.get("peer"), s.get("raw read")
        parts = []
        if g and p:
            cpu_ratio = p["cpu"] / g["cpu"] if g["cpu"] > 0 else float("inf")
            parts.append(f"peer/gradscope {p['wall'] / g['wall']:.1f}x [{cpu_ratio:.1f}x]")
        if g and raw:
            parts.append(f"gradscope/raw throughput {raw['wall'] / g['wall']:.2f}")
        if gi and raw:
            parts.append(f"--no-isolation/raw throughput {raw['wall'] / gi['wall']:.2f}")
        if gi and p:
            parts.append(f"peer/gradscope --no-isolation {p['wall'] / gi['wall']:.1f}x")
        out.append(f"  {s['files']:5d} saves  " + ";  ".join(parts))
    out.append("")
    out.append("per-file cost: (gradscope wall time - raw read wall time) / files "
               f"(each file {first['tensors_per_step']} datasets; the same with CPU times in brackets):")
    for n in names:
        s = lengths[n]
        raw = s.get("raw read")
        parts = []
        for tool in ("gradscope", NO_ISOLATION):
            if tool in s and raw:
                wall = (s[tool]["wall"] - raw["wall"]) / s["files"] * 1e3
                cpu = (s[tool]["cpu"] - raw["cpu"]) / s["files"] * 1e3
                parts.append(f"{tool} {wall:.2f} ms per file [{cpu:.2f} ms]")
        out.append(f"  {s['files']:5d} saves  " + ";  ".join(parts))
    short, long = lengths[names[0]], lengths[names[-1]]
    out.append("")
    out.append(f"memory at {short['files']} and {long['files']} saves (flat memory: the two numbers equal):")
    rows = []
    for tool in ROW_TOOLS:
        if tool not in short or tool not in long:
            continue
        for key, what in (("total_mb", "all procs MB"), ("maxrss_mb", "peak RSS MB (largest process)")):
            x, y = short[tool][key], long[tool][key]
            rows.append([tool if key == "total_mb" else "", what, f"{x:.0f}", f"{y:.0f}",
                         f"{y - x:+.0f}", f"{(y - x) * 1024 / (long['files'] - short['files']):.0f}"])
    out.append(table(rows, ["tool", "memory", f"{short['files']} saves", f"{long['files']} saves", "difference",
                            "KB per extra save"]))
    g_short, g_long = short.get("gradscope"), long.get("gradscope")
    if g_short and g_long:
        x = max(g_short["maxrss_mb"], g_short["total_mb"])
        y = max(g_long["maxrss_mb"], g_long["total_mb"])
        targets.append((f"gradscope memory flat in the number of saves ({long['files']} saves within "
                        f"{MANY_FLAT_FACTOR:g}x of {short['files']})", y <= MANY_FLAT_FACTOR * x,
                        f"{x:.0f} MB -> {y:.0f} MB"))
        targets.append((f"gradscope peak memory < {TARGET_RSS_MB} MB ({long['files']} saves)", y < TARGET_RSS_MB,
                        f"{y:.0f} MB (largest process {g_long['maxrss_mb']:.0f} MB, all processes "
                        f"{g_long['total_mb']:.0f} MB, anonymous {g_long['anon_mb']:.0f} MB)"))
    return out


def report(bench: Bench) -> str:
    r = bench.results
    a = bench.args
    out = []
    m = r["machine"]
    out.append("")
    out.append(f"machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_mb'] / 1024:.0f} GiB RAM; python {m['python']}")
    out.append(f"gradscope: {r['gradscope']} (source {r['source']})")
    targets = []
    if r["variants"]:
        any_manifest = next(iter(r["variants"].values()))["manifest"]
        out.append(f"\n== run: {any_manifest['params']:,} float32 parameters x {a.steps} steps, weights + gradients "
                   f"({any_manifest['tensors_per_step']} tensors per step); medians of {a.reps} runs "
                   f"(peer: {a.peer_reps}) ==")
        rows = []
        for variant, s in r["variants"].items():
            rows += tool_rows(f"{variant} ({s['bytes'] / 1e9:.2f} GB)", s, s["bytes"])
        out.append(table(rows, HEADER))
        out.append("")
        out.append("ratios (median wall time; CPU-time ratio in brackets):")
        for variant, s in r["variants"].items():
            g, p, raw = s.get("gradscope"), s.get("peer"), s.get("raw read")
            parts = []
            if g and p:
                ratio = p["wall"] / g["wall"]
                cpu_ratio = p["cpu"] / g["cpu"] if g["cpu"] > 0 else float("inf")
                target = TARGET_PEER_RATIO.get(variant)
                t = f" (target >= {target:g}x: {verdict(ratio >= target)})" if target else ""
                if target:
                    targets.append((f"peer/gradscope on {variant} >= {target:g}x", ratio >= target, f"{ratio:.1f}x"))
                parts.append(f"peer/gradscope {ratio:.1f}x [{cpu_ratio:.1f}x]{t}")
            if g and raw:
                frac = raw["wall"] / g["wall"]
                t = ""
                if variant in RAW_FRACTION_VARIANTS:
                    t = f" (target >= {TARGET_RAW_FRACTION:g}: {verdict(frac >= TARGET_RAW_FRACTION)})"
                    targets.append((f"gradscope throughput >= {TARGET_RAW_FRACTION:g} x raw read ({variant})",
                                    frac >= TARGET_RAW_FRACTION, f"{frac:.2f}"))
                parts.append(f"gradscope/raw throughput {frac:.2f} (gradscope {g['wall'] / raw['wall']:.1f}x the raw read time){t}")
            out.append(f"  {variant:11s} " + ";  ".join(parts))
            if g:
                peak = max(g["maxrss_mb"], g["total_mb"])
                targets.append((f"gradscope peak memory < {TARGET_RSS_MB} MB ({variant})", peak < TARGET_RSS_MB,
                                f"{peak:.0f} MB (largest process {g['maxrss_mb']:.0f} MB, all processes {g['total_mb']:.0f} MB, "
                                f"anonymous {g['anon_mb']:.0f} MB)"))
    if r["scaling"]:
        out.append("\n== scaling (native, contiguous) ==")
        rows = []
        for s in r["scaling"]:
            label = f"{s['params'] / 1e6:.1f}M x {s['steps']} ({s['bytes'] / 1e9:.2f} GB)"
            rows += tool_rows(label, s, s["bytes"])
        out.append(table(rows, HEADER))
        small, large = r["scaling"]
        if "gradscope" in small and "gradscope" in large and large["bytes"] != small["bytes"]:
            size_ratio = large["bytes"] / small["bytes"]
            out.append(f"  data x{size_ratio:.2f} -> gradscope wall time x{large['gradscope']['wall'] / small['gradscope']['wall']:.2f}, "
                       f"CPU time x{large['gradscope']['cpu'] / small['gradscope']['cpu']:.2f} (proportional: x{size_ratio:.2f})")
            for what in ("wall", "cpu"):
                slope = (large["gradscope"][what] - small["gradscope"][what]) / (large["bytes"] - small["bytes"])
                fixed = small["gradscope"][what] - slope * small["bytes"]
                out.append(f"  {what + ' time':9s} = {fixed:.2f} s fixed + {slope * 1e9:.3f} s per GB "
                           f"(marginal {1 / (slope * 1e9) if slope > 0 else float('inf'):.2f} GB/s)")
    if r["big_tensor"]:
        s = r["big_tensor"]
        out.append(f"\n== big tensor: one 16384 x 16384 float32 matrix (1 GiB) + a bias, 2 steps ({s['bytes'] / 1e9:.2f} GB) ==")
        out.append(table(tool_rows("big", s, s["bytes"]), HEADER))
        g = s.get("gradscope")
        if g:
            peak = max(g["maxrss_mb"], g["total_mb"])
            targets.append((f"gradscope peak memory < {TARGET_RSS_MB} MB with a 1 GiB tensor", peak < TARGET_RSS_MB,
                            f"{peak:.0f} MB (largest process {g['maxrss_mb']:.0f} MB, all processes {g['total_mb']:.0f} MB, "
                            f"anonymous {g['anon_mb']:.0f} MB)"))
    if r["many"]:
        out += many_report(r["many"], a, targets)
    if r["checks"]:
        out.append("\n== correctness: planted pathologies in the JSON findings ==")
        for key, c in r["checks"].items():
            out.append(f"  {key}: {'OK' if c['ok'] else 'MISMATCH'}")
            for line in c["lines"]:
                out.append(f"      {line}")
    if targets:
        out.append("\n== targets ==")
        for name, ok, value in targets:
            out.append(f"  {verdict(ok)}  {name}: {value}")
    return "\n".join(out)


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--gradscope", type=Path, help="use this gradscope binary instead of building one")
    ap.add_argument("--dir", type=Path, help="data directory, kept and reused (default: a temporary directory, removed)")
    ap.add_argument("--params", type=generate.parse_count, default=50_000_000, help="parameters per step (default 50e6)")
    ap.add_argument("--steps", type=int, default=6, help="saved steps (default 6)")
    ap.add_argument("--size-param", "--scale-params", dest="scale_params", type=generate.parse_count,
                    help="parameters of the second run size for the scaling check (default: --params / 2)")
    ap.add_argument("--scale-steps", type=int, help="steps of the second run size (default: --steps)")
    ap.add_argument("--reps", type=int, default=3, help="runs of gradscope and of the raw read per variant (default 3)")
    ap.add_argument("--peer-reps", type=int, help="runs of the peer per variant (default: --reps)")
    ap.add_argument("--big-peer-reps", type=int, default=1,
                    help="runs of the peer on the 1 GiB tensor (default 1; 0 skips it)")
    ap.add_argument("--variants", default=",".join(generate.VARIANTS), help="comma-separated: native,gzip,h5py,safetensors,torch (the last two when their library is installed)")
    ap.add_argument("--no-scaling", action="store_true", help="skip the second run size")
    ap.add_argument("--no-big-tensor", action="store_true", help="skip the 1 GiB-tensor run")
    ap.add_argument("--big-tensor", action="store_true", help="run only the 1 GiB-tensor memory check")
    ap.add_argument("--many", action="store_true",
                    help="run only the many-saves workload (a 12-block transformer saved N and 2N times)")
    ap.add_argument("--no-many", action="store_true", help="skip the many-saves workload")
    ap.add_argument("--many-saves", type=int, metavar="N",
                    help=f"saves of the shorter many-saves run, the longer has 2N (default {generate.MANY_SAVES}; "
                         f"--quick: {QUICK_MANY_SAVES})")
    ap.add_argument("--many-params", type=generate.parse_count, default=generate.MANY_PARAMS,
                    help=f"parameters per save of the many-saves runs (default {generate.MANY_PARAMS / 1e6:g}e6)")
    ap.add_argument("--many-peer-reps", type=int, default=1, help="runs of the peer per many-saves run (default 1)")
    ap.add_argument("--quick", action="store_true",
                    help=f"one peer run per variant; {QUICK_MANY_SAVES} and {2 * QUICK_MANY_SAVES} saves in the many-saves workload")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=max(1, min(2, NCPU)), help="processes writing gzip files")
    ap.add_argument("--json-out", type=Path, help="also write every measurement to this JSON file")
    args = ap.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    for v in args.variants:
        if v not in generate.VARIANTS:
            ap.error(f"unknown variant {v!r}")
    for v in [v for v in args.variants if not generate.generate_available(v)]:
        print(f"run_bench: variant {v} skipped ({generate.NEEDS[v]} is not installed in {sys.executable})", file=sys.stderr)
    args.variants = [v for v in args.variants if generate.generate_available(v)]
    if args.steps < 2:
        ap.error("--steps must be at least 2")
    args.scale_params = args.scale_params or max(1, args.params // 2)
    args.scale_steps = args.scale_steps or args.steps
    if args.peer_reps is None:
        args.peer_reps = 1 if args.quick else args.reps
    if args.big_tensor and args.many:
        ap.error("--big-tensor and --many each run only one workload; give neither to run both")
    if args.big_tensor:
        args.variants, args.no_scaling, args.no_big_tensor, args.no_many = [], True, False, True
    if args.many:
        args.variants, args.no_scaling, args.no_big_tensor, args.no_many = [], True, True, False
    if args.many_saves is None:
        args.many_saves = QUICK_MANY_SAVES if args.quick else generate.MANY_SAVES
    if args.many_saves < 3:
        ap.error("--many-saves must be at least 3")
    if "native" not in args.variants:
        args.no_scaling = True
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    gradscope = args.gradscope.resolve() if args.gradscope else build_gradscope(lambda s: print(s, flush=True))
    if not gradscope.exists():
        sys.exit(f"run_bench: no gradscope binary at {gradscope}")
    keep = args.dir is not None
    data = args.dir.resolve() if keep else Path(tempfile.mkdtemp(prefix="gradscope-bench-"))
    data.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, gradscope, data, keep)
    try:
        bench.main_run()
        if not args.no_big_tensor:
            bench.big_tensor()
        if not args.no_many:
            bench.many()
    finally:
        if not keep:
            shutil.rmtree(data, ignore_errors=True)
    text = report(bench)
    print(text)
    print(f"\ntotal time {time.perf_counter() - t0:.0f} s" + (f"; data kept in {data}" if keep else ""))
    if args.json_out:
        args.json_out.write_text(json.dumps(bench.results, indent=1, default=str) + "\n")
    return 0 if bench.all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
