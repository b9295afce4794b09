"""Check, with numpy and h5py only, that every sample run in SampleCheckpoints/
shows the pathology it is meant to show, and that `healthy` (and the healthy
Keras run) shows none. Prints the evidence per run; exits 1 if any check
fails, 2 if a run is missing.

    python Tools/samples/verify_samples.py [SampleCheckpoints]

Definitions used here (same as gradscope's docs): norms are flattened L2
norms accumulated in float64; "std" is the population std; a unit is dead on
the probe batch when its post-ReLU output is 0 for every probe row.
"""

from __future__ import annotations

import glob
import math
import os
import re
import sys

import h5py
import numpy as np

LN2 = math.log(2)
LN4 = math.log(4)
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROOT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "SampleCheckpoints")


# --------------------------------------------------------------------------- reading
class Step:
    """One gradscope/1 file loaded fully (the samples are small)."""

    def __init__(self, path):
        self.path = path
        with h5py.File(path, "r") as f:
            self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            self.step = int(self.attrs["step"])
            self.loss = float(self.attrs["loss"]) if "loss" in self.attrs else None
            self.lr = float(self.attrs["lr"]) if "lr" in self.attrs else None
            self.w = self._tree(f, "weights")
            self.g = self._tree(f, "gradients")
            self.a = self._tree(f, "activations")
            self.opt = {s: self._tree(f["optimizer"], s) for s in f["optimizer"]} if "optimizer" in f else {}
            self.in_opt = {}
            if "weights" in f:
                f["weights"].visititems(lambda n, o: self.in_opt.__setitem__(n, int(o.attrs["in_optimizer"]))
                                        if isinstance(o, h5py.Dataset) and "in_optimizer" in o.attrs else None)

    @staticmethod
    def _tree(f, name):
        out = {}
        if name in f:
            f[name].visititems(lambda n, o: out.__setitem__(n, o[()].astype(np.float64))
                               if isinstance(o, h5py.Dataset) else None)
        return out


def native_run(d):
    steps = [Step(p) for p in glob.glob(os.path.join(d, "step_*.h5"))]
    steps.sort(key=lambda s: s.step)
    return steps


def step_of(path):
    return int(re.search(r"step_(\d+)", os.path.basename(path)).group(1))


def norm(a):
    return float(np.sqrt(np.sum(np.square(a, dtype=np.float64))))


def finite_all(step):
    for group in (step.w, step.g, step.a, *step.opt.values()):
        for v in group.values():
            if not np.isfinite(v).all():
                return False
    return step.loss is None or math.isfinite(step.loss)


def dead_units(act):
    """units (last axis) whose output is 0 on every probe row"""
    a = act.reshape(-1, act.shape[-1])
    return int(np.sum(np.all(a <= 0, axis=0)))


def adam_update_ratio(s, name):
    """||next Adam update|| / ||w|| from the saved state (PyTorch Adam,
    default betas/eps, bias-corrected with t = step)."""
    m, v = s.opt["exp_avg"][name], s.opt["exp_avg_sq"][name]
    t = s.step
    mh, vh = m / (1 - 0.9 ** t), v / (1 - 0.999 ** t)
    upd = s.lr * mh / (np.sqrt(vh) + 1e-8)
    return norm(upd) / norm(s.w[name])


# --------------------------------------------------------------------------- reporting
class Report:
    def __init__(self):
        self.failed = []
        self.run = None

    def start(self, run):
        self.run = run
        print(f"\n== {run}")

    def info(self, msg):
        print(f"   {msg}")

    def check(self, ok, msg):
        print(f"   [{'ok' if ok else 'FAIL'}] {msg}")
        if not ok:
            self.failed.append(f"{self.run}: {msg}")
        return ok


def fmt(x):
    return f"{x:.3g}" if isinstance(x, float) else str(x)


