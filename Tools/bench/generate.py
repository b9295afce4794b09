"""Write a synthetic training run for the benchmark (numpy + h5py only).

    python3 Tools/bench/generate.py OUT_DIR [--params 50e6] [--steps 6] [--seed 0]
                                     [--variants native,gzip,h5py] [--jobs 2]
    python3 Tools/bench/generate.py OUT_DIR --big-tensor
    python3 Tools/bench/generate.py OUT_DIR --many 300 [--params 2.5e6]

The model is a small transformer-shaped stack (an embedding, blocks of
attention and MLP matrices with their biases and LayerNorms, a head), with the
width chosen so the parameter count is close to ``--params``. Every step holds
float32 weights AND gradients. One run, three encodings of the same numbers:

  OUT_DIR/native/step_000100.h5 ...  gradscope/1 layout, contiguous datasets
                                     (gradscope_export.save_step)
  OUT_DIR/gzip/step_000100.h5 ...    the same, save_step(compression="gzip"):
                                     chunked (h5py's automatic chunk shape), gzip level 4
  OUT_DIR/h5py/ckpt_000100.h5 ...    a PyTorch state_dict dumped by hand:
                                     f.create_dataset(name, data=arr) at the root,
                                     gradients in a "grads" group, root attr "step"

Each variant directory gets a manifest OUT_DIR/<variant>.json (parameters,
file sizes, planted pathologies); a variant whose manifest matches the
requested parameters is reused, not rewritten.

Planted pathologies (the detectors must find them):
  frozen      blocks.1.attn.out.weight never changes, its gradient is nonzero
  collapsing  blocks.2.mlp.fc2.weight shrinks 10x per step, its gradient with it
              (onset: the 2nd saved step)
  nan-inf     blocks.3.mlp.fc1.weight holds NaN at the last step only

--many N writes another workload instead: many saves of a model with many tensors,
as a user writes them by hand (h5py, /model/<name> and /grads/<name>, contiguous
float32, root attr "step"): a 12-block stack (149 tensors, ~2.5M parameters by
default), OUT_DIR/many-N/ with N saves and OUT_DIR/many-2N/ with 2N saves. Planted:
blocks.5.attn.out.weight frozen, blocks.9.mlp.fc2.weight collapsing (100x over the
2nd and 3rd saves), NaN in blocks.11.mlp.fc1.weight at each run's last save.

Deterministic: the same seed and sizes give bit-identical arrays.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
_EXPORT_SRC = HERE.parent / "gradscope-export" / "src"
if _EXPORT_SRC.is_dir() and str(_EXPORT_SRC) not in sys.path:
    sys.path.insert(0, str(_EXPORT_SRC))
from gradscope_export import save_step  # noqa: E402

VARIANTS = ("native", "gzip", "h5py", "safetensors", "torch")
# Variants written with a library that may be absent: the module each needs.
NEEDS = {"safetensors": "safetensors", "torch": "torch"}
GZIP_LEVEL = 4  # what gradscope_export.save_step(compression="gzip") writes
STEP_STRIDE = 100
LR = 1e-2
GRAD_SCALE = 1e-2
NAN_ELEMENTS = 3
MANIFEST_VERSION = 2


# --------------------------------------------------------------------------- model shape

def layer_shapes(d: int, blocks: int = 4) -> list[tuple[str, tuple[int, ...]]]:
    """Parameter names and shapes (PyTorch [out, in]) of a transformer-like stack of width d."""
    shapes: list[tuple[str, tuple[int, ...]]] = [("embed.weight", (8 * d, d))]
    for b in range(blocks):
        p = f"blocks.{b}."
        shapes += [
            (p + "ln1.weight", (d,)), (p + "ln1.bias", (d,)),
            (p + "attn.qkv.weight", (3 * d, d)), (p + "attn.qkv.bias", (3 * d,)),
            (p + "attn.out.weight", (d, d)), (p + "attn.out.bias", (d,)),
            (p + "ln2.weight", (d,)), (p + "ln2.bias", (d,)),
            (p + "mlp.fc1.weight", (4 * d, d)), (p + "mlp.fc1.bias", (4 * d,)),
            (p + "mlp.fc2.weight", (d, 4 * d)), (p + "mlp.fc2.bias", (d,)),
        ]
    shapes += [("ln_f.weight", (d,)), ("ln_f.bias", (d,)), ("head.weight", (d, d)), ("head.bias", (d,))]
    return shapes


def count(shapes) -> int:
    return sum(math.prod(s) for _, s in shapes)


def width_for(params: int, blocks: int = 4) -> int:
    """The width (a multiple of 8, at least 8) whose parameter count is closest to ``params``."""
    best, best_err = 8, None
    guess = max(8, int(math.sqrt(params / (9 + 12 * blocks))) // 8 * 8)
    for d in range(max(8, guess - 64), guess + 65, 8):
        err = abs(count(layer_shapes(d, blocks)) - params)
        if best_err is None or err < best_err:
            best, best_err = d, err
    return best


def planted(steps: list[int]) -> dict:
    """The pathologies written into every run, and where detectors must find them."""
    return {
        "frozen": {"tensor": "blocks.1.attn.out.weight", "first_step": steps[0]},
        "collapsing": {"tensor": "blocks.2.mlp.fc2.weight", "first_step": steps[1] if len(steps) > 1 else steps[0]},
        "nan-inf": {"tensor": "blocks.3.mlp.fc1.weight", "first_step": steps[-1]},
    }


# --------------------------------------------------------------------------- the numbers

def iterate_run(params: int, steps: int, seed: int):
    """Yields (step, weights, gradients, loss) per saved step. The arrays are
    reused and updated in place between steps: consume (write) them before
    asking for the next step."""
    shapes = layer_shapes(width_for(params))
    names = [n for n, _ in shapes]
    frozen, collapsing, nan_tensor = (planted([1, 2])[k]["tensor"] for k in ("frozen", "collapsing", "nan-inf"))
    assert {frozen, collapsing, nan_tensor} <= set(names)
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    # The first save comes after some training: biases and LayerNorm gains are
    # no longer at their initial zeros and ones.
    for name, shape in shapes:
        if len(shape) == 1:
            w = rng.standard_normal(shape, dtype=np.float32)
            w *= np.float32(0.02)
            if not name.endswith(".bias"):  # LayerNorm gain
                w += np.float32(1)
        else:
            w = rng.standard_normal(shape, dtype=np.float32)
            w *= np.float32(1.0 / math.sqrt(shape[1]))
        weights[name] = w
    grads = {name: np.empty(shape, dtype=np.float32) for name, shape in shapes}
    for i in range(steps):
        step = (i + 1) * STEP_STRIDE
        for name, shape in shapes:
            g = grads[name]
            rng.standard_normal(out=g, dtype=np.float32)
            g *= np.float32(GRAD_SCALE)
            if name == "embed.weight":  # only the rows of tokens in the batch get a gradient
                g[rng.random(shape[0]) >= 0.2] = 0
            w = weights[name]
            if name == frozen:
                continue  # left out of the optimizer: the gradient arrives, the weights never move
            if name == collapsing:
                g *= np.float32(0.1 ** i)  # its gradient stays in proportion to the shrinking weights
                if i > 0:
                    w *= np.float32(0.1)  # 10x smaller every step
                    continue
            w -= np.float32(LR) * g
        out_weights = weights
        if i == steps - 1:
            bad = weights[nan_tensor].copy()
            flat = bad.reshape(-1)
            flat[rng.choice(flat.size, NAN_ELEMENTS, replace=False)] = np.nan
            out_weights = dict(weights)
            out_weights[nan_tensor] = bad
        loss = 2.5 * 0.9 ** i
        yield step, out_weights, grads, loss


def iterate_big(seed: int, rows: int = 16384, cols: int = 16384):
    """Two steps of one [rows, cols] float32 matrix (1 GiB at the default) plus a bias with its gradient."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols), dtype=np.float32)
    w *= np.float32(1.0 / math.sqrt(cols))
    b = np.zeros(rows, dtype=np.float32)
    gb = np.empty(rows, dtype=np.float32)
    for i in range(2):
        rng.standard_normal(out=gb, dtype=np.float32)
        if i > 0:
            # a sparse update keeps generation fast: every 7th row moves
            w[::7] -= np.float32(LR * GRAD_SCALE) * rng.standard_normal((len(range(0, rows, 7)), cols), dtype=np.float32)
        b -= np.float32(LR) * gb
        yield (i + 1) * STEP_STRIDE, {"big.weight": w, "big.bias": b}, {"big.bias": gb}, 1.0


