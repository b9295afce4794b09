"""explode-then-dead: gradients explode on one unscaled batch, then two layers never get a
gradient again and the loss settles at ln 2.

Model: 16-24-24-2 ReLU MLP in plain numpy (Linear layers 0, 2, 4; ReLUs 1, 3; He-normal weights,
zero biases), plain SGD at lr 0.05, batch 64, 2048 standard-normal rows with two balanced classes
from a random linear teacher. The batch of step 60 arrives unscaled (its features 10^4 times
too large, a preprocessing step skipped): its gradient, saved at step 60, is about 10^4 times the
earlier ones and far larger than the weights, and the update it makes throws the weights so far
that within the next saves the pre-activations of layer 2 are below zero for every input: ReLU 3
outputs 0, the gradients of layers 2 and 0 are exactly zero at every save from step 100, and only
the output layer's bias learns (the class prior): the loss sits at ln 2.

300 steps, saved every 20 (step 0 = initial state: weights only).
"""

import common

import numpy as np

from gradscope_export import save_step
from numpy_mlp import MLP, SGD, teacher_data

SEED = 0
STEPS, EVERY, BATCH, LR, BAD_STEP, BAD_SCALE = 300, 20, 64, 0.05, 60, 1e4


def main():
    out = common.parse_out("explode-then-dead")
    rng = np.random.default_rng(SEED)
    x, y = teacher_data(rng)
    model = MLP(rng)
    opt = SGD(LR)
    loss0, _ = model.loss_and_grads(x[:BATCH], y[:BATCH])
    save_step(f"{out}/step_{0:06d}.h5", 0, model.params, loss=loss0, lr=LR, optimizer_name=opt.name,
              in_optimizer=set(model.params))
    with np.errstate(over="ignore"):
        for step in range(1, STEPS + 1):
            idx = rng.integers(0, len(x), BATCH)
            batch = x[idx] * np.float32(BAD_SCALE) if step == BAD_STEP else x[idx]
            loss, grads = model.loss_and_grads(batch, y[idx])
            opt.step(model.params, grads)
            if step % EVERY == 0:
                save_step(f"{out}/step_{step:06d}.h5", step, model.params, gradients=grads, loss=loss, lr=LR,
                          optimizer_name=opt.name, in_optimizer=set(model.params))
    print(f"explode-then-dead: {STEPS // EVERY + 1} files in {out}, last loss {loss:.4f}")


if __name__ == "__main__":
    main()