# --------------------------------------------------------------------------- runs
def v_healthy(r, steps):
    r.check(all(finite_all(s) for s in steps), "every tensor and loss finite in every save")
    losses = [s.loss for s in steps]
    first, last3 = losses[0], float(np.mean(losses[-3:]))
    r.check(last3 < 0.6 * first, f"loss falls: step {steps[0].step} {first:.4f} -> mean of last 3 saves {last3:.4f}")
    r.check(all(v == 1 for s in steps for v in s.in_opt.values()), "every parameter in the optimizer")
    worst_dead = {k: max(dead_units(s.a[k]) for s in steps) for k in ("hidden1", "hidden2")}
    widths = {k: steps[0].a[k].shape[-1] for k in worst_dead}
    r.check(all(v == 0 for v in worst_dead.values()),
            "no dead units on the probe batch in any save: "
            + ", ".join(f"{k} max {worst_dead[k]}/{widths[k]}" for k in worst_dead))
    zero_rows = 0
    for s in steps[1:]:
        for n, gr in s.g.items():
            if gr.ndim == 2:
                zero_rows += int(np.sum(np.all(gr == 0, axis=1)))
    r.check(zero_rows == 0, f"no all-zero gradient row in any weight matrix ({zero_rows} found)")
    ratios = [adam_update_ratio(s, n) for s in steps[1:] for n in s.w if n.endswith("weight")]
    r.check(1e-4 <= min(ratios) and max(ratios) <= 3e-2,
            f"per-step update ratio ||lr*m^/(sqrt(v^)+eps)|| / ||W|| of weight matrices: "
            f"{min(ratios):.2e} .. {max(ratios):.2e} (median {np.median(ratios):.2e})")
    between = []
    for a, b in zip(steps[1:], steps[2:]):
        for n in a.w:
            if n.endswith("weight"):
                between.append(norm(b.w[n] - a.w[n]) / norm(a.w[n]) / (b.step - a.step))
    r.info(f"||W(s2) - W(s1)|| / ||W(s1)|| / (s2 - s1) between saves: {min(between):.2e} .. {max(between):.2e}")
    gn = {n: [norm(s.g[n]) for s in steps[1:]] for n in steps[1].g if n.endswith("weight")}
    spread = max(max(v) / min(v) for v in gn.values())
    r.check(spread < 100, f"gradient norms stable: max/min over saves per weight <= {spread:.1f}")
    names = sorted(gn)
    layer_ratio = min(np.median(gn[names[0]]) / np.median(gn[names[-1]]), 1e9)
    r.check(layer_ratio > 1e-2, f"no vanishing: median grad norm {names[0]} / {names[-1]} = {layer_ratio:.3g}")
    wn = [norm(steps[-1].w[n]) / norm(steps[0].w[n]) for n in steps[0].w if n.endswith("weight")]
    r.check(min(wn) > 0.5, f"no collapse: ||W|| last/first per layer {', '.join(f'{x:.2f}' for x in wn)}")


def v_ctr(r, steps):
    r.check(all(finite_all(s) for s in steps), "every tensor and loss finite")
    dev = [(s.step, s.loss - LN2) for s in steps]
    plateau = []
    for st, d in dev:
        if abs(d) <= 0.01:
            plateau.append(st)
        else:
            break
    r.info("loss - ln2 per save: " + ", ".join(f"{st}:{d:+.4f}" for st, d in dev))
    r.check(len(plateau) >= 4 and plateau[-1] >= 2000,
            f"plateau: loss within 0.01 of ln 2 for saves {plateau[0]}..{plateau[-1]} "
            f"({len(plateau)} saves, max |loss-ln2| {max(abs(d) for _, d in dev[:len(plateau)]):.4f})")
    r.check(steps[-1].loss < LN2 - 0.1, f"then falls: last loss {steps[-1].loss:.4f} (step {steps[-1].step})")
    std = [(s.step, float(np.std(s.a["logits"]))) for s in steps]
    mean = [(s.step, float(np.mean(s.a["logits"]))) for s in steps]
    pl_std = max(v for st, v in std if st in plateau)
    r.check(pl_std < 0.05, f"probe logits tightly clustered during the plateau: std <= {pl_std:.4f} "
                           f"(mean {mean[0][1]:+.3f} at step 0)")
    r.check(std[-1][1] > 0.5, f"logits spread out afterwards: std {std[-1][1]:.3f} at step {std[-1][0]}")
    r.info("probe logits std per save: " + ", ".join(f"{st}:{v:.2g}" for st, v in std))
    b = [float(s.w["head.6.bias"][0]) for s in steps]
    r.check(abs(b[-1]) < abs(b[0]), f"last layer bias pulled toward 0: {b[0]:+.4f} -> {b[-1]:+.4f}")
    lrs = [s.lr for s in steps]
    peak = steps[int(np.argmax(lrs))].step
    r.check(lrs[1] < 1e-5 and 2000 <= peak <= 4000,
            f"Noam warm-up: lr {lrs[1]:.2e} at step {steps[1].step}, peak {max(lrs):.2e} at saved step {peak}, "
            f"{lrs[-1]:.2e} at the end")
    emb = [norm(s.w["emb.0.weight"]) for s in steps]
    r.info(f"||emb.0.weight||: {emb[0]:.2e} at step 0, {emb[len(plateau) - 1]:.2e} at step {plateau[-1]}, "
           f"{emb[-1]:.2e} at the end")