# --------------------------------------------------------------------------- writers

def native_name(step: int) -> str:
    return f"step_{step:06d}.h5"


def h5py_name(step: int) -> str:
    return f"ckpt_{step:06d}.h5"


def write_native(directory: Path, step, weights, grads, loss, compression=None) -> None:
    save_step(directory / native_name(step), step, weights=weights, gradients=grads, loss=loss, lr=LR,
              framework="numpy", optimizer_name="SGD", compression=compression, fsync=False)


def write_h5py(directory: Path, step, weights, grads, loss) -> None:
    """A PyTorch state_dict dumped the way people do it by hand."""
    with h5py.File(directory / h5py_name(step), "w") as f:
        f.attrs["step"] = step
        f.attrs["loss"] = loss
        for name, arr in weights.items():
            f.create_dataset(name, data=arr)
        g = f.create_group("grads")
        for name, arr in grads.items():
            g.create_dataset(name, data=arr)


def safetensors_name(step: int) -> str:
    return f"step_{step:06d}.safetensors"


def torch_name(step: int) -> str:
    return f"step_{step:06d}.pt"


def write_safetensors(directory: Path, step, weights, grads, loss) -> None:
    """The same tensors in one safetensors file per step: `<name>` and `<name>.grad`, step and loss in `__metadata__`."""
    from safetensors.numpy import save_file

    tensors = dict(weights)
    tensors.update({f"{name}.grad": arr for name, arr in grads.items()})
    save_file(tensors, directory / safetensors_name(step), metadata={"step": str(step), "loss": repr(float(loss))})


