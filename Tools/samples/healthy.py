"""healthy: a small ReLU MLP classifier (PyTorch, Adam, default init, lr 1e-3)
that trains normally. Nothing is wrong with it: gradscope should stay quiet.

Data: 4 classes, 16 features (standardised), labels from a fixed random
teacher network; 4096 samples, batch 64. 800 steps, saved every 50 (step 0 =
initial weights). Probe: 32 fixed training samples; activations of both
hidden ReLUs and the logits are saved.
"""

import common

import torch
from torch import nn

from gradscope_export.torch import TorchExporter

SEED = 1
STEPS, EVERY, BATCH = 800, 50, 64


def main():
    out = common.parse_out("healthy")
    g = common.seed_torch(SEED)
    x, y = common.teacher_data(g)
    model = nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(),
        nn.Linear(32, 32), nn.ReLU(),
        nn.Linear(32, 4),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = nn.CrossEntropyLoss()
    ex = TorchExporter(model, opt, out, every=EVERY, probe=x[:32],
                       probe_modules={"logits": "4", "hidden1": "1", "hidden2": "3"})
    losses = common.train(model, opt, crit, common.Batches(x, y, BATCH, g), ex, STEPS)
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    print(f"healthy: {len(ex.saved)} files in {out}; loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
          f"train accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
