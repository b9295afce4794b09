"""gradscope_export.watch: the gradscope binary following a run that save_step writes.

The tests that run the binary skip when it is not built (GRADSCOPE_BINARY, gradscope on PATH, or
the package's .build/debug/gradscope)."""

import os
import shutil
import time

import numpy as np
import pytest

import gradscope_export as gx
from gradscope_export._watch import parse_line

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def _binary():
    for candidate in (os.environ.get("GRADSCOPE_BINARY"), shutil.which("gradscope"),
                      os.path.join(ROOT, ".build", "debug", "gradscope")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


BINARY = _binary()
needs_binary = pytest.mark.skipif(BINARY is None, reason="the gradscope binary is not built (swift build, or set GRADSCOPE_BINARY)")


class _Run:
    """A small MLP trained by random small steps, saved with save_step; NaN from `nan_from` on."""

    def __init__(self, directory, nan_from=None):
        self.directory = directory
        self.nan_from = nan_from
        self.rng = np.random.default_rng(7)
        self.w = {"l0.weight": self.rng.normal(0, 0.3, (16, 8)), "l1.weight": self.rng.normal(0, 0.25, (4, 16))}

    def save(self, step):
        grads = {}
        for name, value in self.w.items():
            if step > 0:
                value += self.rng.normal(0, 1e-3 * np.linalg.norm(value) / np.sqrt(value.size), value.shape)
            grads[name] = self.rng.normal(0, 1e-2, value.shape)
            if self.nan_from is not None and step >= self.nan_from:
                grads[name][0, 0] = np.nan
        gx.save_step(os.path.join(self.directory, f"step_{step:06d}.h5"), step, dict(self.w),
                     gradients=grads if step > 0 else None, loss=1.0 / (1 + step), framework="pytorch")


def _age(path, seconds=60):
    past = time.time() - seconds
    for name in os.listdir(path) if os.path.isdir(path) else [""]:
        os.utime(os.path.join(path, name) if name else path, (past, past))


def test_parse_line():
    f = parse_line("step 800 error nan-inf net.4.weight: NaN/Inf first appears at step 800: garbage")
    assert (f.step, f.severity, f.kind, f.tensor, f.escalated) == (800, "error", "nan-inf", "net.4.weight", False)
    assert f.message == "NaN/Inf first appears at step 800: garbage"
    g = parse_line("step 0 now error loss-plateau: The loss sits at ln 2.")
    assert (g.step, g.severity, g.kind, g.tensor, g.escalated) == (0, "error", "loss-plateau", None, True)
    assert parse_line("watching runs/x every 10 s, until Ctrl-C") is None
    assert parse_line("stopped by SIGTERM after 3 s: 1 scan, 2 saves up to step 1, no finding") is None


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        gx.watch(tmp_path, fail_on="fatal", binary="/bin/true")
    with pytest.raises(ValueError):
        gx.watch(tmp_path, interval=0, binary="/bin/true")
    with pytest.raises(FileNotFoundError):
        gx.watch(tmp_path, binary=str(tmp_path / "no-such-gradscope"))


@needs_binary
def test_stops_at_the_first_error_while_training_writes(tmp_path):
    run = _Run(str(tmp_path), nan_from=3)
    for step in range(3):
        run.save(step)
    _age(str(tmp_path))
    seen = []
    reached = []
    watcher = gx.watch(tmp_path, fail_on="error", interval=0.2, binary=BINARY, echo=False,
                       on_finding=seen.append, on_failure=reached.append)
    try:
        time.sleep(0.5)
        assert watcher.running and not watcher.failed
        for step in range(3, 5):  # the training loop goes on, and goes wrong
            run.save(step)
        assert watcher.wait(timeout=60) == 1
    finally:
        watcher.stop()
    assert watcher.failed and reached == [watcher]
    nan = [f for f in watcher.findings if f.kind == "nan-inf"]
    assert len(nan) == 1 and nan[0].step == 3 and nan[0].severity == "error"
    assert seen == watcher.findings
    assert watcher.summary.startswith("stopped at a finding at error or above")


@needs_binary
def test_stop_ends_it_cleanly(tmp_path):
    run = _Run(str(tmp_path))
    for step in range(3):
        run.save(step)
    _age(str(tmp_path))
    with gx.watch(tmp_path, fail_on=None, interval=0.2, binary=BINARY, echo=False) as watcher:
        time.sleep(2.5)  # its first scan takes about 0.3 s
        assert watcher.running
    assert watcher.returncode == 0 and not watcher.failed
    assert watcher.summary.startswith("stopped by SIGTERM") and "3 saves up to step 2" in watcher.summary
    assert not [f for f in watcher.findings if f.severity == "error"]


_WRITER = """
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "w")
f.attrs["format"] = "gradscope/1"
f.create_dataset("weights/l0.weight", data=np.ones((16, 8)))
print("open", flush=True)
sys.stdin.read()  # holds the file open until the test closes its stdin
f.close()
"""


@needs_binary
@pytest.mark.parametrize("locking", [True, False])
def test_a_file_h5py_is_writing_is_waited_for_not_skipped(tmp_path, locking):
    """Another process writes a save with h5py and holds it open (with or without libhdf5's file
    locking): gradscope waits for it, by the write lock or by the superblock's end of file, and
    never lists it as skipped."""
    import subprocess
    import sys

    run = _Run(str(tmp_path))
    for step in range(2):
        run.save(step)
    _age(str(tmp_path))
    env = {**os.environ, "HDF5_USE_FILE_LOCKING": "TRUE" if locking else "FALSE"}
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "step_000002.h5")], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        # Past the 2 s a new file rests, well within the 60 s after which superblock signs are not trusted.
        _age(str(tmp_path / "step_000002.h5"), seconds=10)
        result = subprocess.run([BINARY, "watch", str(tmp_path), "--once"], capture_output=True, text=True, timeout=60)
    finally:
        writer.stdin.close()
        writer.wait(30)
    assert result.returncode == 0, result.stderr
    assert "waiting for step_000002.h5" in result.stderr
    assert ("write lock" if locking else "superblock's end of file") in result.stderr, result.stderr
    assert "skipped" not in result.stdout
    assert "2 saves up to step 1" in result.stdout and "1 file still being written" in result.stdout