def v_frozen(r, steps):
    fz = ["net.2.weight", "net.2.bias"]
    r.check(all(finite_all(s) for s in steps), "every tensor and loss finite")
    r.check(all(s.in_opt[n] == 0 for s in steps for n in fz), "net.2.* have in_optimizer = 0 in every save")
    r.check(all(s.in_opt[n] == 1 for s in steps for n in s.in_opt if n not in fz), "every other parameter has in_optimizer = 1")
    r.check(all(n not in s.opt.get(slot, {}) for s in steps for slot in ("exp_avg", "exp_avg_sq") for n in fz),
            "no optimizer state for net.2.*")
    same = all(np.array_equal(s.w[n], steps[0].w[n]) for s in steps for n in fz)
    r.check(same, f"net.2.* weights bit-identical in all {len(steps)} saves (steps {steps[0].step}..{steps[-1].step})")
    moved = {n: norm(steps[-1].w[n] - steps[0].w[n]) / norm(steps[0].w[n]) for n in steps[0].w if n not in fz}
    r.check(min(moved.values()) > 0.01, "other parameters change: ||W(last)-W(0)||/||W(0)|| "
            + ", ".join(f"{n} {v:.3f}" for n, v in moved.items()))
    g = [(s.step, norm(s.g["net.2.weight"])) for s in steps[1:]]
    mono = all(b[1] > a[1] for a, b in zip(g, g[1:]))
    r.check(mono and g[-1][1] / g[0][1] > 5,
            f"net.2.weight .grad keeps accumulating: norm {g[0][1]:.3g} at step {g[0][0]} -> {g[-1][1]:.3g} "
            f"at step {g[-1][0]} (x{g[-1][1] / g[0][1]:.1f}, rising at every save)")
    other = [norm(s.g["net.4.weight"]) for s in steps[1:]]
    r.info(f"for comparison net.4.weight grad norm stays {min(other):.3g} .. {max(other):.3g}")
    r.check(steps[-1].loss < 0.7 * steps[0].loss, f"the rest trains: loss {steps[0].loss:.4f} -> {steps[-1].loss:.4f}")


def v_dead(r, steps):
    r.check(all(finite_all(s) for s in steps), "every tensor and loss finite")
    d2 = [(s.step, dead_units(s.a["hidden2"])) for s in steps]
    d1 = [(s.step, dead_units(s.a["hidden1"])) for s in steps]
    width = steps[0].a["hidden2"].shape[-1]
    r.info("hidden2 (module 3) dead units on the probe batch per save: " + ", ".join(f"{a}:{b}" for a, b in d2))
    r.info("hidden1 (module 1) dead units per save: " + ", ".join(f"{a}:{b}" for a, b in d1))
    before = max(b for a, b in d2 if a < 200)
    after = min(b for a, b in d2 if a >= 250)
    r.check(before <= 1, f"before the lr spike (steps < 200) at most {before}/{width} hidden2 units dead")
    r.check(after > width / 2, f"from step 250 on, at least {after}/{width} hidden2 units dead (most)")
    r.check(max(b for _, b in d1) <= 2, f"hidden1 stays alive: at most {max(b for _, b in d1)} dead units")
    spike = [s for s in steps if s.step == 200]
    r.check(bool(spike) and abs(spike[0].lr - 0.2) < 1e-12, "lr saved at step 200 is the spike, 0.2")
    last = steps[-1]
    late = [s for s in steps if s.step >= 250]
    zero_all = [i for i in range(width)
                if all(np.all(s.g["2.weight"][i] == 0) and s.g["2.bias"][i] == 0 for s in late)]
    probe_dead_all = set(range(width))
    for s in late:
        probe_dead_all &= set(np.where(np.all(s.a["hidden2"] <= 0, axis=0))[0].tolist())
    r.check(len(zero_all) > width / 2,
            f"{len(zero_all)}/{width} units have exactly 0 gradient (their 2.weight row and 2.bias entry) in every "
            f"save from step 250 to {last.step}")
    both = set(zero_all) & probe_dead_all
    r.check(len(both) >= len(zero_all) - 2,
            f"{len(both)} of them also output 0 on every probe row in all those saves "
            f"({len(probe_dead_all)} units do; the rest are active on a handful of rows only)")
    before_zero = [i for i in zero_all if any(np.any(s.g["2.weight"][i] != 0) for s in steps[1:] if s.step <= 200)]
    r.check(len(before_zero) >= len(zero_all) - 1,
            f"{len(before_zero)} of them still had nonzero gradients at some save before the spike")
    r.info(f"loss {steps[0].loss:.4f} at step 0, {dict((s.step, round(s.loss, 4)) for s in steps if s.step in (150, 200, 250))}, "
           f"{last.loss:.4f} at step {last.step}")


