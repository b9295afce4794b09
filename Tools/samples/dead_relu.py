"""dead-relu: a learning-rate spike kills most units of one hidden layer.

Model: 16-24-24-4 ReLU MLP (PyTorch default init) (Linear layers 0, 2, 4; ReLUs 1, 3), Adam with
lr 1e-3, except that steps 200-209 run at lr 0.2 (a misconfigured warm
restart). The spike drives most units of the second hidden layer (Linear
"2", ReLU "3") to negative pre-activations for every input: they output 0,
and the gradients of their rows of 2.weight and entries of 2.bias become
exactly 0 from then on (16 of 24 units output 0 on all 4096 training rows
after the spike; 18-19 on the 128 probe rows). The first hidden layer
survives.

600 steps, saved every 50 (step 0 = initial state). Probe: 128 fixed
training rows; saved: the post-ReLU output of both hidden layers
(/activations/hidden1 = module "1", /activations/hidden2 = module "3")
and the logits (module "4").
"""

import common

import torch
from torch import nn

from gradscope_export.torch import TorchExporter

SEED = 3
STEPS, EVERY, BATCH = 600, 50, 64
BASE_LR, SPIKE_LR, SPIKE = 1e-3, 0.2, range(200, 210)


def main():
    out = common.parse_out("dead-relu")
    g = common.seed_torch(SEED)
    x, y = common.teacher_data(g)
    model = nn.Sequential(
        nn.Linear(16, 24), nn.ReLU(),
        nn.Linear(24, 24), nn.ReLU(),
        nn.Linear(24, 4),
    )
    opt = torch.optim.Adam(model.parameters(), lr=BASE_LR)
    crit = nn.CrossEntropyLoss()
    ex = TorchExporter(model, opt, out, every=EVERY, probe=x[:128],
                       probe_modules={"hidden1": "1", "hidden2": "3", "logits": "4"})

    def schedule(step):
        for group in opt.param_groups:
            group["lr"] = SPIKE_LR if step in SPIKE else BASE_LR

    losses = common.train(model, opt, crit, common.Batches(x, y, BATCH, g), ex, STEPS, before_step=schedule)
    with torch.no_grad():
        h2 = model[:4](x)
    dead = int(((h2 > 0).sum(0) == 0).sum())
    print(f"dead-relu: {len(ex.saved)} files in {out}; loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
          f"hidden2 units dead on all {len(x)} rows: {dead}/24")


if __name__ == "__main__":
    main()
