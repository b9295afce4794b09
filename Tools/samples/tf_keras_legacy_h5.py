"""tf-keras-legacy-h5 (optional run): files written by tf-keras 2 (the
Keras 2 API kept for TensorFlow, TF_USE_LEGACY_KERAS=1) as legacy HDF5 with
model.save("...h5"): /model_weights with "hidden1/kernel:0"-style weight
names and /optimizer_weights named "iteration:0", "SGD/m/<layer>/<var>:0".
At step 0 the optimizer has no slots yet, so that file holds iteration:0
alone.

Pathology: exploding -> NaN, as in `exploding-nan`: regression on raw
features between 1e3 and 1e4, model 8 -> Dense "hidden1" (16, LeakyReLU 0.2)
-> Dense "output" (1), MSE, SGD lr 1e-8 momentum 0.9, batch 64. The weights
blow up within a few steps and turn Inf/NaN; saving goes on.
24 steps, saved at step 0 and every 2 steps.

Needs tensorflow-cpu and tf-keras (make_all.sh runs it with $TF_PYTHON, and
skips it when that interpreter lacks them).
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import logging  # noqa: E402
import warnings  # noqa: E402

import common  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

SEED = 9
STEPS, EVERY, BATCH = 24, 2, 64


class SaveEvery(keras.callbacks.Callback):
    def __init__(self, out, every):
        super().__init__()
        self.out, self.every, self.step, self.saved = out, every, 0, []

    def _save(self):
        path = os.path.join(self.out, f"step_{self.step:06d}.h5")
        self.model.save(path)
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
    out = common.parse_out("tf-keras-legacy-h5")
    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(SEED)
    x = (1e3 + 9e3 * rng.random((STEPS * BATCH, 8))).astype("float32")
    w = rng.standard_normal(8)
    y = (x @ w / 1e3 + rng.standard_normal(len(x))).astype("float32")[:, None]
    model = keras.Sequential([
        keras.layers.Dense(16, input_shape=(8,), name="hidden1"),
        keras.layers.LeakyReLU(0.2, name="act"),
        keras.layers.Dense(1, name="output"),
    ], name="regressor")
    model.compile(optimizer=keras.optimizers.SGD(1e-8, momentum=0.9), loss="mse")
    cb = SaveEvery(out, EVERY)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[cb])
    print(f"tf-keras-legacy-h5: {len(cb.saved)} files in {out}; epoch loss {hist.history['loss'][-1]} "
          f"(tf-keras {keras.__version__}, tensorflow {tf.__version__})")


if __name__ == "__main__":
    main()
