"""weight-decay-collapse: a weight decay 100x too large shrinks every weight
toward zero by orders of magnitude; the logits collapse toward 0 and the
loss climbs back to ln 4 (uniform prediction).

Model: 16-24-24-4 ReLU MLP (PyTorch default init) (Linear layers 0, 2, 4), cross-entropy, SGD
lr 0.01 momentum 0.9 weight_decay 0.1 (meant: 5e-4). Same kind of data as
`healthy`. 600 steps, saved every 50 (step 0 = initial state). Probe: 32
fixed training rows; the logits (module "4") are saved.

The decay wins from the start: the network never gets going, every weight
matrix shrinks geometrically (~500x over the run), and the logits end up
the same for every input (only the per-class biases remain).
"""

import common

import torch
from torch import nn

from gradscope_export.torch import TorchExporter

SEED = 6
STEPS, EVERY, BATCH = 600, 50, 64
WD = 0.1


def main():
    out = common.parse_out("weight-decay-collapse")
    g = common.seed_torch(SEED)
    x, y = common.teacher_data(g)
    model = nn.Sequential(
        nn.Linear(16, 24), nn.ReLU(),
        nn.Linear(24, 24), nn.ReLU(),
        nn.Linear(24, 4),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=WD)
    crit = nn.CrossEntropyLoss()
    ex = TorchExporter(model, opt, out, every=EVERY, probe=x[:32], probe_modules={"logits": "4"})
    losses = common.train(model, opt, crit, common.Batches(x, y, BATCH, g), ex, STEPS)
    print(f"weight-decay-collapse: {len(ex.saved)} files in {out}; loss {losses[0]:.4f} -> {losses[-1]:.4f}")


if __name__ == "__main__":
    main()