def write_torch(directory: Path, step, weights, grads, loss) -> None:
    """The same tensors in one torch.save archive per step: {"model": state_dict, "grads": {...}, "step", "loss"}."""
    import torch

    torch.save({"step": step, "loss": float(loss), "model": {n: torch.from_numpy(a) for n, a in weights.items()},
                "grads": {n: torch.from_numpy(a) for n, a in grads.items()}}, directory / torch_name(step))


def file_name(variant: str):
    return {"native": native_name, "gzip": native_name, "h5py": h5py_name, "safetensors": safetensors_name,
            "torch": torch_name}[variant]


def generate_available(variant: str) -> bool:
    """Whether the library that writes `variant` is installed."""
    import importlib.util

    return variant not in NEEDS or importlib.util.find_spec(NEEDS[variant]) is not None


def _write(variant: str, directory: Path, step, weights, grads, loss) -> None:
    if variant == "native":
        write_native(directory, step, weights, grads, loss)
    elif variant == "gzip":
        write_native(directory, step, weights, grads, loss, compression="gzip")
    elif variant == "safetensors":
        write_safetensors(directory, step, weights, grads, loss)
    elif variant == "torch":
        write_torch(directory, step, weights, grads, loss)
    else:
        write_h5py(directory, step, weights, grads, loss)


def _spec(kind: str, params: int, steps: int, seed: int) -> dict:
    if kind == "big":
        return {"version": MANIFEST_VERSION, "kind": "big", "seed": seed}
    return {"version": MANIFEST_VERSION, "kind": "run", "params": params, "steps": steps, "seed": seed}


def manifest_path(out: Path, variant: str) -> Path:
    return out / f"{variant}.json"


def existing(out: Path, variant: str, spec: dict) -> dict | None:
    """The manifest of a finished variant written with ``spec``, else None."""
    path = manifest_path(out, variant)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("spec") != spec:
        return None
    files = [out / variant / name for name in manifest.get("files", [])]
    if not files or not all(p.is_file() for p in files):
        return None
    return manifest


