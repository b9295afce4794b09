"""exploding-nan: unscaled inputs + SGD -> exploding gradients -> Inf/NaN.

Regression on raw features between 1e3 and 1e4 (think square metres, prices,
counts: nobody standardised them); target = a linear function of the
features / 1e3 plus noise. Model 8-16-1 with LeakyReLU(0.2), MSE loss, SGD
lr 3e-8 momentum 0.9. The gradients are ~1e7 from the first step (inputs of
~1e4 squared), the steps overshoot, the weights grow, and within a few saves
the gradients explode, the loss goes to Inf and the weights to NaN.
Saving continues after that: the later files hold NaN everywhere.

24 steps, saved every 2 (step 0 = initial state). Probe: 32 fixed rows;
the output (module "2") is saved. This run is written with
compression="gzip" (chunked, compressed datasets), so that readers are
exercised on such files too.
"""

import common

import torch
from torch import nn

from gradscope_export.torch import TorchExporter

SEED = 4
STEPS, EVERY, BATCH = 24, 2, 64


def main():
    out = common.parse_out("exploding-nan")
    g = common.seed_torch(SEED)
    x = 1e3 + 9e3 * torch.rand(2048, 8, generator=g)
    w = torch.randn(8, generator=g)
    y = (x @ w / 1e3 + torch.randn(2048, generator=g)).unsqueeze(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=3e-8, momentum=0.9)
    crit = nn.MSELoss()
    ex = TorchExporter(model, opt, out, every=EVERY, probe=x[:32], probe_modules={"output": "2"},
                       compression="gzip")
    losses = common.train(model, opt, crit, common.Batches(x, y, BATCH, g), ex, STEPS)
    first_bad = next((i + 1 for i, v in enumerate(losses) if not torch.isfinite(torch.tensor(v))), None)
    print(f"exploding-nan: {len(ex.saved)} files in {out}; loss {losses[0]:.3e} -> {losses[-1]}; "
          f"first non-finite loss at step {first_bad}")


if __name__ == "__main__":
    main()
