"""GradscopeCallback tests; skipped when Keras 3 (with a backend) is absent."""

import os

import numpy as np
import pytest

if "KERAS_BACKEND" not in os.environ:
    try:  # prefer JAX, the backend these tests were written with
        import jax  # noqa: F401

        os.environ["KERAS_BACKEND"] = "jax"
    except ImportError:
        pass

keras = pytest.importorskip("keras")
if not keras.__version__.startswith("3"):
    pytest.skip("needs Keras 3", allow_module_level=True)

import h5py  # noqa: E402

import gradscope_export as gx  # noqa: E402
from gradscope_export.keras import GradscopeCallback, optimizer_slots, variable_names  # noqa: E402


def _model(frozen=False):
    keras.utils.set_random_seed(1)
    inp = keras.Input((4,), name="x")
    h = keras.layers.Dense(6, activation="relu", name="hidden")(inp)
    h2 = keras.layers.Dense(5, activation="tanh", name="mid")(h)
    out = keras.layers.Dense(3, name="logits")(h2)
    m = keras.Model(inp, out, name="net")
    if frozen:
        m.get_layer("mid").trainable = False
    m.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    return x, y


def test_files_steps_and_layout(tmp_path):
    m = _model()
    x, y = _data()
    cb = GradscopeCallback(tmp_path, every=2, probe=x[:8], probe_layers=["hidden"])
    m.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[cb])  # 8 updates
    assert sorted(os.listdir(tmp_path)) == [f"step_{s:06d}.h5" for s in (0, 2, 4, 6, 8)]
    r = gx.load_step(tmp_path / "step_000008.h5")
    a = r["attrs"]
    assert a["format"] == "gradscope/1" and a["framework"] == "keras" and a["optimizer"] == "Adam"
    assert a["step"] == 8 and a["lr"] == pytest.approx(1e-2)
    assert np.isfinite(a["loss"])
    assert sorted(r["weights"]) == sorted(
        ["hidden/kernel", "hidden/bias", "mid/kernel", "mid/bias", "logits/kernel", "logits/bias"])
    # weights equal the model's at the end
    np.testing.assert_allclose(r["weights"]["logits/kernel"], m.get_layer("logits").kernel.numpy())
    assert set(r["optimizer"]) == {"momentum", "velocity"}
    assert set(r["optimizer"]["momentum"]) == set(r["weights"])
    assert r["activations"]["output"].shape == (8, 3)
    assert r["activations"]["hidden"].shape == (8, 6)
    assert (r["activations"]["hidden"] >= 0).all()
    assert r["gradients"] == {}
    assert all(r["in_optimizer"].values())
    with h5py.File(tmp_path / "step_000008.h5", "r") as f:
        assert isinstance(f["weights/hidden"], h5py.Group)
    # step 0 is the initial state: no loss
    assert "loss" not in gx.load_step(tmp_path / "step_000000.h5")["attrs"]


def test_optimizer_slots_match_keras_state(tmp_path):
    m = _model()
    x, y = _data()
    m.fit(x, y, batch_size=32, epochs=1, verbose=0)
    slots = optimizer_slots(m)
    names = variable_names(m)
    opt = m.optimizer
    for i, v in enumerate(m.trainable_variables):
        n = names[id(v)]
        assert slots["momentum"][n] is opt._momentums[i]
        assert slots["velocity"][n] is opt._velocities[i]


def test_frozen_layer_has_no_slots_and_flag_zero(tmp_path):
    m = _model(frozen=True)
    x, y = _data()
    cb = GradscopeCallback(tmp_path, every=4)
    m.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
    r0 = gx.load_step(tmp_path / "step_000000.h5")
    r = gx.load_step(tmp_path / "step_000004.h5")
    assert r["in_optimizer"]["mid/kernel"] is False and r["in_optimizer"]["hidden/kernel"] is True
    assert "mid/kernel" not in r["optimizer"]["momentum"]
    np.testing.assert_array_equal(r0["weights"]["mid/kernel"], r["weights"]["mid/kernel"])
    assert not np.array_equal(r0["weights"]["hidden/kernel"], r["weights"]["hidden/kernel"])


def test_probe_gradients(tmp_path):
    if keras.backend.backend() not in ("jax", "torch"):
        pytest.skip("probe gradients need the jax or torch backend")
    m = _model()
    x, y = _data()
    cb = GradscopeCallback(tmp_path, every=4, probe=x[:16], probe_targets=y[:16], probe_gradients=True,
                           save_initial=False)
    m.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
    r = gx.load_step(tmp_path / "step_000004.h5")
    assert r["attrs"]["gradient_source"] == "probe"
    assert set(r["gradients"]) == set(r["weights"])
    # check one gradient against a finite difference of the compiled loss
    k = m.get_layer("logits").bias
    base = k.numpy().copy()
    eps = 1e-3

    def loss_at(b):
        k.assign(b)
        return float(m.compute_loss(x=x[:16], y=y[:16], y_pred=m(x[:16], training=False)))

    bump = base.copy()
    bump[0] += eps
    fd = (loss_at(bump) - loss_at(base)) / eps
    k.assign(base)
    assert r["gradients"]["logits/bias"][0] == pytest.approx(fd, rel=0.05, abs=1e-4)


def test_probe_gradients_need_targets(tmp_path):
    with pytest.raises(ValueError):
        GradscopeCallback(tmp_path, probe=np.zeros((1, 4)), probe_gradients=True)