def generate(out, variants=VARIANTS, params: int = 50_000_000, steps: int = 6, seed: int = 0, jobs: int = 2,
             big: bool = False, log=print) -> dict:
    """Writes the requested variants (skipping finished ones) and returns {variant: manifest}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kind = "big" if big else "run"
    spec = _spec(kind, params, steps, seed)
    result, todo = {}, []
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r} (expected one of {', '.join(VARIANTS)})")
        found = existing(out, variant, spec)
        if found is not None:
            result[variant] = found
        else:
            todo.append(variant)
    if not todo:
        return result
    for variant in todo:
        manifest_path(out, variant).unlink(missing_ok=True)
        shutil.rmtree(out / variant, ignore_errors=True)
        (out / variant).mkdir(parents=True)
    t0 = time.perf_counter()
    source = iterate_big(seed) if big else iterate_run(params, steps, seed)
    # Compression is CPU-bound: each step's gzip file is written by a forked child
    # (it sees a copy-on-write snapshot of the arrays) while this process goes on.
    ctx = multiprocessing.get_context("fork")
    children: list = []
    step_list, tensor_count, total_params = [], 0, 0
    for step, weights, grads, loss in source:
        step_list.append(step)
        tensor_count = len(weights) + len(grads)
        total_params = sum(a.size for a in weights.values())
        for variant in todo:
            directory = out / variant
            if variant == "gzip" and jobs > 1:
                while len(children) >= jobs:
                    child = children.pop(0)
                    child.join()
                    if child.exitcode != 0:
                        raise RuntimeError(f"writing a gzip step failed (exit code {child.exitcode})")
                child = ctx.Process(target=_write, args=(variant, directory, step, weights, grads, loss))
                child.start()
                children.append(child)
            else:
                _write(variant, directory, step, weights, grads, loss)
    for child in children:
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"writing a gzip step failed (exit code {child.exitcode})")
    expected = {} if big else planted(step_list)
    for variant in todo:
        name = file_name(variant)
        files = [name(s) for s in step_list]
        sizes = [(out / variant / f).stat().st_size for f in files]
        manifest = {
            "spec": spec, "variant": variant, "files": files, "bytes": sum(sizes), "steps": step_list,
            "params": total_params, "tensors_per_step": tensor_count, "dtype": "float32",
            "width": None if big else width_for(params),
            "compression": f"gzip level {GZIP_LEVEL}, h5py automatic chunks" if variant == "gzip" else "none, contiguous",
            "planted": expected,
        }
        manifest_path(out, variant).write_text(json.dumps(manifest, indent=1) + "\n")
        result[variant] = manifest
    log(f"generated {', '.join(todo)} in {out} ({time.perf_counter() - t0:.1f} s)")
    return result


# --------------------------------------------------------------------------- many saves

MANY_BLOCKS = 12
MANY_PARAMS = 2_500_000
MANY_SAVES = 300
MANY_MANIFEST_VERSION = 1


def many_planted(steps: list[int]) -> dict:
    """The pathologies written into each many-saves run, and where detectors must find them."""
    return {
        "frozen": {"tensor": "blocks.5.attn.out.weight", "first_step": steps[0]},
        "collapsing": {"tensor": "blocks.9.mlp.fc2.weight", "first_step": steps[1] if len(steps) > 1 else steps[0]},
        "nan-inf": {"tensor": "blocks.11.mlp.fc1.weight", "first_step": steps[-1]},
    }


def many_name(step: int) -> str:
    return f"save_{step:08d}.h5"


def many_dirs(saves: int) -> tuple[str, str]:
    """The two runs' directory names: ``saves`` and twice as many saves."""
    return f"many-{saves}", f"many-{2 * saves}"


