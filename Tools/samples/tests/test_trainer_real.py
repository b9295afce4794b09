"""gradscope reads folders written by the real Hugging Face `transformers.Trainer`.

A tiny BERT is trained for a few steps on the CPU; gradscope must name every AdamW moment of
optimizer.pt after the parameter PyTorch's own param groups give it, and take the step and loss
from trainer_state.json. Skipped when torch, transformers or accelerate is not installed, or when
the gradscope binary ($GRADSCOPE_BIN, else .build/debug/gradscope) has not been built.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from gradscope_cli import run

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import trainer_high_lr  # noqa: E402


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("trainer")
    trainer_high_lr.train(str(out), lr=1e-3, steps=20, every=10)
    return out


def true_moments(folder: Path) -> dict[tuple[str, str], float]:
    """(parameter name, slot) -> mean of the moment, mapped by the Trainer's own param groups."""
    from transformers import BertForSequenceClassification, Trainer

    model = BertForSequenceClassification.from_pretrained(folder)
    decay = set(Trainer.get_decay_parameter_names(None, model))
    names = [n for n, p in model.named_parameters() if n in decay and p.requires_grad]
    names += [n for n, p in model.named_parameters() if n not in decay and p.requires_grad]
    state = torch.load(folder / "optimizer.pt", weights_only=True)
    order = [i for group in state["param_groups"] for i in group["params"]]
    assert len(order) == len(names)
    out = {}
    for position, index in enumerate(order):
        for slot in ("exp_avg", "exp_avg_sq"):
            out[(names[position], slot)] = state["state"][index][slot].double().mean().item()
    return out


def test_a_checkpoint_folder_maps_adamw_moments_by_param_group(output_dir):
    folder = output_dir / "checkpoint-20"
    done = run("inspect", str(folder), "--format", "json")
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert report["step"] == 20
    logged = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    assert report["loss"] == pytest.approx(next(e["loss"] for e in logged if e.get("step") == 20 and "loss" in e))
    expected = true_moments(folder)
    found = {(t["name"], t["slot"]): t["stats"]["mean"] for t in report["tensors"] if t["role"] == "optimizer"}
    assert set(found) == set(expected)
    for key, mean in expected.items():
        assert found[key] == pytest.approx(mean, rel=1e-9, abs=1e-30), key


def test_the_output_directory_is_a_run_of_its_checkpoints(output_dir):
    done = run("scan", str(output_dir), "--format", "json")
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert report["steps"] == [10, 20]
    assert all(point["loss"] is not None and point["lr"] is not None for point in report["loss"])
