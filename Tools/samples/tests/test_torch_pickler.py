"""gradscope reads a torch.save-style archive whose data.pkl CPython's own pickler wrote.

PyTorch is not needed: stand-ins with torch's module paths and names (`torch._utils._rebuild_tensor_v2`,
`torch.FloatStorage`, ...) make `pickle.Pickler` (protocol 2, with torch.save's `persistent_id`)
write the opcodes and GLOBALs torch.save writes, memo and BUILD of a state_dict's `_metadata`
included; `zipfile` writes the archive's stored entries. Skipped when the gradscope binary
($GRADSCOPE_BIN, else .build/debug/gradscope in the repository) has not been built.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import pytest
from gradscope_cli import run

def stand_ins():
    """Modules named as torch's, holding functions and classes named as torch's (never called)."""
    if "torch" in sys.modules and not getattr(sys.modules["torch"], "_gradscope_stand_in", False):
        pytest.skip("the real torch is imported: test_torch_real.py covers it")
    torch = types.ModuleType("torch")
    torch._gradscope_stand_in = True
    utils = types.ModuleType("torch._utils")
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    for name in ["_rebuild_tensor_v2", "_rebuild_parameter"]:
        function = types.FunctionType((lambda *a: None).__code__, {}, name)
        function.__module__, function.__qualname__ = "torch._utils", name
        setattr(utils, name, function)
    for name in ["FloatStorage", "HalfStorage"]:
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    return torch, utils


class Storage:
    def __init__(self, key: str, kind: str, data: list[float]):
        self.key, self.kind, self.data = key, kind, data


def write_archive(path: Path, build) -> None:
    torch, utils = stand_ins()
    storages: list[Storage] = []

    class Tensor:
        def __init__(self, storage, shape, parameter=False):
            self.storage, self.shape, self.parameter = storage, shape, parameter

        def __reduce__(self):
            if self.parameter:
                return (utils._rebuild_parameter, (Tensor(self.storage, self.shape), True, collections.OrderedDict()))
            stride, running = [], 1
            for dimension in reversed(self.shape):
                stride.insert(0, running)
                running *= dimension
            return (utils._rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), tuple(stride), False, collections.OrderedDict()))

    def tensor(values, shape, kind="f", parameter=False):
        storage = Storage(str(len(storages)), kind, values)
        storages.append(storage)
        return Tensor(storage, shape, parameter)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                kind = torch.FloatStorage if obj.kind == "f" else torch.HalfStorage
                return ("storage", kind, obj.key, "cpu", len(obj.data))
            return None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(build(tensor))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("checkpoint/data.pkl", buffer.getvalue())
        archive.writestr("checkpoint/byteorder", "little")
        for storage in storages:
            kind = "<%d%s" % (len(storage.data), "f" if storage.kind == "f" else "e")
            archive.writestr(f"checkpoint/data/{storage.key}", struct.pack(kind, *storage.data))
        archive.writestr("checkpoint/version", "3\n")


def test_a_training_checkpoint_as_cpython_pickles_it(tmp_path):
    weight = [0.5, -1.0, 2.0, 4.0, -0.25, 1.5]

    def build(tensor):
        state = collections.OrderedDict()
        state["fc.weight"] = tensor(weight, [2, 3], parameter=True)
        state["fc.bias"] = tensor([0.5, -0.25], [2], kind="e")
        state._metadata = collections.OrderedDict([("", {"version": 1}), ("fc", {"version": 1})])
        moments = {
            index: {"step": 3.0, "exp_avg": tensor([0.1] * size, shape), "exp_avg_sq": tensor([0.01] * size, shape)}
            for index, (size, shape) in enumerate([(6, [2, 3]), (2, [2])])
        }
        group = {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False, "params": [0, 1]}
        return {"model": state, "optimizer": {"state": moments, "param_groups": [group]}, "epoch": 4, "step": 1200}

    path = tmp_path / "checkpoint.pt"
    write_archive(path, build)
    done = run("inspect", str(path), "--format", "json")
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert report["layout"] == "torch"
    assert report["step"] == 1200
    weights = {t["name"]: t for t in report["tensors"] if t["role"] == "weight"}
    assert set(weights) == {"fc.weight", "fc.bias"}
    assert weights["fc.weight"]["stats"]["min"] == -1.0 and weights["fc.weight"]["stats"]["max"] == 4.0
    assert weights["fc.bias"]["dtype"] == "float16"
    slots = {(t["name"], t.get("slot")) for t in report["tensors"] if t["role"] == "optimizer"}
    assert slots == {(n, s) for n in ["fc.weight", "fc.bias"] for s in ["exp_avg", "exp_avg_sq"]}


def test_a_pickle_calling_os_system_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "hostile.pt"
    write_archive(path, lambda tensor: {"fc.weight": tensor([1.0], [1]), "x": Hostile()})
    done = run("inspect", str(path))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "system is not allowed" in done.stderr
    assert not marker.exists()
