"""Shared helpers of the sample-run scripts (seeding, output directory)."""

from __future__ import annotations

import argparse
import glob
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SAMPLES = os.path.join(REPO, "SampleCheckpoints")

try:  # installed with `pip install ./Tools/gradscope-export`
    import gradscope_export  # noqa: F401
except ImportError:  # or straight from the source tree
    sys.path.insert(0, os.path.join(REPO, "Tools", "gradscope-export", "src"))


def parse_out(run: str, argv=None) -> str:
    """--out DIR (default SampleCheckpoints/<run>); old step files there are removed."""
    ap = argparse.ArgumentParser(description=f"make the {run} sample run")
    ap.add_argument("--out", default=os.path.join(SAMPLES, run), help="run directory")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for pattern in ("step_*.h5", ".step_*.tmp"):
        for f in glob.glob(os.path.join(args.out, pattern)):
            os.remove(f)
    return args.out


def seed_torch(seed: int):
    """Fixed seeds, one CPU thread, deterministic kernels."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


def teacher_data(g, n=4096, d_in=16, n_classes=4, hidden=24):
    """Standard-normal features, labels from a fixed random tanh teacher."""
    import torch

    x = torch.randn(n, d_in, generator=g)
    t1 = torch.randn(d_in, hidden, generator=g)
    t2 = torch.randn(hidden, n_classes, generator=g)
    y = (torch.tanh(x @ t1) @ t2).argmax(1)
    return x, y


class Batches:
    """Shuffled mini-batches over (x, y), epoch after epoch."""

    def __init__(self, x, y, batch, g):
        self.x, self.y, self.batch, self.g = x, y, batch, g
        self.pos = len(x)

    def __call__(self):
        import torch

        if self.pos + self.batch > len(self.x):
            self.perm, self.pos = torch.randperm(len(self.x), generator=self.g), 0
        idx = self.perm[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return self.x[idx], self.y[idx]


def train(model, opt, crit, batches, exporter, steps, before_step=None):
    """The loop every PyTorch sample uses: step 0 saves the initial state
    (loss of the first batch, no gradients); then for s = 1..steps:
    zero_grad, forward, backward, optimizer.step(), exporter.step(s, loss)."""
    import torch

    xb, yb = batches()
    with torch.no_grad():
        exporter.step(0, crit(model(xb), yb))
    losses = []
    for step in range(1, steps + 1):
        if step > 1:
            xb, yb = batches()
        if before_step is not None:
            before_step(step)
        opt.zero_grad()
        loss = crit(model(xb), yb)
        loss.backward()
        opt.step()
        exporter.step(step, loss)
        losses.append(loss.item())
    return losses
