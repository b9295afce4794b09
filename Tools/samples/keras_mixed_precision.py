"""keras-mixed-precision: files written by Keras 3 itself (JAX backend) under the
"mixed_float16" policy, in the Keras 3 `.weights.h5` layout.

Under mixed precision `compile` wraps the optimizer in a LossScaleOptimizer, and
`save_weights` writes the real optimizer's variables under
`optimizer/inner_optimizer/vars/<i>` (iteration, learning rate, then momentum and
velocity per trainable variable), while `optimizer/vars/<i>` holds the wrapper's
own counters and loss scale and, in Keras 3.15, a copy of the inner variables.

Model: Sequential 16 -> Dense "hidden" (32, relu; float16 compute, float32
variables) -> Dense "logits" (4, float32), cross-entropy from logits, Adam lr 1e-3,
model.fit with batch 64 over 2048 teacher-labelled rows (4 epochs = 128 optimizer
steps). Healthy: it should report nothing.

A callback calls model.save_weights(".../step_{n:06d}.weights.h5") when training
begins (step 0) and after every 32nd optimizer step. After training, the model
is also saved whole, once as a `.keras` zip and once as a legacy `.h5` (where
the wrapper's counters sit in `optimizer_weights/loss_scale_optimizer/` beside
the real optimizer's `optimizer_weights/adam/`), in
SampleCheckpoints/keras-mixed-precision-final/.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import common  # noqa: E402

import keras  # noqa: E402

from keras_weights_h5 import SaveEvery, teacher_data  # noqa: E402

SEED = 11
EVERY, EPOCHS, BATCH, ROWS = 32, 4, 64, 2048


def build():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = keras.Sequential([
        keras.Input((16,)),
        keras.layers.Dense(32, activation="relu", name="hidden"),
        keras.layers.Dense(4, name="logits", dtype="float32"),
    ], name="mixed")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def main():
    out = common.parse_out("keras-mixed-precision")
    keras.utils.set_random_seed(SEED)
    x, y = teacher_data(SEED, n=ROWS)
    model = build()
    cb = SaveEvery(out, EVERY, ("save_weights", "step_{step:06d}.weights.h5"))
    hist = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=True, verbose=0, callbacks=[cb])
    final = os.path.join(os.path.dirname(out), "keras-mixed-precision-final")
    os.makedirs(final, exist_ok=True)
    model.save(os.path.join(final, "final.keras"))
    model.save(os.path.join(final, "final.h5"))
    losses = hist.history["loss"]
    print(f"keras-mixed-precision: {len(cb.saved)} files in {out}; epoch loss {losses[0]:.4f} -> {losses[-1]:.4f} "
          f"(keras {keras.__version__}, backend {keras.backend.backend()}, optimizer {type(model.optimizer).__name__})")


if __name__ == "__main__":
    main()
