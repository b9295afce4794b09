"""keras-legacy-h5: files written by Keras 3 itself (JAX backend) in the
legacy HDF5 format: model.save("...h5") writes /model_weights (attrs
layer_names, weight_names per layer) and /optimizer_weights (Keras 3 names:
adam/iteration, adam/learning_rate, adam/<layer>_<var>_momentum and
_velocity), plus the model config as a root attribute.

Healthy: the same model and data as keras-weights-h5 (Sequential 16 ->
Dense "hidden1" 32 relu -> Dense "hidden2" 32 relu -> Dense "logits" 4,
Adam lr 1e-3, batch 64, 10 epochs = 640 steps) with every layer trainable
and another seed. Saved with model.save(".../step_{n:06d}.h5") at step 0
and after every 64th optimizer step.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import logging  # noqa: E402
import warnings  # noqa: E402

import common  # noqa: E402

import keras  # noqa: E402

from keras_weights_h5 import BATCH, EPOCHS, EVERY, SaveEvery, build, teacher_data  # noqa: E402

SEED = 8


def main():
    out = common.parse_out("keras-legacy-h5")
    keras.utils.set_random_seed(SEED)
    x, y = teacher_data(SEED)
    model = build()
    cb = SaveEvery(out, EVERY, ("save", "step_{step:06d}.h5"))
    logging.getLogger("absl").setLevel(logging.ERROR)  # the "legacy format" notice on every save
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy.*")
        hist = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=True, verbose=0, callbacks=[cb])
    losses = hist.history["loss"]
    print(f"keras-legacy-h5: {len(cb.saved)} files in {out}; epoch loss {losses[0]:.4f} -> {losses[-1]:.4f} "
          f"(keras {keras.__version__}, backend {keras.backend.backend()})")


if __name__ == "__main__":
    main()