def v_exploding(r, steps):
    gn = [(s.step, norm(s.g["0.weight"]) if "0.weight" in s.g else None) for s in steps]
    bad = [s for s in steps if not all(np.isfinite(v).all() for v in s.w.values())]
    r.check(bool(bad), "non-finite weights appear")
    if not bad:
        return
    first_bad = bad[0].step
    finite = [(st, g) for st, g in gn if g is not None and st < first_bad]
    growth = finite[-1][1] / finite[0][1]
    r.info("0.weight grad norm per save: " + ", ".join(f"{st}:{g:.2e}" for st, g in gn if g is not None))
    r.check(growth > 1e3, f"gradients explode before that: 0.weight grad norm {finite[0][1]:.2e} at step "
                          f"{finite[0][0]} -> {finite[-1][1]:.2e} at step {finite[-1][0]} (x{growth:.1e})")
    wmax = [(s.step, max(float(np.max(np.abs(v))) for v in s.w.values())) for s in steps if s.step < first_bad]
    r.info("max |w| before: " + ", ".join(f"{a}:{b:.2e}" for a, b in wmax))
    kinds = {}
    for n, v in bad[0].w.items():
        kinds[n] = f"{int(np.isnan(v).sum())} NaN, {int(np.isinf(v).sum())} Inf of {v.size}"
    r.check(True, f"first save with non-finite weights: step {first_bad} ({'; '.join(f'{k}: {v}' for k, v in kinds.items())})")
    r.info(f"loss at step {first_bad}: {bad[0].loss}; first non-finite loss at saved step "
           f"{next(s.step for s in steps if not math.isfinite(s.loss))}")
    after = [s for s in steps if s.step > first_bad]
    all_nan = all(np.isnan(v).all() for s in after for v in s.w.values())
    r.check(len(after) >= 3 and all_nan, f"saving went on: {len(after)} more saves (to step {steps[-1].step}), "
                                         f"all weights NaN in them: {all_nan}")
    r.check(steps[0].attrs.get("framework") == "pytorch" and all(np.isfinite(v).all() for v in steps[0].w.values()),
            "step 0 is finite")


def v_vanishing(r, steps):
    r.check(all(finite_all(s) for s in steps), "every tensor and loss finite")
    n_layers = len([n for n in steps[0].w if n.endswith(".weight")])
    ratios, profile = [], None
    for s in steps[1:]:
        g = [norm(s.g[f"layers.{i}.weight"]) for i in range(n_layers)]
        ratios.append(g[0] / g[-1])
        profile = g
    r.check(max(ratios) < 1e-3, f"grad norm layers.0 / layers.{n_layers - 1} in every save: "
                                f"{min(ratios):.1e} .. {max(ratios):.1e}")
    r.info(f"per-layer weight grad norms at step {steps[-1].step}: " + " ".join(f"{x:.1e}" for x in profile))
    mono = all(b > a for a, b in zip(profile, profile[1:]))
    r.check(mono, "grad norm rises strictly from the first layer to the last")
    l0, l1 = float(np.mean([s.loss for s in steps[:3]])), float(np.mean([s.loss for s in steps[-3:]]))
    r.check(abs(l1 - l0) < 0.05 and abs(l1 - LN4) < 0.05,
            f"loss barely moves: mean of first 3 saves {l0:.4f}, of last 3 {l1:.4f} (ln 4 = {LN4:.4f})")
    w0 = norm(steps[-1].w["layers.0.weight"] - steps[0].w["layers.0.weight"]) / norm(steps[0].w["layers.0.weight"])
    wl = norm(steps[-1].w[f"layers.{n_layers - 1}.weight"] - steps[0].w[f"layers.{n_layers - 1}.weight"]) \
        / norm(steps[0].w[f"layers.{n_layers - 1}.weight"])
    r.info(f"relative change of weights over the run: layers.0 {w0:.1e}, layers.{n_layers - 1} {wl:.1e}")


def v_collapse(r, steps):
    r.check(all(finite_all(s) for s in steps), "every tensor and loss finite")
    names = [n for n in steps[0].w if n.endswith("weight")]
    fall = {n: norm(steps[0].w[n]) / norm(steps[-1].w[n]) for n in names}
    r.check(min(fall.values()) > 100, "every weight matrix shrinks by > 100x from step 0 to "
            f"{steps[-1].step}: " + ", ".join(f"{n} {norm(steps[0].w[n]):.2f} -> {norm(steps[-1].w[n]):.1e}"
                                              for n in names))
    for n in names:
        series = [norm(s.w[n]) for s in steps]
        dec = all(b < a for a, b in zip(series[1:], series[2:]))
        r.check(dec, f"{n} norm decreases at every save after step {steps[1].step}")
    spread = [(s.step, float(np.std(s.a["logits"] - s.a["logits"].mean(0)))) for s in steps]
    r.check(spread[0][1] / spread[-1][1] > 1e4,
            f"logits collapse: std across probe rows (per class, centred) {spread[0][1]:.2e} -> {spread[-1][1]:.2e}")
    r.info(f"logits of the last save are constant per class: {np.round(steps[-1].a['logits'].mean(0), 4).tolist()}")
    r.check(abs(steps[-1].loss - LN4) < 0.05, f"loss ends near ln 4: {steps[-1].loss:.4f}")
    r.info(f"optimizer: {steps[0].attrs.get('optimizer')}, lr {steps[0].lr}; weight decay 0.1 (not stored in the file)")


# --------------------------------------------------------------------------- Keras runs
def keras3_weights(path):
    """layers/<class>/vars/<i> -> {user layer name: [arrays]}, optimizer vars."""
    with h5py.File(path, "r") as f:
        layers = {}
        for grp in f["layers"]:
            vars_ = f["layers"][grp]["vars"]
            name = vars_.attrs.get("name", grp)
            name = name.decode() if isinstance(name, bytes) else name
            layers[name] = [vars_[str(i)][()].astype(np.float64) for i in range(len(vars_))]
        opt = [f["optimizer/vars"][str(i)][()] for i in range(len(f["optimizer/vars"]))]
    return layers, opt


