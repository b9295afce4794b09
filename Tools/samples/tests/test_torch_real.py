"""gradscope reads archives written by the real `torch.save`.

Skipped when PyTorch is not installed, or when the gradscope binary ($GRADSCOPE_BIN, else
.build/debug/gradscope in the repository) has not been built.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from gradscope_cli import run

torch = pytest.importorskip("torch")

def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_inspect_reads_a_state_dict(tmp_path):
    model = small_model()
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    done = run("inspect", str(path), "--format", "json")
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert report["layout"] == "torch"
    listed = {t["name"]: t for t in report["tensors"]}
    assert set(listed) == set(model.state_dict())
    for name, tensor in model.state_dict().items():
        values = tensor.double().flatten()
        stats = listed[name]["stats"]
        assert stats["count"] == values.numel()
        assert stats["min"] == pytest.approx(values.min().item(), rel=1e-12, abs=0)
        assert stats["max"] == pytest.approx(values.max().item(), rel=1e-12, abs=0)


def test_inspect_maps_adam_state_of_a_training_checkpoint(tmp_path):
    model = small_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(16, 4)).pow(2).mean().backward()
        optimizer.step()
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 2, "step": 300}, path)
    done = run("inspect", str(path), "--format", "json")
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert report["step"] == 300
    slots = {(t["name"], t.get("slot")) for t in report["tensors"] if t["role"] == "optimizer"}
    for name in model.state_dict():
        assert (name, "exp_avg") in slots and (name, "exp_avg_sq") in slots


def test_a_pickle_calling_a_function_is_refused(tmp_path):
    class Hostile:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "hostile.pt"
    torch.save({"x": Hostile()}, path)
    done = run("inspect", str(path))
    assert done.returncode == 2
    assert "os.system" in done.stderr or "posix.system" in done.stderr