def iterate_many(params: int, saves: int, seed: int):
    """Yields (step, weights, gradients) for ``saves`` saves of a 12-block transformer. Every
    save takes new gradients and moves the weights by a small SGD step (the arrays are
    reused and updated in place: consume them before asking for the next save). Clean
    numbers only: the NaN is added by the writer (``with_nan``).

    Planted: blocks.5.attn.out.weight never moves (nonzero gradient); blocks.9.mlp.fc2.weight
    shrinks 10x at the 2nd and the 3rd save (100x in all) and then trains at that scale."""
    shapes = layer_shapes(width_for(params, MANY_BLOCKS), MANY_BLOCKS)
    names = [n for n, _ in shapes]
    planted = many_planted([1, 2])
    frozen, collapsing = planted["frozen"]["tensor"], planted["collapsing"]["tensor"]
    assert {frozen, collapsing, planted["nan-inf"]["tensor"]} <= set(names)
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for name, shape in shapes:
        w = rng.standard_normal(shape, dtype=np.float32)
        if len(shape) == 1:
            w *= np.float32(0.02)
            if not name.endswith(".bias"):  # LayerNorm gain
                w += np.float32(1)
        else:
            w *= np.float32(1.0 / math.sqrt(shape[1]))
        weights[name] = w
    grads = {name: np.empty(shape, dtype=np.float32) for name, shape in shapes}
    scale = {name: np.float32(GRAD_SCALE) for name in names}
    # Drawing millions of normal numbers per save would take most of the writing time: each
    # gradient is a window of one pool of them at a random place instead (a few ms per save).
    pool = rng.standard_normal(count(shapes) + (1 << 20), dtype=np.float32)
    for i in range(saves):
        step = (i + 1) * STEP_STRIDE
        if i in (1, 2):
            weights[collapsing] *= np.float32(0.1)
            scale[collapsing] *= np.float32(0.1)  # the gradient stays in proportion to the weights
        for name, shape in shapes:
            g = grads[name]
            size = g.size
            start = int(rng.integers(0, pool.size - size + 1))
            np.multiply(pool[start:start + size].reshape(shape), scale[name], out=g)
            if name == "embed.weight":  # only the rows of tokens in the batch get a gradient
                g[rng.random(shape[0]) >= 0.2] = 0
            if name == frozen:
                continue  # left out of the optimizer: the gradient arrives, the weights never move
            if i not in (1, 2) or name != collapsing:
                weights[name] -= np.float32(LR) * g
        yield step, weights, grads


def with_nan(weights: dict, step: int, seed: int) -> dict:
    """The weights with NAN_ELEMENTS NaN in the planted tensor (at places fixed by seed and step)."""
    name = many_planted([1])["nan-inf"]["tensor"]
    bad = weights[name].copy()
    flat = bad.reshape(-1)
    flat[np.random.default_rng([seed, step]).choice(flat.size, NAN_ELEMENTS, replace=False)] = np.nan
    out = dict(weights)
    out[name] = bad
    return out


def write_many(path: Path, step: int, weights: dict, grads: dict) -> None:
    """One save written plainly with h5py: /model/<name>, /grads/<name>, root attr step."""
    with h5py.File(path, "w") as f:
        f.attrs["step"] = step
        model = f.create_group("model")
        for name, arr in weights.items():
            model.create_dataset(name, data=arr)
        g = f.create_group("grads")
        for name, arr in grads.items():
            g.create_dataset(name, data=arr)


