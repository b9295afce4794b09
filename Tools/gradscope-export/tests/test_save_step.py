"""Tests of the framework-free writer: need only numpy and h5py."""

import os
import stat

import h5py
import numpy as np
import pytest

import gradscope_export as gx


def _files(d):
    return sorted(os.listdir(d))


def _sample(rng=None):
    rng = rng or np.random.default_rng(0)
    w = {
        "body.0.weight": rng.standard_normal((4, 3)).astype(np.float32),
        "body.0.bias": rng.standard_normal(4).astype(np.float32),
        "head.weight": rng.standard_normal((1, 4)).astype(np.float32),
    }
    g = {k: v * 0.01 for k, v in w.items()}
    opt = {"exp_avg": {k: v * 0.1 for k, v in g.items()}, "exp_avg_sq": {k: v * v for k, v in g.items()}}
    return w, g, opt


# --------------------------------------------------------------------------- layout
def test_layout_and_root_attrs_exact(tmp_path):
    w, g, opt = _sample()
    logits = np.linspace(-1, 1, 8, dtype=np.float32).reshape(8, 1)
    p = gx.save_step(
        tmp_path / "step_000010.h5", 10, w, gradients=g, optimizer=opt,
        activations={"logits": logits}, activation_modules={"logits": "head"},
        loss=0.6931, lr=1e-3, framework="pytorch", optimizer_name="Adam",
        in_optimizer={"body.0.weight": True, "body.0.bias": True, "head.weight": False},
    )
    assert p == str(tmp_path / "step_000010.h5")
    with h5py.File(p, "r") as f:
        assert set(f.attrs.keys()) == {"format", "step", "loss", "lr", "framework", "optimizer"}
        assert f.attrs["format"] == "gradscope/1"
        assert f.attrs["step"] == 10 and f.attrs["step"].dtype == np.int64
        assert f.attrs["loss"].dtype == np.float64 and f.attrs["loss"] == 0.6931
        assert f.attrs["lr"].dtype == np.float64 and f.attrs["lr"] == 1e-3
        assert f.attrs["framework"] == "pytorch"
        assert f.attrs["optimizer"] == "Adam"
        # strings are variable-length UTF-8
        for key in ("format", "framework", "optimizer"):
            tid = f.attrs.get_id(key).get_type()
            assert isinstance(tid, h5py.h5t.TypeStringID)
            assert tid.is_variable_str()
            assert tid.get_cset() == h5py.h5t.CSET_UTF8
        assert set(f.keys()) == {"weights", "gradients", "optimizer", "activations"}
        assert set(f["weights"].keys()) == set(w)
        assert set(f["gradients"].keys()) == set(w)
        assert set(f["optimizer"].keys()) == {"exp_avg", "exp_avg_sq"}
        assert set(f["optimizer/exp_avg"].keys()) == set(w)
        for n in w:
            ds = f["weights"][n]
            assert ds.dtype == np.float32
            assert ds.shape == w[n].shape
            assert ds.chunks is None and ds.compression is None  # contiguous
            assert ds.attrs["in_optimizer"].dtype == np.int8
        assert f["weights/head.weight"].attrs["in_optimizer"] == 0
        assert f["weights/body.0.bias"].attrs["in_optimizer"] == 1
        assert f["activations/logits"].attrs["module"] == "head"
        np.testing.assert_array_equal(f["activations/logits"][()], logits)


def test_minimal_file_has_only_format_step_weights(tmp_path):
    p = gx.save_step(tmp_path / "a.h5", 0, {"w": np.zeros(3)}, framework=None)
    with h5py.File(p, "r") as f:
        assert set(f.attrs.keys()) == {"format", "step"}
        assert list(f.keys()) == ["weights"]
        assert "in_optimizer" not in f["weights/w"].attrs


def test_default_framework_is_numpy(tmp_path):
    p = gx.save_step(tmp_path / "a.h5", 3, {"w": np.ones(2)})
    with h5py.File(p, "r") as f:
        assert f.attrs["framework"] == "numpy"


def test_round_trip_equals_input(tmp_path):
    w, g, opt = _sample()
    w["count"] = np.array(7, dtype=np.int64)
    w["mask"] = np.array([True, False, True])
    w["w64"] = np.arange(6, dtype=np.float64).reshape(2, 3)
    p = gx.save_step(tmp_path / "s.h5", 5, w, gradients=g, optimizer=opt, loss=1.5, lr=0.1)
    r = gx.load_step(p)
    assert r["attrs"]["step"] == 5 and r["attrs"]["loss"] == 1.5 and r["attrs"]["lr"] == 0.1
    assert r["attrs"]["format"] == "gradscope/1"
    for n, v in w.items():
        np.testing.assert_array_equal(r["weights"][n], v)
        assert r["weights"][n].dtype == v.dtype
    for n, v in g.items():
        np.testing.assert_array_equal(r["gradients"][n], v)
    for slot in opt:
        for n, v in opt[slot].items():
            np.testing.assert_array_equal(r["optimizer"][slot][n], v)


