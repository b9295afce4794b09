"""vanishing-sigmoid: a deep sigmoid MLP whose early layers get almost no
gradient.

Model: 8 Linear layers, 16 -> 12 -> ... -> 12 -> 4 (layers.0 ... layers.7),
a sigmoid after each of the first 7, PyTorch default init, 4-class cross-entropy, SGD
lr 0.1 momentum 0.9. Each sigmoid multiplies the back-propagated gradient
by at most 0.25 and the default weights shrink it further, so the gradient
of layers.0 is orders of magnitude smaller than that of layers.7; the loss
hardly moves from ln 4.

Same kind of data as `healthy` (teacher labels, 4 classes). 600 steps,
saved every 50 (step 0 = initial state). Probe: 32 fixed training
rows; the logits (layers.7) are saved.
"""

import common

import torch
from torch import nn

from gradscope_export.torch import TorchExporter

SEED = 5
STEPS, EVERY, BATCH = 600, 50, 64
DEPTH, WIDTH = 8, 12


class DeepSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        dims = [16] + [WIDTH] * (DEPTH - 1) + [4]
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])])

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < DEPTH - 1:
                x = torch.sigmoid(x)
        return x


def main():
    out = common.parse_out("vanishing-sigmoid")
    g = common.seed_torch(SEED)
    x, y = common.teacher_data(g)
    model = DeepSigmoid()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    ex = TorchExporter(model, opt, out, every=EVERY, probe=x[:32], probe_modules={"logits": f"layers.{DEPTH - 1}"})
    losses = common.train(model, opt, crit, common.Batches(x, y, BATCH, g), ex, STEPS)
    first = sum(losses[:40]) / 40
    last = sum(losses[-40:]) / 40
    print(f"vanishing-sigmoid: {len(ex.saved)} files in {out}; mean loss of first 40 steps {first:.4f}, "
          f"of last 40 {last:.4f}")


if __name__ == "__main__":
    main()
