"""dead-middle: the middle ReLU layer of an MLP is dead from initialisation.

Model: 16-24-24-2 ReLU MLP in plain numpy (Linear layers 0, 2, 4; ReLUs 1, 3; He-normal
weights), whose middle layer's biases are initialised to -50 (a bias-initialisation bug): the
pre-activations of layer 2 are below zero for every input, so ReLU 3 outputs 0 everywhere.
Layer 4 then sees an all-zero input: its weight gradient is exactly zero while its bias gradient
is not, the ReLU passes back nothing, so layers 2 and 0 get exactly zero gradient, and only the
output bias learns (the class prior): the loss sits at ln 2. Adam, lr 1e-3, batch 64, 2048
standard-normal rows with two balanced classes from a random linear teacher.

240 steps, saved every 20 (step 0 = initial state: weights only).
"""

import common

import numpy as np

from gradscope_export import save_step
from numpy_mlp import MLP, Adam, teacher_data

SEED = 11
STEPS, EVERY, BATCH, LR = 240, 20, 64, 1e-3


def main():
    out = common.parse_out("dead-middle")
    rng = np.random.default_rng(SEED)
    x, y = teacher_data(rng)
    model = MLP(rng)
    model.params["2.bias"][:] = -50.0
    opt = Adam(model.params, LR)
    loss0, _ = model.loss_and_grads(x[:BATCH], y[:BATCH])
    save_step(f"{out}/step_{0:06d}.h5", 0, model.params, loss=loss0, lr=LR, optimizer_name=opt.name,
              in_optimizer=set(model.params))
    for step in range(1, STEPS + 1):
        idx = rng.integers(0, len(x), BATCH)
        loss, grads = model.loss_and_grads(x[idx], y[idx])
        opt.step(model.params, grads)
        if step % EVERY == 0:
            save_step(f"{out}/step_{step:06d}.h5", step, model.params, gradients=grads, optimizer=opt.state(),
                      loss=loss, lr=LR, optimizer_name=opt.name, in_optimizer=set(model.params))
    print(f"dead-middle: {STEPS // EVERY + 1} files in {out}, last loss {loss:.4f}")


if __name__ == "__main__":
    main()
