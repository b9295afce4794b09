"""gradscope reads a safetensors file written by the real `safetensors` library.

Skipped when `safetensors` is not installed, or when the gradscope binary ($GRADSCOPE_BIN,
else .build/debug/gradscope in the repository) has not been built.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from gradscope_cli import run

pytest.importorskip("safetensors")
np = pytest.importorskip("numpy")

SAMPLES = Path(__file__).resolve().parents[1]
if str(SAMPLES) not in sys.path:
    sys.path.insert(0, str(SAMPLES))

import write_safetensors  # noqa: E402


def test_inspect_reads_what_the_library_wrote(tmp_path):
    path = tmp_path / "model.safetensors"
    written = write_safetensors.write(str(path), step=300)
    done = run("inspect", str(path), "--format", "json")
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert report["layout"] == "safetensors"
    assert report["step"] == 300
    listed = {t["name"]: t for t in report["tensors"]}
    floats = {name: values for name, values in written.items() if values.dtype.kind == "f"}
    assert set(listed) == set(floats)
    for name, values in floats.items():
        stats = listed[name]["stats"]
        exact = values.astype(np.float64).ravel()
        assert stats["count"] == exact.size
        assert stats["min"] == pytest.approx(exact.min(), rel=1e-12, abs=0)
        assert stats["max"] == pytest.approx(exact.max(), rel=1e-12, abs=0)
        assert stats["mean"] == pytest.approx(exact.mean(), rel=1e-9, abs=1e-15)
    assert listed["net.0.weight"]["unit_axis"] == 0
    assert any(s["item"].endswith(":embeddings.position_ids") for s in report["skipped"])


def test_ls_lists_what_the_library_wrote(tmp_path):
    path = tmp_path / "model.safetensors"
    written = write_safetensors.write(str(path))
    done = run("ls", str(path), "--format", "json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    objects = {o["name"]: o for o in listing["objects"]}
    assert set(objects) == set(written)
    for name, values in written.items():
        assert objects[name]["shape"] == list(values.shape)
        assert objects[name]["size"] == values.nbytes
