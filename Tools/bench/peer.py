"""The comparison point: what a user writes plainly with h5py + numpy.

    python3 Tools/bench/peer.py RUN_DIR [--json]

For every checkpoint file (sorted by name), for every tensor, the whole
tensor is loaded (``f[name][...]``) and the statistics gradscope reports are
computed with numpy: count, mean and population std (float64 accumulation),
min, max, max|x|, L2 norm, zeros, NaN/Inf counts, quantiles
p1/p5/p50/p95/p99 (``np.quantile``), a 32-bin histogram over the finite
values (``np.histogram``), a log2|x| histogram of the nonzero values
(``np.frexp``) and, for matrices, per-row norms. Each weight is compared with
the same weight at the previous file: ‖ΔW‖/‖W‖, max|ΔW|, cosine, changed
fraction, sign flips. Then three simple rules:

  frozen      a weight that no element of changed between any two files,
              while its gradient is nonzero
  collapsing  a matrix whose norm fell 10x or more from its peak to the last
              file (onset: the first file after the peak at half the peak or less)
  nan-inf     the first file holding NaN or Inf, and its first such tensor

Reads both the gradscope/1 layout (/weights, /gradients) and a hand-written
state_dict: datasets at the root or in a container group (/model, /state_dict,
...; its name is dropped, so /model/fc.weight is fc.weight), gradients in a
"grads" group.
"""

from __future__ import annotations

import json
import os
import sys
import time

import h5py
import numpy as np

QUANTILES = [0.01, 0.05, 0.5, 0.95, 0.99]
GRADIENT_GROUPS = ("grads", "grad", "gradients")
CONTAINERS = ("model", "state_dict", "model_state_dict", "weights", "params")


def datasets(group, prefix=""):
    """(name, dataset) for every dataset under group, recursively."""
    out = []
    for key in group:
        obj = group[key]
        if isinstance(obj, h5py.Group):
            out += datasets(obj, prefix + key + "/")
        else:
            out.append((prefix + key, obj))
    return out


def tensors_of(f):
    """(weights, gradients): lists of (name, dataset)."""
    fmt = f.attrs.get("format", b"")
    fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
    if fmt.startswith("gradscope/"):
        weights = datasets(f["weights"]) if "weights" in f else []
        grads = datasets(f["gradients"]) if "gradients" in f else []
        return weights, grads
    weights = [(strip_container(n), d) for n, d in datasets(f) if n.split("/", 1)[0] not in GRADIENT_GROUPS]
    grads = []
    for g in GRADIENT_GROUPS:
        if g in f:
            grads += datasets(f[g])
    return weights, grads


def strip_container(name):
    """model/fc.weight -> fc.weight: the container group a state_dict was written into is no part of the name."""
    head, sep, rest = name.partition("/")
    return rest if sep and head in CONTAINERS else name


def tensor_stats(a):
    x = a.reshape(-1)
    n_nan = int(np.count_nonzero(np.isnan(x)))
    n_inf = int(np.count_nonzero(np.isinf(x)))
    fx = x if n_nan + n_inf == 0 else x[np.isfinite(x)]
    s = {"count": int(x.size), "zeros": int(np.count_nonzero(x == 0)), "nan": n_nan, "inf": n_inf}
    if fx.size:
        s["mean"] = float(fx.mean(dtype=np.float64))
        s["std"] = float(fx.std(dtype=np.float64))
        s["min"] = float(fx.min())
        s["max"] = float(fx.max())
        s["abs_max"] = float(np.abs(fx).max())
        s["norm"] = float(np.linalg.norm(fx))
        s["quantiles"] = np.quantile(fx, QUANTILES).tolist()
        s["histogram"] = np.histogram(fx, bins=32)[0].tolist()
        _, exponents = np.frexp(np.abs(fx[fx != 0]))
        if exponents.size:
            low = int(exponents.min())
            s["log2_histogram"] = {"first_exponent": low - 1, "counts": np.bincount(exponents - low).tolist()}
    if a.ndim >= 2:
        rows = np.linalg.norm(a.reshape(a.shape[0], -1), axis=1)
        s["zero_rows"] = int(np.count_nonzero(rows == 0))
    return s


