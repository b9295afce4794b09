"""Smoke test of the benchmark's pieces on a tiny run (numpy + h5py only; no timing). The
safetensors and torch variants are written and scanned when their library is installed.

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
# The variants this Python can write (safetensors and torch need their libraries).
WRITABLE = [v for v in generate.VARIANTS if generate.generate_available(v)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-run")
    manifests = generate.generate(out, WRITABLE, params=PARAMS, steps=STEPS, seed=0, jobs=1, log=lambda s: None)
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
    for variant in WRITABLE:
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


@pytest.mark.parametrize("variant", ["native", "gzip", "h5py"])
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


def test_pytorch_variants_hold_the_native_numbers(run):
    import numpy as np
    out, _ = run
    import h5py
    with h5py.File(out / "native" / "step_000200.h5", "r") as g:
        native = g["weights/blocks.0.mlp.fc1.weight"][...], g["gradients/blocks.0.mlp.fc1.weight"][...]
    if "safetensors" in WRITABLE:
        from safetensors.numpy import load_file
        tensors = load_file(str(out / "safetensors" / "step_000200.safetensors"))
        assert np.array_equal(tensors["blocks.0.mlp.fc1.weight"], native[0])
        assert np.array_equal(tensors["blocks.0.mlp.fc1.weight.grad"], native[1])
    if "torch" in WRITABLE:
        import torch
        saved = torch.load(out / "torch" / "step_000200.pt", weights_only=True)
        assert saved["step"] == 200
        assert np.array_equal(saved["model"]["blocks.0.mlp.fc1.weight"].numpy(), native[0])
        assert np.array_equal(saved["grads"]["blocks.0.mlp.fc1.weight"].numpy(), native[1])


def test_raw_read_reads_every_byte(run):
    out, manifests = run
    files = raw_read.files_of(str(out / "gzip"))
    assert raw_read.read_all(files, chunk=1 << 16) == manifests["gzip"]["bytes"]


@pytest.mark.parametrize("variant", generate.VARIANTS)
def test_gradscope_finds_the_planted_pathologies(run, variant):
    if variant not in WRITABLE:
        pytest.skip(f"{generate.NEEDS[variant]} is not installed")
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


# --------------------------------------------------------------------------- many saves

MANY_SAVES = 3
MANY_PARAMS = 10_000  # width 8: 149 tensors of a few hundred values


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-many")
    manifests = generate.generate_many(out, saves=MANY_SAVES, params=MANY_PARAMS, seed=0, log=lambda s: None)
    return out, manifests


def test_many_workload_has_the_planned_shape(many):
    import h5py
    import numpy as np
    out, manifests = many
    short, long = generate.many_dirs(MANY_SAVES)
    assert list(manifests) == [short, long] == ["many-3", "many-6"]
    assert manifests[short]["steps"] == [100, 200, 300]
    assert manifests[long]["steps"] == [100, 200, 300, 400, 500, 600]
    assert manifests[long]["tensors_per_step"] == 298 and manifests[long]["width"] == 8
    assert manifests[long]["planted"]["nan-inf"]["first_step"] == 600
    assert manifests[short]["planted"]["nan-inf"]["first_step"] == 300
    assert sorted(p.name for p in (out / short).iterdir()) == manifests[short]["files"]
    # The shorter run shares its first saves with the longer one; its last save is its own.
    for name in manifests[short]["files"][:-1]:
        assert (out / short / name).stat().st_ino == (out / long / name).stat().st_ino
    last = manifests[short]["files"][-1]
    assert (out / short / last).stat().st_ino != (out / long / last).stat().st_ino
    nan_tensor = "model/" + manifests[short]["planted"]["nan-inf"]["tensor"]
    with h5py.File(out / short / last, "r") as f, h5py.File(out / long / last, "r") as g:
        assert set(f) == {"model", "grads"} and dict(f.attrs) == {"step": 300}
        assert len(f["model"]) == len(f["grads"]) == 149
        assert f["model/blocks.0.mlp.fc1.weight"].chunks is None
        assert f["model/blocks.0.mlp.fc1.weight"].dtype == np.float32
        assert np.isnan(f[nan_tensor][...]).sum() == generate.NAN_ELEMENTS
        assert not np.isnan(g[nan_tensor][...]).any()
        assert np.array_equal(f["grads/head.weight"][...], g["grads/head.weight"][...])
    with h5py.File(out / long / manifests[long]["files"][-1], "r") as f:
        assert np.isnan(f[nan_tensor][...]).sum() == generate.NAN_ELEMENTS


def test_many_workload_is_deterministic_and_reused(many):
    import numpy as np
    a = [(s, {k: v.copy() for k, v in w.items()}) for s, w, _ in generate.iterate_many(MANY_PARAMS, 4, seed=3)]
    b = [(s, {k: v.copy() for k, v in w.items()}) for s, w, _ in generate.iterate_many(MANY_PARAMS, 4, seed=3)]
    for (sa, wa), (sb, wb) in zip(a, b):
        assert sa == sb and all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert not np.array_equal(a[0][1]["head.weight"], a[1][1]["head.weight"])
    out, manifests = many
    first = (out / "many-6" / manifests["many-6"]["files"][0]).stat().st_mtime_ns
    again = generate.generate_many(out, saves=MANY_SAVES, params=MANY_PARAMS, seed=0, log=lambda s: None)
    assert again == manifests
    assert (out / "many-6" / manifests["many-6"]["files"][0]).stat().st_mtime_ns == first


@pytest.mark.parametrize("length", [0, 1])
def test_peer_finds_the_planted_pathologies_in_many_saves(many, length):
    out, manifests = many
    name = generate.many_dirs(MANY_SAVES)[length]
    steps, history = peer.scan(str(out / name))
    assert steps == manifests[name]["steps"]
    assert "blocks.0.attn.qkv.weight" in history[0]["weights"]  # the /model container is not part of the name
    ok, lines = check_findings(peer.findings(history), manifests[name]["planted"])
    assert ok, "\n".join(lines)


@pytest.mark.parametrize("length", [0, 1])
def test_gradscope_finds_the_planted_pathologies_in_many_saves(many, length):
    binary = gradscope_binary()
    if binary is None:
        pytest.skip("no gradscope binary (set GRADSCOPE_BIN or build .build/debug/gradscope)")
    out, manifests = many
    name = generate.many_dirs(MANY_SAVES)[length]
    result = subprocess.run([str(binary), "scan", str(out / name), "--format", "json", "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["steps"] == manifests[name]["steps"]
    ok, lines = check_findings(report["findings"], manifests[name]["planted"])
    assert ok, "\n".join(lines)


def test_run_bench_many_prints_ratios_memory_and_per_file_cost(tmp_path):
    """The whole --many path of run_bench.py on a tiny run. Without a gradscope binary, a stand-in
    that prints the planted findings (from the run's manifest) takes its place."""
    binary = gradscope_binary()
    if binary is None:
        binary = tmp_path / "gradscope-stand-in"
        binary.write_text(
            f"#!{sys.executable}\n"
            "import json, sys\nfrom pathlib import Path\n"
            "run = Path(sys.argv[2])\n"
            "planted = json.loads((run.parent / (run.name + '.json')).read_text())['planted']\n"
            "print(json.dumps({'findings': [{'kind': k, **v} for k, v in planted.items()]}))\n")
        binary.chmod(0o755)
    data = tmp_path / "data"
    result = subprocess.run([sys.executable, str(BENCH / "run_bench.py"), "--many", "--many-saves", str(MANY_SAVES),
                             "--many-params", str(MANY_PARAMS), "--reps", "1", "--gradscope", str(binary),
                             "--dir", str(data), "--json-out", str(tmp_path / "out.json")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout
    assert "== many saves: 11,064 float32 parameters in 149 weights + 149 gradients per save" in text
    assert "per-file cost" in text and "memory at 3 and 6 saves" in text
    for tool in ("gradscope --no-isolation", "peer", "raw read"):
        assert tool in text
    assert "MISMATCH" not in text and "many-6/gradscope --no-isolation: OK" in text
    results = json.loads((tmp_path / "out.json").read_text())
    lengths = results["many"]["lengths"]
    assert [lengths[n]["files"] for n in ("many-3", "many-6")] == [3, 6]
    assert all(lengths[n][t]["runs"] == 1 for n in lengths for t in ("gradscope", "gradscope --no-isolation", "peer"))
    assert results["many"]["disk_bytes"] > 0