def test_nan_and_inf_are_written_as_they_are(tmp_path):
    w = {"w": np.array([np.nan, np.inf, -np.inf, 1.0], dtype=np.float32)}
    p = gx.save_step(tmp_path / "n.h5", 1, w, gradients=w, loss=float("nan"))
    r = gx.load_step(p)
    np.testing.assert_array_equal(r["weights"]["w"], w["w"])
    assert np.isnan(r["attrs"]["loss"])


def test_nested_names_become_groups(tmp_path):
    w = {"dense_1/kernel": np.ones((3, 2), np.float32), "dense_1/bias": np.zeros(2, np.float32),
         "block/sub/conv/kernel": np.ones((1, 1, 2, 2), np.float32)}
    p = gx.save_step(tmp_path / "k.h5", 2, w, gradients={"dense_1/kernel": np.ones((3, 2))},
                     optimizer={"momentum": {"dense_1/kernel": np.zeros((3, 2))}},
                     in_optimizer={"dense_1/kernel"}, framework="keras")
    with h5py.File(p, "r") as f:
        assert isinstance(f["weights/dense_1"], h5py.Group)
        assert f["weights/dense_1/kernel"].shape == (3, 2)
        assert f["weights/block/sub/conv/kernel"].shape == (1, 1, 2, 2)
        assert f["gradients/dense_1/kernel"].shape == (3, 2)
        assert f["optimizer/momentum/dense_1/kernel"].shape == (3, 2)
        # set form: members 1, everything else 0
        assert f["weights/dense_1/kernel"].attrs["in_optimizer"] == 1
        assert f["weights/dense_1/bias"].attrs["in_optimizer"] == 0
        assert f["weights/block/sub/conv/kernel"].attrs["in_optimizer"] == 0
    r = gx.load_step(p)
    assert set(r["weights"]) == set(w)
    assert r["in_optimizer"] == {"dense_1/kernel": True, "dense_1/bias": False, "block/sub/conv/kernel": False}


def test_dtypes_float16_widened_float64_kept(tmp_path):
    w = {"h": np.ones(3, np.float16), "d": np.ones(3, np.float64), "f": np.ones(3, np.float32),
         "i": np.arange(3, dtype=np.int32)}
    p = gx.save_step(tmp_path / "d.h5", 0, w)
    with h5py.File(p, "r") as f:
        assert f["weights/h"].dtype == np.float32
        assert f["weights/d"].dtype == np.float64
        assert f["weights/f"].dtype == np.float32
        assert f["weights/i"].dtype == np.int32


def test_bfloat16_widened_if_available(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    a = np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16)
    p = gx.save_step(tmp_path / "b.h5", 0, {"b": a})
    with h5py.File(p, "r") as f:
        assert f["weights/b"].dtype == np.float32
        np.testing.assert_array_equal(f["weights/b"][()], [1.5, -2.0])


def test_gzip_option_chunked_and_compressed(tmp_path):
    w = {"big": np.zeros((64, 64), np.float32), "scalar": np.float32(3.0), "empty": np.zeros((0,), np.float32)}
    p = gx.save_step(tmp_path / "z.h5", 1, w, gradients={"big": np.ones((64, 64))},
                     activations={"out": np.ones((4, 2))}, compression="gzip")
    with h5py.File(p, "r") as f:
        assert f["weights/big"].compression == "gzip" and f["weights/big"].chunks is not None
        assert f["gradients/big"].compression == "gzip"
        assert f["activations/out"].compression == "gzip"
        assert f["weights/scalar"].shape == () and f["weights/scalar"][()] == 3.0
        assert f["weights/empty"].shape == (0,)
    r = gx.load_step(p)
    np.testing.assert_array_equal(r["weights"]["big"], w["big"])
    plain = gx.save_step(tmp_path / "plain.h5", 1, w, gradients={"big": np.ones((64, 64))},
                         activations={"out": np.ones((4, 2))})
    with h5py.File(plain, "r") as f:
        assert f["weights/big"].chunks is None and f["weights/big"].compression is None
    assert os.path.getsize(p) < os.path.getsize(plain) / 2  # zeros and ones compress


def test_unknown_compression_refused(tmp_path):
    with pytest.raises(ValueError):
        gx.save_step(tmp_path / "x.h5", 0, {"w": np.ones(1)}, compression="lzf")
    assert _files(tmp_path) == []