def drift(prev, a):
    p, x = prev.reshape(-1), a.reshape(-1)
    d = x - p
    norm_p = float(np.linalg.norm(p))
    norm_x = float(np.linalg.norm(x))
    return {
        "relative_change": float(np.linalg.norm(d)) / norm_p if norm_p > 0 else None,
        "max_abs_delta": float(np.abs(d).max()),
        "cosine": float(np.dot(x, p)) / (norm_x * norm_p) if norm_x > 0 and norm_p > 0 else None,
        "changed_fraction": np.count_nonzero(x != p) / x.size,
        "sign_flips": int(np.count_nonzero(np.signbit(x) != np.signbit(p))),
    }


def scan(run_dir):
    files = sorted(os.path.join(run_dir, n) for n in os.listdir(run_dir)
                   if n.endswith((".h5", ".hdf5")) and not n.startswith("."))
    steps, history, previous = [], [], {}
    for path in files:
        with h5py.File(path, "r") as f:
            step = int(f.attrs["step"])
            weights, grads = tensors_of(f)
            record = {"step": step, "weights": {}, "gradients": {}, "drift": {}, "order": []}
            current = {}
            for name, ds in weights:
                a = ds[...]
                record["weights"][name] = tensor_stats(a)
                record["order"].append(name)
                if name in previous and previous[name].shape == a.shape:
                    record["drift"][name] = drift(previous[name], a)
                current[name] = a
            for name, ds in grads:
                record["gradients"][name] = tensor_stats(ds[...])
            previous = current
        steps.append(step)
        history.append(record)
    return steps, history


def findings(history):
    out = []
    # nan-inf: the first file with a non-finite element, and its first such tensor
    for rec in history:
        bad = [n for n in rec["order"] if rec["weights"][n]["nan"] + rec["weights"][n]["inf"] > 0]
        bad += [n for n, s in rec["gradients"].items() if s["nan"] + s["inf"] > 0]
        if bad:
            out.append({"kind": "nan-inf", "tensor": bad[0], "first_step": rec["step"], "tensors": len(bad)})
            break
    names = history[-1]["order"] if history else []
    # frozen: not one element changed between any two files, while the gradient is nonzero
    for name in names:
        drifts = [rec["drift"][name] for rec in history if name in rec["drift"]]
        grad_norms = [rec["gradients"][name].get("norm", 0) for rec in history if name in rec["gradients"]]
        if drifts and all(d["changed_fraction"] == 0 for d in drifts) and any(g > 0 for g in grad_norms):
            out.append({"kind": "frozen", "tensor": name, "first_step": history[0]["step"]})
    # collapsing: a matrix whose norm fell 10x from its peak to the last file
    for name in names:
        series = [(rec["step"], rec["weights"][name]) for rec in history if name in rec["weights"]]
        series = [(step, s["norm"]) for step, s in series if s["nan"] + s["inf"] == 0 and "norm" in s]
        if len(series) < 2 or "zero_rows" not in history[-1]["weights"][name]:
            continue  # matrices only, two finite files or more
        norms = [n for _, n in series]
        peak_index = max(range(len(norms) - 1), key=lambda i: norms[i])
        peak, last = norms[peak_index], norms[-1]
        if peak > 0 and last * 10 <= peak:
            onset = next((i for i in range(peak_index + 1, len(norms)) if norms[i] <= peak / 2), len(norms) - 1)
            out.append({"kind": "collapsing", "tensor": name, "first_step": series[onset][0],
                        "shrink_factor": peak / last if last > 0 else None})
    return out


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    dirs = [a for a in args if not a.startswith("--")]
    if len(dirs) != 1:
        print("usage: peer.py RUN_DIR [--json]", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    steps, history = scan(dirs[0])
    found = findings(history)
    seconds = time.perf_counter() - t0
    if as_json:
        print(json.dumps({"steps": steps, "findings": found, "seconds": seconds,
                          "tensors": sum(len(r["weights"]) + len(r["gradients"]) for r in history)}))
    else:
        print(f"{len(steps)} steps, {sum(len(r['weights']) + len(r['gradients']) for r in history)} tensors, {seconds:.2f} s")
        for item in found:
            print(f"{item['kind']:11s} {item['tensor']}  from step {item['first_step']}")
        if not found:
            print("no findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