def relu_dead(layers, order, x):
    h, dead = x, {}
    for name in order[:-1]:
        k, b = layers[name]
        h = np.maximum(h @ k + b, 0)
        dead[name] = int(np.sum(np.all(h <= 0, axis=0)))
    return dead


def teacher_x(seed, n=4096, d_in=16):
    return np.random.default_rng(seed).standard_normal((n, d_in)).astype("float32")


def v_keras_weights(r, d):
    files = sorted(glob.glob(os.path.join(d, "step_*.weights.h5")), key=step_of)
    r.info(f"{len(files)} files, steps {step_of(files[0])}..{step_of(files[-1])}")
    runs = [keras3_weights(p) for p in files]
    names = sorted(runs[0][0])
    r.check(names == ["hidden1", "hidden2", "logits"], f"layer names from the vars 'name' attribute: {names}")
    fr = all(np.array_equal(a, b) for lay, _ in runs for a, b in zip(lay["hidden2"], runs[0][0]["hidden2"]))
    r.check(fr, f"hidden2 kernel and bias bit-identical in all {len(files)} files (frozen)")
    moved = {n: norm(runs[-1][0][n][0] - runs[0][0][n][0]) / norm(runs[0][0][n][0]) for n in ("hidden1", "logits")}
    r.check(min(moved.values()) > 0.05, "hidden1 and logits kernels change: "
            + ", ".join(f"{n} {v:.2f}" for n, v in moved.items()))
    opt = runs[-1][1]
    shapes = [tuple(np.shape(v)) for v in opt]
    expect = [(), ()] + [s for n in ("hidden1", "logits") for v in runs[-1][0][n] for s in (v.shape, v.shape)]
    r.check(shapes == expect, f"optimizer/vars: iteration, learning_rate, then momentum/velocity for the 4 "
                              f"trainable variables only ({len(opt)} vars; none for hidden2)")
    its = [int(keras3_weights(p)[1][0]) for p in files]
    r.check(its == [step_of(p) for p in files], f"optimizer iteration equals the file's step: {its}")
    r.check(all(np.isfinite(v).all() for lay, _ in runs for vs in lay.values() for v in vs), "all weights finite")
    r.check(all(np.all(np.asarray(v) == 0) for v in runs[0][1][2:]), "step 0: optimizer slots zero-filled (JAX)")
    dead = relu_dead(runs[-1][0], ["hidden1", "hidden2", "logits"], teacher_x(7))
    r.info(f"dead ReLU units on the 4096 training rows at the last step: {dead}")


def v_keras_mixed(r, d):
    files = sorted(glob.glob(os.path.join(d, "step_*.weights.h5")), key=step_of)
    r.info(f"{len(files)} files, steps {step_of(files[0])}..{step_of(files[-1])}")
    runs = [keras3_weights(p) for p in files]
    names = sorted(runs[0][0])
    r.check(names == ["hidden", "logits"], f"layer names from the vars 'name' attribute: {names}")
    with h5py.File(files[-1], "r") as f:
        inner = f["optimizer/inner_optimizer/vars"]
        shapes = [tuple(inner[str(i)].shape) for i in range(len(inner))]
        wrapper = f["optimizer/vars"].attrs.get("name")
        its = [int(h5py.File(p, "r")["optimizer/inner_optimizer/vars/0"][()]) for p in files]
    expect = [(), ()] + [s for n in ("hidden", "logits") for v in runs[-1][0][n] for s in (v.shape, v.shape)]
    r.check(shapes == expect, f"optimizer/inner_optimizer/vars: iteration, learning_rate, then momentum/velocity "
                              f"per trainable variable ({len(shapes)} vars); optimizer/vars named {wrapper!r}")
    r.check(its == [step_of(p) for p in files], f"the inner optimizer's iteration equals the file's step: {its}")
    r.check(all(np.isfinite(v).all() for lay, _ in runs for vs in lay.values() for v in vs), "all weights finite")
    moved = {n: norm(runs[-1][0][n][0] - runs[0][0][n][0]) / norm(runs[0][0][n][0]) for n in ("hidden", "logits")}
    r.check(min(moved.values()) > 0.01, "both kernels change: " + ", ".join(f"{n} {v:.3f}" for n, v in moved.items()))
    final = os.path.join(os.path.dirname(d), "keras-mixed-precision-final", "final.h5")
    with h5py.File(final, "r") as f:
        groups = sorted(f["optimizer_weights"])
    r.check(groups == ["adam", "loss_scale_optimizer"], f"final.h5 optimizer_weights groups: {groups}")


