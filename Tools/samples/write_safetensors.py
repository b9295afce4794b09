"""Write a small safetensors file with the real `safetensors` library (numpy API).

    python Tools/samples/write_safetensors.py OUT.safetensors [--step N]

The tensors are a tiny PyTorch-style MLP (`net.0.weight` [16, 8] ... , float32, one bias in
float16, one in float64) plus an int64 buffer (`embeddings.position_ids`, read but not
analysed), and `__metadata__` holds {"format": "pt", "step": N}. The values are seeded, so a
test can compute the statistics gradscope must report. Needs: numpy, safetensors.
"""

from __future__ import annotations

import argparse

import numpy as np


def tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """The tensors written, by name."""
    rng = np.random.default_rng(seed)
    return {
        "net.0.weight": rng.normal(0, 0.35, (16, 8)).astype(np.float32),
        "net.0.bias": rng.normal(0, 0.01, 16).astype(np.float16),
        "net.2.weight": rng.normal(0, 0.25, (4, 16)).astype(np.float32),
        "net.2.bias": rng.normal(0, 0.01, 4).astype(np.float64),
        "embeddings.position_ids": np.arange(10, dtype=np.int64)[None, :],
    }


def write(path: str, step: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """Writes the file with safetensors.numpy.save_file; returns what was written."""
    from safetensors.numpy import save_file

    written = tensors(seed)
    save_file(written, path, metadata={"format": "pt", "step": str(step)})
    return written


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="the .safetensors file to write")
    ap.add_argument("--step", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    write(args.out, args.step, args.seed)


if __name__ == "__main__":
    main()
