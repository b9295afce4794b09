"""Shared helpers of the sample-run scripts (seeding, output directory)."""

from __future__ import annotations

import argparse
import glob
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SAMPLES = os.path.join(REPO, "SampleCheckpoints")

try:  # installed with `pip install ./Tools/gradscope-export`
    import gradscope_export  # noqa: F401
except ImportError:  # or straight from the source tree
    sys.path.insert(0, os.path.join(REPO, "Tools", "gradscope-export", "src"))


def parse_out(run: str, argv=None) -> str:
    """--out DIR (default SampleCheckpoints/<run>); old step files there are removed."""
    ap = argparse.ArgumentParser(description=f"make the {run} sample run")
    ap.add_argument("--out", default=os.path.join(SAMPLES, run), help="run directory")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for pattern in ("step_*.h5", ".step_*.tmp"):
        for f in glob.glob(os.path.join(args.out, pattern)):
            os.remove(f)
    return args.out


def seed_torch(seed: int):
    """Fixed seeds, one CPU thread, deterministic kernels."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)