def test_readable_by_system_h5dump_if_present(tmp_path):
    """The Swift side links the system libhdf5 (1.10 on Debian 12), which
    may be older than the one bundled with h5py."""
    import shutil
    import subprocess

    h5dump = shutil.which("h5dump")
    if h5dump is None:
        pytest.skip("h5dump not installed (apt-get install hdf5-tools)")
    w, g, opt = _sample()
    p = gx.save_step(tmp_path / "v.h5", 1, w, gradients=g, optimizer=opt, loss=0.5,
                     activations={"logits": np.zeros((2, 1))}, in_optimizer=set(w))
    z = gx.save_step(tmp_path / "z.h5", 1, w, compression="gzip")
    for f in (p, z):
        r = subprocess.run([h5dump, f], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "gradscope/1" in r.stdout


# --------------------------------------------------------------------------- atomicity
class _Spy:
    """An array-like that records, while the file is being written, what a
    reader would see in the directory."""

    def __init__(self, directory, final):
        self.directory, self.final = directory, final
        self.seen = None

    def __array__(self, dtype=None, copy=None):
        self.seen = (os.path.exists(self.final), sorted(os.listdir(self.directory)))
        return np.ones(3, np.float32)


def test_no_partial_file_visible_while_writing(tmp_path):
    final = tmp_path / "step_000001.h5"
    spy = _Spy(tmp_path, final)
    gx.save_step(final, 1, {"a": np.zeros(2), "b": spy})
    final_exists, listing = spy.seen
    assert final_exists is False
    assert len(listing) == 1
    tmp = listing[0]
    assert tmp.startswith(".") and tmp.endswith(".tmp")
    assert "step_000001.h5" in tmp
    assert _files(tmp_path) == ["step_000001.h5"]


def test_replacing_existing_file_keeps_old_until_done(tmp_path):
    final = tmp_path / "s.h5"
    gx.save_step(final, 1, {"a": np.zeros(2)}, loss=1.0)

    class Check:
        def __array__(self, dtype=None, copy=None):
            # old file is complete and readable during the rewrite
            assert gx.load_step(final)["attrs"]["loss"] == 1.0
            return np.ones(2)

    gx.save_step(final, 2, {"a": Check()}, loss=2.0)
    assert gx.load_step(final)["attrs"]["loss"] == 2.0


class _Boom:
    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("boom")


def test_temp_removed_on_error_and_no_final(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        gx.save_step(tmp_path / "s.h5", 1, {"a": np.zeros(2), "b": _Boom()})
    assert _files(tmp_path) == []


def test_error_leaves_existing_file_untouched(tmp_path):
    final = tmp_path / "s.h5"
    gx.save_step(final, 1, {"a": np.zeros(2)}, loss=1.0)
    before = final.read_bytes()
    with pytest.raises(RuntimeError):
        gx.save_step(final, 1, {"a": np.zeros(2)}, gradients={"a": _Boom()}, loss=9.0)
    assert final.read_bytes() == before
    assert _files(tmp_path) == ["s.h5"]


def test_keyboard_interrupt_also_cleans_up(tmp_path):
    class Interrupt:
        def __array__(self, dtype=None, copy=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gx.save_step(tmp_path / "s.h5", 1, {"a": Interrupt()})
    assert _files(tmp_path) == []


def test_creates_missing_directory_and_normal_permissions(tmp_path):
    p = gx.save_step(tmp_path / "run" / "deep" / "s.h5", 0, {"a": np.zeros(1)})
    assert os.path.isfile(p)
    mode = stat.S_IMODE(os.stat(p).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("bad", ["", "/a", "a/", "a//b", "a/./b", "../x", "."])
def test_bad_names_refused_before_anything_is_written(tmp_path, bad):
    with pytest.raises(ValueError):
        gx.save_step(tmp_path / "s.h5", 0, {bad: np.zeros(1)})
    assert _files(tmp_path) == []


def test_gradient_without_weight_refused(tmp_path):
    with pytest.raises(ValueError, match="no matching weight"):
        gx.save_step(tmp_path / "s.h5", 0, {"a": np.zeros(1)}, gradients={"b": np.zeros(1)})
    with pytest.raises(ValueError, match="no matching weight"):
        gx.save_step(tmp_path / "s.h5", 0, {"a": np.zeros(1)}, optimizer={"exp_avg": {"b": np.zeros(1)}})
    assert _files(tmp_path) == []


def test_none_gradients_are_skipped(tmp_path):
    p = gx.save_step(tmp_path / "s.h5", 0, {"a": np.zeros(1), "b": np.zeros(1)},
                     gradients={"a": np.ones(1), "b": None})
    r = gx.load_step(p)
    assert set(r["gradients"]) == {"a"}


def test_step_must_be_int(tmp_path):
    with pytest.raises(TypeError):
        gx.save_step(tmp_path / "s.h5", 1.5, {"a": np.zeros(1)})
    with pytest.raises(TypeError):
        gx.save_step(tmp_path / "s.h5", True, {"a": np.zeros(1)})
    p = gx.save_step(tmp_path / "s.h5", np.int32(4), {"a": np.zeros(1)})
    assert gx.load_step(p)["attrs"]["step"] == 4


def test_extra_root_attrs(tmp_path):
    p = gx.save_step(tmp_path / "s.h5", 0, {"a": np.zeros(1)}, attrs={"run": "healthy", "seed": 3})
    r = gx.load_step(p)
    assert r["attrs"]["run"] == "healthy" and r["attrs"]["seed"] == 3


def test_extra_attrs_cannot_override_layout_attrs(tmp_path):
    with pytest.raises(ValueError):
        gx.save_step(tmp_path / "s.h5", 0, {"a": np.zeros(1)}, attrs={"format": "other"})
    assert _files(tmp_path) == []


def test_unsupported_dtype_refused(tmp_path):
    with pytest.raises(TypeError):
        gx.save_step(tmp_path / "s.h5", 0, {"a": np.array(["x"])})
    assert _files(tmp_path) == []
