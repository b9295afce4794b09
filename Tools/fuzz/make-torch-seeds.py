#!/usr/bin/env python3
"""Writes the seeds of the safetensors, torch and pickle fuzz targets, with the real libraries:
seeds/safetensors/*.safetensors (safetensors), seeds/torch/*.pt (torch.save) and
seeds/pickle/*.pkl (the data.pkl of each torch seed). Small tensors keep the fuzzer fast.
Re-run with `python3 make-torch-seeds.py` (numpy, safetensors, torch).
"""
import io
import os
import zipfile

import numpy as np
import torch
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "seeds")


def main():
    rng = np.random.default_rng(11)
    for kind in ("safetensors", "torch", "pickle"):
        os.makedirs(os.path.join(OUT, kind), exist_ok=True)

    def st(name, tensors, metadata=None):
        save_file(tensors, os.path.join(OUT, "safetensors", name), metadata=metadata)

    st("mlp.safetensors", {"net.0.weight": rng.standard_normal((4, 3)).astype(np.float32),
                           "net.0.bias": np.zeros(4, np.float32),
                           "net.2.weight": rng.standard_normal((2, 4)).astype(np.float32)},
       {"format": "pt", "step": "100"})
    st("dtypes.safetensors", {"a.f16": rng.standard_normal(6).astype(np.float16),
                              "b.f64": rng.standard_normal((2, 3)),
                              "c.i64": np.arange(4, dtype=np.int64),
                              "d.u8": np.arange(5, dtype=np.uint8),
                              "e.bool": np.array([True, False, True]),
                              "f.i8": np.arange(-3, 3, dtype=np.int8)})
    import safetensors.torch as stt
    stt.save_file({"x.bf16": torch.randn(2, 4).to(torch.bfloat16),
                   "y.e4m3": torch.randn(8).to(torch.float8_e4m3fn),
                   "z.e5m2": torch.randn(8).to(torch.float8_e5m2),
                   "step": torch.tensor(7)}, os.path.join(OUT, "safetensors", "torch-dtypes.safetensors"))

    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()

    def pt(name, obj):
        path = os.path.join(OUT, "torch", name)
        torch.save(obj, path)
        with zipfile.ZipFile(path) as z:
            pickle = next(n for n in z.namelist() if n.endswith("/data.pkl"))
            with open(os.path.join(OUT, "pickle", name[:-3] + ".pkl"), "wb") as f:
                f.write(z.read(pickle))

    pt("state-dict.pt", model.state_dict())
    pt("model-optimizer.pt", {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1, "step": 1})
    pt("optimizer.pt", optimizer.state_dict())
    pt("lightning.pt", {"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()],
                        "global_step": 1, "epoch": 0, "pytorch-lightning_version": "2.4.0"})
    pt("views.pt", {"half": torch.randn(6).half(), "view": torch.arange(12.0).view(3, 4)[1:], "t": torch.randn(3, 2).t(),
                    "i": torch.arange(3), "d": torch.randn(2, dtype=torch.float64)})


if __name__ == "__main__":
    main()
