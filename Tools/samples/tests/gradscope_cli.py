"""The built gradscope binary for the sample tests: $GRADSCOPE_BIN, else .build/debug/gradscope
in the repository; a test that needs it is skipped when it has not been built."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def gradscope_binary() -> Path:
    env = os.environ.get("GRADSCOPE_BIN")
    candidate = Path(env) if env else REPO / ".build/debug/gradscope"
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        pytest.skip(f"no gradscope binary at {candidate} (build it, or set GRADSCOPE_BIN)")
    return candidate


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(gradscope_binary()), *args], capture_output=True, text=True, timeout=120)
