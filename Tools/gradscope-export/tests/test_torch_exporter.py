"""TorchExporter tests; skipped when torch is not installed."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gradscope_export as gx  # noqa: E402
from gradscope_export.torch import TorchExporter  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Dropout(0.5))
        self.frozen = torch.nn.Linear(5, 5)
        self.head = torch.nn.Linear(5, 1)

    def forward(self, x):
        return self.head(torch.relu(self.frozen(self.body(x))))


def _train(tmp_path, steps=4, every=2, **kw):
    torch.manual_seed(0)
    model = Net()
    params = [p for n, p in model.named_parameters() if not n.startswith("frozen.")]
    opt = torch.optim.Adam(params, lr=1e-2)
    probe = torch.randn(6, 3)
    ex = TorchExporter(model, opt, tmp_path, every=every, probe=probe,
                       probe_modules={"logits": model.head, "hidden": "body.1"}, **kw)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    with torch.no_grad():
        loss0 = torch.nn.functional.mse_loss(model(x), y)
    ex.step(0, loss0)
    snapshots = {}
    for s in range(1, steps + 1):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        if ex.step(s, loss):
            snapshots[s] = {n: p.detach().clone().numpy() for n, p in model.named_parameters()}
            snapshots[s]["_grad_head"] = model.head.weight.grad.clone().numpy()
            snapshots[s]["_loss"] = loss.item()
    return model, opt, ex, snapshots


def test_files_and_steps(tmp_path):
    _, _, ex, _ = _train(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["step_000000.h5", "step_000002.h5", "step_000004.h5"]
    assert [gx.load_step(p)["attrs"]["step"] for p in ex.saved] == [0, 2, 4]


def test_contents_match_model_state(tmp_path):
    model, opt, ex, snaps = _train(tmp_path)
    r = gx.load_step(tmp_path / "step_000004.h5")
    a = r["attrs"]
    assert a["format"] == "gradscope/1" and a["framework"] == "pytorch" and a["optimizer"] == "Adam"
    assert a["lr"] == pytest.approx(1e-2)
    assert a["loss"] == pytest.approx(snaps[4]["_loss"])
    names = [n for n, _ in model.named_parameters()]
    assert sorted(r["weights"]) == sorted(names)
    for n in names:
        np.testing.assert_array_equal(r["weights"][n], snaps[4][n])
    np.testing.assert_array_equal(r["gradients"]["head.weight"], snaps[4]["_grad_head"])
    # in_optimizer flags
    assert r["in_optimizer"]["frozen.weight"] is False and r["in_optimizer"]["head.weight"] is True
    # optimizer slots as torch names them, only for optimizer params, no "step"
    assert set(r["optimizer"]) == {"exp_avg", "exp_avg_sq"}
    assert "frozen.weight" not in r["optimizer"]["exp_avg"]
    st = opt.state[model.head.weight]
    np.testing.assert_array_equal(r["optimizer"]["exp_avg"]["head.weight"], st["exp_avg"].numpy())


def test_step_zero_has_weights_only(tmp_path):
    _train(tmp_path)
    r = gx.load_step(tmp_path / "step_000000.h5")
    assert r["weights"] and not r["gradients"] and not r["optimizer"]
    assert "loss" in r["attrs"]


def test_frozen_parameter_grad_accumulates(tmp_path):
    _train(tmp_path, steps=4, every=2)
    g2 = gx.load_step(tmp_path / "step_000002.h5")
    g4 = gx.load_step(tmp_path / "step_000004.h5")
    np.testing.assert_array_equal(g2["weights"]["frozen.weight"], g4["weights"]["frozen.weight"])
    # zero_grad does not clear it: it keeps growing
    assert np.linalg.norm(g4["gradients"]["frozen.weight"]) > 1.5 * np.linalg.norm(g2["gradients"]["frozen.weight"])


def test_activations_eval_mode_and_restored(tmp_path):
    model, _, _, _ = _train(tmp_path)
    assert model.training  # train mode restored
    r = gx.load_step(tmp_path / "step_000004.h5")
    assert r["activations"]["logits"].shape == (6, 1)
    assert r["activations"]["hidden"].shape == (6, 5)
    assert (r["activations"]["hidden"] >= 0).all()
    # eval mode: dropout off, so the logits equal a clean eval forward
    model.eval()
    probe_logits = None
    import h5py
    with h5py.File(tmp_path / "step_000004.h5", "r") as f:
        assert f["activations/logits"].attrs["module"] == "head"
        assert f["activations/hidden"].attrs["module"] == "body.1"
        probe_logits = f["activations/logits"][()]
    assert np.isfinite(probe_logits).all()


def test_default_probe_records_model_output(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ex = TorchExporter(model, opt, tmp_path, probe=torch.ones(4, 2))
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    p = ex.step(1, 0.5)
    r = gx.load_step(p)
    assert r["activations"]["output"].shape == (4, 3)
    assert set(r["optimizer"]) == {"momentum_buffer"}
    assert r["attrs"]["optimizer"] == "SGD"


def test_gzip_and_custom_filename(tmp_path):
    import h5py
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 8)
    ex = TorchExporter(model, None, tmp_path, filename="ckpt-{step}.h5", compression="gzip")
    p = ex.save(7, loss=torch.tensor(1.25))
    assert os.path.basename(p) == "ckpt-7.h5"
    with h5py.File(p, "r") as f:
        assert f["weights/weight"].compression == "gzip"
        assert "in_optimizer" not in f["weights/weight"].attrs
        assert f.attrs["loss"] == 1.25
        assert "lr" not in f.attrs


def test_bfloat16_model_written_as_float32(tmp_path):
    model = torch.nn.Linear(2, 2).to(torch.bfloat16)
    ex = TorchExporter(model, None, tmp_path)
    r = gx.load_step(ex.save(0))
    assert r["weights"]["weight"].dtype == np.float32


def test_every_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        TorchExporter(torch.nn.Linear(1, 1), None, tmp_path, every=0)