def generate_many(out, saves: int = MANY_SAVES, params: int = MANY_PARAMS, seed: int = 0, log=print) -> dict:
    """Writes the many-saves workload: OUT/many-N (N saves) and OUT/many-2N (2N saves),
    each with NaN in its last save. The first N-1 saves of many-N are hard links to those of
    many-2N (the same bytes; only its last save, with the NaN, is its own), so the disk holds
    2N + 1 files. Reuses both runs when their manifests match; returns {dir name: manifest}."""
    if saves < 3:
        raise ValueError("the many-saves workload needs at least 3 saves (the collapse spans the first three)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = {"version": MANY_MANIFEST_VERSION, "kind": "many", "params": params, "saves": saves, "seed": seed,
            "blocks": MANY_BLOCKS}
    names = many_dirs(saves)
    found = {name: existing(out, name, spec) for name in names}
    if all(m is not None for m in found.values()):
        return found
    for name in names:
        manifest_path(out, name).unlink(missing_ok=True)
        shutil.rmtree(out / name, ignore_errors=True)
        (out / name).mkdir(parents=True)
    short, long = (out / n for n in names)
    t0 = time.perf_counter()
    steps, tensors, total_params = [], 0, 0
    for i, (step, weights, grads) in enumerate(iterate_many(params, 2 * saves, seed)):
        steps.append(step)
        tensors = len(weights) + len(grads)
        total_params = sum(a.size for a in weights.values())
        last = i == 2 * saves - 1
        write_many(long / many_name(step), step, with_nan(weights, step, seed) if last else weights, grads)
        if i < saves - 1:
            try:
                os.link(long / many_name(step), short / many_name(step))
            except OSError:
                shutil.copyfile(long / many_name(step), short / many_name(step))
        elif i == saves - 1:
            write_many(short / many_name(step), step, with_nan(weights, step, seed), grads)
    result = {}
    for name, run_steps in ((names[0], steps[:saves]), (names[1], steps)):
        files = [many_name(s) for s in run_steps]
        manifest = {
            "spec": spec, "variant": name, "files": files,
            "bytes": sum((out / name / f).stat().st_size for f in files), "steps": run_steps,
            "saves": len(run_steps), "params": total_params, "tensors_per_step": tensors, "dtype": "float32",
            "width": width_for(params, MANY_BLOCKS), "blocks": MANY_BLOCKS,
            "compression": "none, contiguous; /model and /grads groups written with h5py",
            "planted": many_planted(run_steps),
        }
        manifest_path(out, name).write_text(json.dumps(manifest, indent=1) + "\n")
        result[name] = manifest
    log(f"generated {names[0]} and {names[1]} in {out} ({time.perf_counter() - t0:.1f} s)")
    return result


def parse_count(text: str) -> int:
    value = float(text)
    if value <= 0 or value != value:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return int(value)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output directory (one sub-directory per variant)")
    ap.add_argument("--params", type=parse_count,
                    help=f"parameter count (default 50e6; with --many {MANY_PARAMS / 1e6:g}e6)")
    ap.add_argument("--steps", type=int, default=6, help="saved steps (default 6)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of native,gzip,h5py,safetensors,torch")
    ap.add_argument("--jobs", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                    help="processes compressing gzip steps (default: up to 2)")
    ap.add_argument("--big-tensor", action="store_true",
                    help="instead: 2 steps of one 16384x16384 float32 matrix (1 GiB), weights only, plus a bias")
    ap.add_argument("--many", type=int, metavar="N",
                    help="instead: the many-saves workload, a 12-block transformer saved N and 2N times "
                         "(OUT_DIR/many-N, OUT_DIR/many-2N; /model and /grads written with h5py)")
    args = ap.parse_args(argv)
    if args.many is not None:
        if args.many < 3:
            ap.error("--many needs at least 3 saves")
        manifests = generate_many(args.out, args.many, args.params or MANY_PARAMS, args.seed)
        for name, m in manifests.items():
            print(f"{name} {len(m['files'])} files  {m['bytes'] / 1e9:.3f} GB  {m['params']:,} params/save, "
                  f"{m['tensors_per_step']} datasets per file")
        return 0
    args.params = args.params or 50_000_000
    if args.steps < 2:
        ap.error("--steps must be at least 2 (drift needs two steps)")
    variants = [v for v in args.variants.split(",") if v]
    for variant in [v for v in variants if not generate_available(v)]:
        print(f"{variant}: skipped ({NEEDS[variant]} is not installed)", file=sys.stderr)
    variants = [v for v in variants if generate_available(v)]
    manifests = generate(args.out, variants, args.params, args.steps, args.seed, args.jobs, big=args.big_tensor)
    for variant, m in manifests.items():
        print(f"{variant:7s} {len(m['files'])} files  {m['bytes'] / 1e9:.3f} GB  {m['params']:,} params/step  "
              f"({m['compression']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
