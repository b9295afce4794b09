"""frozen-layer: one Linear layer's parameters were left out of the
optimizer (the classic "built the optimizer from a filtered parameter list"
bug). Its weights never change, and since optimizer.zero_grad() clears only
the optimizer's own parameters, its .grad keeps accumulating step after step.

Model: 16-24-24-4 ReLU MLP (Linear layers net.0, net.2, net.4), Adam lr
1e-3 over every parameter EXCEPT net.2.weight and net.2.bias (the middle
layer). Same kind of data as `healthy` (teacher labels, 4 classes). 600
steps, saved every 50 (step 0 = initial state). Probe: 32 fixed training
rows; the logits (module net.4) are saved.
"""

import common

import torch
from torch import nn

from gradscope_export.torch import TorchExporter

SEED = 2
STEPS, EVERY, BATCH = 600, 50, 64
FROZEN = "net.2"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(16, 24), nn.ReLU(),
            nn.Linear(24, 24), nn.ReLU(),
            nn.Linear(24, 4),
        )

    def forward(self, x):
        return self.net(x)


def main():
    out = common.parse_out("frozen-layer")
    g = common.seed_torch(SEED)
    x, y = common.teacher_data(g)
    model = Net()
    params = [p for n, p in model.named_parameters() if not n.startswith(FROZEN + ".")]
    opt = torch.optim.Adam(params, lr=1e-3)
    crit = nn.CrossEntropyLoss()
    ex = TorchExporter(model, opt, out, every=EVERY, probe=x[:32], probe_modules={"logits": "net.4"})
    losses = common.train(model, opt, crit, common.Batches(x, y, BATCH, g), ex, STEPS)
    print(f"frozen-layer: {len(ex.saved)} files in {out}; loss {losses[0]:.4f} -> {losses[-1]:.4f}")


if __name__ == "__main__":
    main()
