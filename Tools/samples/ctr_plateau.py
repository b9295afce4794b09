"""ctr-plateau: the BCE loss sits at ln 2 = 0.6931 for thousands of steps,
then falls (the CTR story: "BCE loss stuck at 0.693 in the beginning of
training, then it started to decrease, why?").

Model: 3 categorical fields (vocabulary 30 each) -> embeddings of size 8
initialised uniform(-1e-3, 1e-3) -> concatenation (24) -> a deep head of 4
Linear layers with LeakyReLU between (24-16-16-8-1, PyTorch default init)
-> one logit -> BCEWithLogitsLoss. Adam with a Noam warm-up schedule:
    lr(s) = factor * d_model**-0.5 * min(s**-0.5, s * warmup**-1.5)
with factor 0.008, d_model 24, warmup 3000 (peak lr 3.0e-5 at step 3000).

Data: clicks from a fixed logistic "truth" over the three ids (per-id effects
plus one interaction), ~50% positive; 32768 rows, batch 1024.

Why it plateaus: the embeddings start ~1e-3, so every logit is the same
constant (set by the head's biases) and the loss is ln 2 + (offset); the
gradient reaching the embeddings is damped by the 4-layer head, and the
warm-up lr is tiny, so the spread of the logits needs thousands of steps to grow.
Once it does, the loss falls, even though the Noam lr then decays.

9600 steps, saved every 800 (step 0 = initial state). Probe: 256 fixed rows;
their logits (the output of head.6) are saved as /activations/logits.
"""

import common

import torch
from torch import nn

from gradscope_export.torch import TorchExporter

SEED = 0
FIELDS, VOCAB, DIM = 3, 30, 8
STEPS, EVERY, BATCH = 9600, 800, 1024
FACTOR, WARMUP = 0.008, 3000


class CTR(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.ModuleList([nn.Embedding(VOCAB, DIM) for _ in range(FIELDS)])
        for e in self.emb:
            nn.init.uniform_(e.weight, -1e-3, 1e-3)
        self.head = nn.Sequential(
            nn.Linear(FIELDS * DIM, 16), nn.LeakyReLU(),
            nn.Linear(16, 16), nn.LeakyReLU(),
            nn.Linear(16, 8), nn.LeakyReLU(),
            nn.Linear(8, 1),
        )

    def forward(self, ids):
        x = torch.cat([e(ids[:, i]) for i, e in enumerate(self.emb)], dim=1)
        return self.head(x).squeeze(1)


def make_data(g, n=32768):
    ids = torch.randint(0, VOCAB, (n, FIELDS), generator=g)
    eff = torch.randn(FIELDS, VOCAB, generator=g)
    a, b, c = eff[0, ids[:, 0]], eff[1, ids[:, 1]], eff[2, ids[:, 2]]
    logit = a + b + c + 0.8 * a * b
    logit = logit - logit.median()
    clicks = (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
    return ids, clicks


def noam(step):
    s = max(step, 1)
    return FACTOR * (FIELDS * DIM) ** -0.5 * min(s ** -0.5, s * WARMUP ** -1.5)


def main():
    out = common.parse_out("ctr-plateau")
    g = common.seed_torch(SEED)
    ids, clicks = make_data(g)
    model = CTR()
    opt = torch.optim.Adam(model.parameters(), lr=noam(1))
    crit = nn.BCEWithLogitsLoss()
    probe = ids[:256]
    ex = TorchExporter(model, opt, out, every=EVERY, probe=probe, probe_modules={"logits": "head.6"})

    idx = torch.randint(0, len(ids), (BATCH,), generator=g)
    with torch.no_grad():
        ex.step(0, crit(model(ids[idx]), clicks[idx]), lr=noam(1))
    for step in range(1, STEPS + 1):
        if step > 1:
            idx = torch.randint(0, len(ids), (BATCH,), generator=g)
        for group in opt.param_groups:
            group["lr"] = noam(step)
        opt.zero_grad()
        loss = crit(model(ids[idx]), clicks[idx])
        loss.backward()
        opt.step()
        ex.step(step, loss)  # lr saved = the lr this step used
    print(f"ctr-plateau: {len(ex.saved)} files in {out}; final batch loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
