"""Smoke test of the benchmark's pieces on a tiny run (numpy + h5py only; no timing).

The gradscope part uses $GRADSCOPE_BIN, else .build/debug/gradscope in the
repository, and is skipped when neither exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1]
REPO = Path(__file__).resolve().parents[3]
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import generate  # noqa: E402
import peer  # noqa: E402
import raw_read  # noqa: E402
from run_bench import check_findings  # noqa: E402

STEPS = 3
PARAMS = 100_000


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-run")
    manifests = generate.generate(out, generate.VARIANTS, params=PARAMS, steps=STEPS, seed=0, jobs=1, log=lambda s: None)
    return out, manifests


def gradscope_binary() -> Path | None:
    env = os.environ.get("GRADSCOPE_BIN")
    candidate = Path(env) if env else REPO / ".build/debug/gradscope"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def test_generated_run_has_the_planned_shape(run):
    out, manifests = run
    native = manifests["native"]
    assert native["steps"] == [100, 200, 300]
    assert 0.5 * PARAMS <= native["params"] <= 1.5 * PARAMS
    assert set(native["planted"]) == {"frozen", "collapsing", "nan-inf"}
    for variant in generate.VARIANTS:
        assert len(list((out / variant).iterdir())) == STEPS
    import h5py
    import numpy as np
    with h5py.File(out / "native" / "step_000300.h5", "r") as f:
        assert f.attrs["format"] == "gradscope/1" and int(f.attrs["step"]) == 300
        assert f["weights/blocks.0.mlp.fc1.weight"].chunks is None
        assert np.isnan(f["weights/blocks.3.mlp.fc1.weight"][...]).sum() == generate.NAN_ELEMENTS
    with h5py.File(out / "gzip" / "step_000100.h5", "r") as f:
        ds = f["weights/blocks.0.mlp.fc1.weight"]
        assert ds.compression == "gzip" and ds.compression_opts == generate.GZIP_LEVEL
    with h5py.File(out / "h5py" / "ckpt_000200.h5", "r") as f:
        assert int(f.attrs["step"]) == 200
        assert "blocks.0.mlp.fc1.weight" in f and "grads/blocks.0.mlp.fc1.weight" in f
        with h5py.File(out / "native" / "step_000200.h5", "r") as g:
            assert np.array_equal(f["head.weight"][...], g["weights/head.weight"][...])


def test_generation_is_deterministic(tmp_path):
    import numpy as np
    a = [(s, {k: v.copy() for k, v in w.items()}) for s, w, _, _ in generate.iterate_run(20_000, 2, seed=3)]
    b = [(s, {k: v.copy() for k, v in w.items()}) for s, w, _, _ in generate.iterate_run(20_000, 2, seed=3)]
    for (sa, wa), (sb, wb) in zip(a, b):
        assert sa == sb
        for k in wa:
            assert np.array_equal(wa[k], wb[k], equal_nan=True)


@pytest.mark.parametrize("variant", generate.VARIANTS)
def test_peer_finds_the_planted_pathologies(run, variant):
    out, manifests = run
    steps, history = peer.scan(str(out / variant))
    assert steps == [100, 200, 300]
    ok, lines = check_findings(peer.findings(history), manifests[variant]["planted"])
    assert ok, "\n".join(lines)
    stats = history[0]["weights"]["blocks.0.mlp.fc1.weight"]
    assert len(stats["quantiles"]) == 5 and sum(stats["histogram"]) == stats["count"]


def test_peer_command_line_prints_json(run):
    out, _ = run
    result = subprocess.run([sys.executable, str(BENCH / "peer.py"), str(out / "native"), "--json"],
                            capture_output=True, text=True, check=True)
    data = json.loads(result.stdout)
    assert data["steps"] == [100, 200, 300] and {f["kind"] for f in data["findings"]} == {"frozen", "collapsing", "nan-inf"}


def test_raw_read_reads_every_byte(run):
    out, manifests = run
    files = raw_read.files_of(str(out / "gzip"))
    assert raw_read.read_all(files, chunk=1 << 16) == manifests["gzip"]["bytes"]


@pytest.mark.parametrize("variant", generate.VARIANTS)
def test_gradscope_finds_the_planted_pathologies(run, variant):
    binary = gradscope_binary()
    if binary is None:
        pytest.skip("no gradscope binary (set GRADSCOPE_BIN or build .build/debug/gradscope)")
    out, manifests = run
    result = subprocess.run([str(binary), "scan", str(out / variant), "--format", "json", "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["steps"] == [100, 200, 300]
    ok, lines = check_findings(report["findings"], manifests[variant]["planted"])
    assert ok, "\n".join(lines)