def legacy_weights(path):
    with h5py.File(path, "r") as f:
        mw = f["model_weights"]
        out = {}
        for ln in mw.attrs["layer_names"]:
            ln = ln.decode() if isinstance(ln, bytes) else ln
            g = mw[ln]
            wn = g.attrs["weight_names"]
            out[ln] = [g[n.decode() if isinstance(n, bytes) else n][()].astype(np.float64) for n in wn]
        ow = f["optimizer_weights"]
        onames = [n.decode() if isinstance(n, bytes) else n for n in ow.attrs["weight_names"]]
        opt = {n: ow[n][()] for n in onames}
    return out, opt


def v_keras_legacy(r, d):
    files = sorted(glob.glob(os.path.join(d, "step_*.h5")), key=step_of)
    r.info(f"{len(files)} files, steps {step_of(files[0])}..{step_of(files[-1])}")
    runs = [legacy_weights(p) for p in files]
    layers = [n for n in runs[0][0] if runs[0][0][n]]
    r.check(layers == ["hidden1", "hidden2", "logits"], f"layer_names with weights: {layers}")
    r.check(all(np.isfinite(v).all() for lay, _ in runs for vs in lay.values() for v in vs), "all weights finite")
    moved = {n: norm(runs[-1][0][n][0] - runs[0][0][n][0]) / norm(runs[0][0][n][0]) for n in layers}
    r.check(min(moved.values()) > 0.05, "every kernel changes: ||W(last)-W(0)||/||W(0)|| "
            + ", ".join(f"{n} {v:.2f}" for n, v in moved.items()))
    onames = list(runs[-1][1])
    slots = [n for n in onames if n.endswith("_momentum") or n.endswith("_velocity")]
    r.check(len(slots) == 12, f"optimizer_weights: {len(onames)} names, {len(slots)} momentum/velocity slots "
                              f"(all 6 variables), e.g. {slots[0]}")
    its = [int(run[1]["adam/iteration"]) for run in runs]
    r.check(its == [step_of(p) for p in files], f"adam/iteration equals the file's step: {its}")
    x = teacher_x(8)
    dead = [relu_dead(run[0], layers, x) for run in runs]
    worst = {n: max(dd[n] for dd in dead) for n in layers[:-1]}
    r.check(all(v == 0 for v in worst.values()), f"no dead ReLU unit on the 4096 training rows in any file: {worst}")
    ratios = []
    for a, b, fa, fb in zip(runs, runs[1:], files, files[1:]):
        for n in layers:
            ratios.append(norm(b[0][n][0] - a[0][n][0]) / norm(a[0][n][0]) / (step_of(fb) - step_of(fa)))
    r.info(f"kernel ||W(s2)-W(s1)||/||W(s1)||/(s2-s1) between files: {min(ratios):.1e} .. {max(ratios):.1e}")
    wn = {n: norm(runs[-1][0][n][0]) / norm(runs[0][0][n][0]) for n in layers}
    r.check(min(wn.values()) > 0.5, "no collapse: kernel norm last/first " + ", ".join(f"{n} {v:.2f}" for n, v in wn.items()))


def v_tf_keras_legacy(r, d):
    files = sorted(glob.glob(os.path.join(d, "step_*.h5")), key=step_of)
    r.info(f"{len(files)} files, steps {step_of(files[0])}..{step_of(files[-1])}")
    runs = [legacy_weights(p) for p in files]
    with h5py.File(files[0], "r") as f:
        kv = f["model_weights"].attrs["keras_version"]
        kv = kv.decode() if isinstance(kv, bytes) else kv
    r.check(kv.startswith("2."), f"written by Keras {kv} (tf-keras)")
    r.check(list(runs[0][1]) == ["iteration:0"], "step 0: optimizer_weights holds iteration:0 alone (no slots yet)")
    later = list(runs[-1][1])
    r.check(later[0] == "iteration:0" and all(n.startswith("SGD/m/") for n in later[1:]) and len(later) == 5,
            f"later files: {later}")
    k = [(step_of(p), run[0]["hidden1"][0]) for p, run in zip(files, runs)]
    bad = [st for st, v in k if not np.isfinite(v).all()]
    r.check(bool(bad), "non-finite weights appear")
    if not bad:
        return
    growth = [(st, float(np.max(np.abs(v)))) for st, v in k if st < bad[0]]
    r.check(growth[-1][1] / growth[0][1] > 1e6,
            "hidden1 kernel max |w| before: " + ", ".join(f"{a}:{b:.2e}" for a, b in growth))
    first = runs[files.index(next(p for p in files if step_of(p) == bad[0]))][0]
    r.check(True, f"first file with non-finite weights: step {bad[0]} "
                  + "; ".join(f"{n}: {int(np.isnan(w[0]).sum())} NaN {int(np.isinf(w[0]).sum())} Inf of {w[0].size}"
                              for n, w in first.items() if w))
    after = [run for p, run in zip(files, runs) if step_of(p) > bad[0]]
    r.check(len(after) >= 3 and all(np.isnan(w).all() for run in after for ws in run[0].values() for w in ws),
            f"saving went on: {len(after)} more files, all weights NaN")


