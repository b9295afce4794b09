"""keras-weights-h5: files written by Keras 3 itself (JAX backend), in the
Keras 3 `.weights.h5` layout (layers/<class>/vars/<i>, optimizer/vars/<i>).

Model: Sequential 16 -> Dense "hidden1" (32, relu) -> Dense "hidden2"
(32, relu) -> Dense "logits" (4), cross-entropy from logits, Adam lr 1e-3,
model.fit with batch 64 over 4096 teacher-labelled rows (10 epochs = 640
optimizer steps). "hidden2" is set trainable=False before compiling: it is
frozen, so it has no optimizer slots and its weights never change; the
other two layers train normally.

A callback calls model.save_weights(".../step_{n:06d}.weights.h5") when
training begins (step 0) and after every 64th optimizer step (the
optimizer's iteration count).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import common  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

SEED = 7
EVERY, EPOCHS, BATCH = 64, 10, 64


def teacher_data(seed, n=4096, d_in=16, n_classes=4, hidden=24):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_in)).astype("float32")
    t1 = rng.standard_normal((d_in, hidden))
    t2 = rng.standard_normal((hidden, n_classes))
    y = (np.tanh(x @ t1) @ t2).argmax(1).astype("int32")
    return x, y


def build(frozen=None):
    model = keras.Sequential([
        keras.Input((16,)),
        keras.layers.Dense(32, activation="relu", name="hidden1"),
        keras.layers.Dense(32, activation="relu", name="hidden2"),
        keras.layers.Dense(4, name="logits"),
    ], name="classifier")
    if frozen:
        model.get_layer(frozen).trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class SaveEvery(keras.callbacks.Callback):
    """Let Keras write the checkpoint itself every `every` optimizer steps."""

    def __init__(self, out, every, save):
        super().__init__()
        self.out, self.every, self.save = out, every, save
        self.step = 0
        self.saved = []

    def _save(self):
        path = os.path.join(self.out, self.save[1].format(step=self.step))
        getattr(self.model, self.save[0])(path)  # self.model syncs the JAX state first
        self.saved.append(path)

    def on_train_begin(self, logs=None):
        self.step = int(self.model.optimizer.iterations.numpy())
        if self.step % self.every == 0:
            self._save()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0:
            self._save()


def main():
    out = common.parse_out("keras-weights-h5")
    keras.utils.set_random_seed(SEED)
    x, y = teacher_data(SEED)
    model = build(frozen="hidden2")
    cb = SaveEvery(out, EVERY, ("save_weights", "step_{step:06d}.weights.h5"))
    hist = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=True, verbose=0, callbacks=[cb])
    losses = hist.history["loss"]
    print(f"keras-weights-h5: {len(cb.saved)} files in {out}; epoch loss {losses[0]:.4f} -> {losses[-1]:.4f} "
          f"(keras {keras.__version__}, backend {keras.backend.backend()})")


if __name__ == "__main__":
    main()
