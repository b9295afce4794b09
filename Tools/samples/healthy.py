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


def make_data(g):
    x = torch.randn(4096, 16, generator=g)
    t1 = torch.randn(16, 24, generator=g)
    t2 = torch.randn(24, 4, generator=g)
    y = (torch.tanh(x @ t1) @ t2).argmax(1)
    return x, y


def main():
    out = common.parse_out("healthy")
    g = common.seed_torch(SEED)
    x, y = make_data(g)
    model = nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(),
        nn.Linear(32, 32), nn.ReLU(),
        nn.Linear(32, 4),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = nn.CrossEntropyLoss()
    ex = TorchExporter(model, opt, out, every=EVERY, probe=x[:32],
                       probe_modules={"logits": "4", "hidden1": "1", "hidden2": "3"})
    perm = torch.randperm(len(x), generator=g)
    pos = 0

    def batch():
        nonlocal perm, pos
        if pos + BATCH > len(x):
            perm, pos = torch.randperm(len(x), generator=g), 0
        idx = perm[pos:pos + BATCH]
        pos += BATCH
        return x[idx], y[idx]

    xb, yb = batch()
    with torch.no_grad():
        ex.step(0, crit(model(xb), yb))
    for step in range(1, STEPS + 1):
        if step > 1:
            xb, yb = batch()
        opt.zero_grad()
        loss = crit(model(xb), yb)
        loss.backward()
        opt.step()
        ex.step(step, loss)
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    print(f"healthy: {len(ex.saved)} files in {out}; final loss {loss.item():.4f}, train accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