def layer2_outputs(s, x):
    """post-ReLU outputs of layer 2 (module 3) on `x`, from the saved weights"""
    h1 = np.maximum(x @ s.w["0.weight"].T + s.w["0.bias"], 0)
    return np.maximum(h1 @ s.w["2.weight"].T + s.w["2.bias"], 0)


def teacher_rows(seed, n=2048, d_in=16):
    """the training rows of numpy_mlp.teacher_data (the generator's first draws)"""
    return np.random.default_rng(seed).standard_normal((n, d_in)).astype(np.float32).astype(np.float64)


def v_dead_middle(r, steps):
    r.check(all(finite_all(s) for s in steps), "every tensor and loss finite")
    x = teacher_rows(11)
    alive = [(s.step, int((layer2_outputs(s, x) > 0).any(axis=0).sum())) for s in steps]
    r.info("layer 2 units positive on some training row, per save: " + ", ".join(f"{a}:{b}" for a, b in alive))
    r.check(all(b == 0 for _, b in alive), "layer 2 (ReLU 3) outputs 0 on all 2048 training rows at every save")
    later = steps[1:]
    for name in ("0.weight", "0.bias", "2.weight", "2.bias", "4.weight"):
        r.check(all(np.all(s.g[name] == 0) for s in later), f"{name}: gradient exactly 0 at every save with gradients")
    r.check(all(np.any(s.g["4.bias"] != 0) for s in later), "4.bias: gradient nonzero at every save with gradients")
    r.check(all(np.all(s.opt["exp_avg_sq"]["4.weight"] == 0) for s in later),
            "4.weight: Adam's exp_avg_sq exactly 0 at every save (every gradient was 0)")
    losses = [s.loss for s in steps]
    r.check(all(abs(v - LN2) < 0.03 for v in losses), f"loss within 0.03 of ln 2 at every save ({min(losses):.4f}..{max(losses):.4f})")


def v_explode_then_dead(r, steps):
    gn = {s.step: math.sqrt(sum(norm(v) ** 2 for v in s.g.values())) for s in steps if s.g}
    r.info("total gradient norm per save: " + ", ".join(f"{a}:{b:.3g}" for a, b in gn.items()))
    before = float(np.median([v for k, v in gn.items() if k < 60]))
    r.check(gn[60] > 1000 * before, f"the gradient of step 60 is {gn[60] / before:.0f}x the median before it")
    ratio = norm(steps[[s.step for s in steps].index(60)].g["0.weight"]) / norm(
        steps[[s.step for s in steps].index(60)].w["0.weight"])
    r.check(ratio > 1, f"at step 60 ||g|| / ||W|| of 0.weight is {ratio:.1f}")
    late = [s for s in steps if s.step >= 100]
    for name in ("0.weight", "0.bias", "2.weight", "2.bias", "4.weight"):
        r.check(all(np.all(s.g[name] == 0) for s in late), f"{name}: gradient exactly 0 at every save from step 100")
        r.check(np.any(steps[[s.step for s in steps].index(80)].g[name] != 0), f"{name}: gradient nonzero at step 80")
    r.check(all(np.any(s.g["4.bias"] != 0) for s in late), "4.bias: gradient nonzero at every save from step 100")
    x = teacher_rows(0)
    rows = [(s.step, int((layer2_outputs(s, x) > 0).any(axis=1).sum())) for s in steps]
    r.info("training rows (of 2048) on which some unit of layer 2 is positive, per save: "
           + ", ".join(f"{a}:{b}" for a, b in rows))
    worst = max(b for a, b in rows if a >= 100)
    r.check(worst <= 20, f"from step 100 layer 2 outputs 0 on all but at most {worst} of 2048 training rows (under 1%),"
            " so a batch of 64 almost never carries anything through it")
    r.check(all(abs(s.loss - LN2) < 0.03 for s in late), "loss within 0.03 of ln 2 from step 100")


