"""healthy: a small ReLU MLP classifier (PyTorch, Adam lr 1e-3, He init)
that trains normally. Nothing is wrong with it: gradscope should stay quiet.

Data: 4 classes, 16 features (standardised), labels from a fixed random
teacher network; 4096 samples, batch 64. Model 16-24-24-4 (Linear layers
0, 2, 4), He-normal weights and zero biases. 720 steps, saved every 60
(step 0 = initial weights). Probe: 64 fixed training samples; the outputs
of both hidden ReLUs (modules "1", "3") and the logits ("4") are saved.
"""

import common

import torch
from torch import nn

from gradscope_export.torch import TorchExporter

SEED = 1
STEPS, EVERY, BATCH = 720, 60, 64


def main():
    out = common.parse_out("healthy")
    g = common.seed_torch(SEED)
    x, y = common.teacher_data(g)
    model = nn.Sequential(
        nn.Linear(16, 24), nn.ReLU(),
        nn.Linear(24, 24), nn.ReLU(),
        nn.Linear(24, 4),
    )
    for layer in model:
        if isinstance(layer, nn.Linear):  # He init for the ReLU layers, zero biases
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = nn.CrossEntropyLoss()
    ex = TorchExporter(model, opt, out, every=EVERY, probe=x[:64],
                       probe_modules={"logits": "4", "hidden1": "1", "hidden2": "3"})
    losses = common.train(model, opt, crit, common.Batches(x, y, BATCH, g), ex, STEPS)
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    print(f"healthy: {len(ex.saved)} files in {out}; loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
          f"train accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