def read_safetensors(path):
    """A safetensors file's float32 tensors as float64 arrays, with numpy only."""
    import json
    import struct

    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, d in header.items():
        if name == "__metadata__" or d["dtype"] != "F32":
            continue
        a, b = d["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(d["shape"]).astype(np.float64)
    return out


def v_trainer_high_lr(r, d):
    import json

    folders = sorted(glob.glob(os.path.join(d, "checkpoint-*")), key=lambda p: int(p.rsplit("-", 1)[1]))
    steps = [int(p.rsplit("-", 1)[1]) for p in folders]
    r.info(f"{len(folders)} checkpoint folders, steps {steps[0]}..{steps[-1]}, "
           f"{sum(os.path.getsize(os.path.join(p, n)) for p in folders for n in os.listdir(p)) / 1024:.0f} KiB")
    wanted = {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
              "training_args.bin", "config.json"}
    r.check(all(wanted <= set(os.listdir(p)) for p in folders), "every folder holds " + ", ".join(sorted(wanted)))
    states = [json.load(open(os.path.join(p, "trainer_state.json"))) for p in folders]
    r.check([s["global_step"] for s in states] == steps, "trainer_state.json global_step equals the folder's step")
    history = [e for e in states[-1]["log_history"] if "loss" in e]
    r.check([e["step"] for e in history] == list(range(10, steps[-1] + 1, 10)), "the loss logged every 10 steps")
    at_saves = {e["step"]: e["loss"] for e in history if e["step"] in steps}
    r.check(sorted(at_saves) == steps and all(abs(v - LN2) <= 0.03 * LN2 for v in at_saves.values()),
            "loss at every save within 3% of ln 2: " + ", ".join(f"{s}:{v:.4f}" for s, v in at_saves.items()))
    late = [e["loss"] for e in history if e["step"] >= steps[0]]
    r.check(max(abs(v - LN2) for v in late) <= 0.03 * LN2,
            f"every logged loss from step {steps[0]} on within 3% of ln 2 ({min(late):.4f} .. {max(late):.4f})")
    r.info("first logged losses: " + ", ".join(f"{e['step']}:{e['loss']:.4f}" for e in history[:5]))
    lrs = [e["learning_rate"] for e in history]
    # The rate logged at step s is the one of the s-th update: 0.05 * (300 - (s - 1)) / 300.
    expected = [0.05 * (steps[-1] - e["step"] + 1) / steps[-1] for e in history]
    r.check(max(abs(a - b) for a, b in zip(lrs, expected)) < 1e-12,
            f"learning rate 0.05 decayed linearly to 0: {lrs[0]:.4g} at step 10 .. {lrs[-1]:.3g} at step {history[-1]['step']}")
    models = [read_safetensors(os.path.join(p, "model.safetensors")) for p in folders]
    r.check(all(np.isfinite(v).all() for m in models for v in m.values()), f"all {len(models[0])} weights finite in every save")
    w, b = models[-1]["classifier.weight"], models[-1]["classifier.bias"]
    r.info(f"classifier at the last save: ||w0 - w1|| = {norm(w[0] - w[1]):.3g}, b0 - b1 = {b[0] - b[1]:.3g} "
           f"(at step {steps[0]}: {norm(models[0]['classifier.weight'][0] - models[0]['classifier.weight'][1]):.3g}, "
           f"{models[0]['classifier.bias'][0] - models[0]['classifier.bias'][1]:.3g})")


# --------------------------------------------------------------------------- main
NATIVE = {
    "healthy": v_healthy,
    "ctr-plateau": v_ctr,
    "frozen-layer": v_frozen,
    "dead-relu": v_dead,
    "exploding-nan": v_exploding,
    "vanishing-sigmoid": v_vanishing,
    "weight-decay-collapse": v_collapse,
    "dead-middle": v_dead_middle,
    "explode-then-dead": v_explode_then_dead,
}
KERAS = {"keras-weights-h5": v_keras_weights, "keras-legacy-h5": v_keras_legacy,
         "keras-mixed-precision": v_keras_mixed, "tf-keras-legacy-h5": v_tf_keras_legacy}
TRAINER = {"trainer-high-lr": v_trainer_high_lr}  # Hugging Face Trainer output folders
OPTIONAL = {"tf-keras-legacy-h5"}  # needs tensorflow + tf-keras to remake


def main(argv):
    root = argv[1] if len(argv) > 1 else DEFAULT_ROOT
    r = Report()
    missing = []
    for run, fn in {**NATIVE, **KERAS, **TRAINER}.items():
        d = os.path.join(root, run)
        if not glob.glob(os.path.join(d, "checkpoint-*" if run in TRAINER else "step_*.h5")):
            if run in OPTIONAL:
                print(f"\n== {run}\n   not present (optional run)")
                continue
            missing.append(run)
            print(f"\n== {run}\n   MISSING: no step_*.h5 in {d}")
            continue
        r.start(run)
        if run in NATIVE:
            steps = native_run(d)
            r.info(f"{len(steps)} files, steps {steps[0].step}..{steps[-1].step}, "
                   f"format {steps[0].attrs.get('format')}, optimizer {steps[0].attrs.get('optimizer')}, "
                   f"{sum(os.path.getsize(s.path) for s in steps) / 1024:.0f} KiB")
            try:
                fn(r, steps)
            except Exception as e:  # a broken run is a failed check, not a crash
                r.check(False, f"verification raised {type(e).__name__}: {e}")
        else:
            try:
                fn(r, d)
            except Exception as e:
                r.check(False, f"verification raised {type(e).__name__}: {e}")
    print()
    if missing:
        print(f"missing runs: {', '.join(missing)}")
    if r.failed:
        print(f"{len(r.failed)} check(s) failed:")
        for f in r.failed:
            print(f"  - {f}")
        return 1
    if missing:
        return 2
    print("all sample runs show what they are meant to show")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
