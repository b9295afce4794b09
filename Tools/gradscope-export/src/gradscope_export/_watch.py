"""Start ``gradscope watch`` beside a training loop.

    watcher = gradscope_export.watch("runs/exp1", fail_on="error")
    for step in range(steps):
        ...                                   # train, save_step(...) now and then
        if watcher.failed:                    # a finding at or above fail_on
            print(watcher.findings[-1].line)
            break
    watcher.stop()

``watch`` starts the gradscope binary as a subprocess following the run directory (it reads
only saves that are complete, so it can be started before the first one). Each finding it
prints is parsed into a ``WatchFinding`` and, unless ``echo=False``, echoed to stdout as
``gradscope: step 800 error nan-inf net.4.weight: ...``. When a finding reaches ``fail_on``,
gradscope exits with code 1: ``failed`` becomes true and ``on_failure`` (if given) is called
from the reader thread.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Union

__all__ = ["watch", "Watcher", "WatchFinding", "find_binary"]

_FINDING = re.compile(r"^(?:step (?P<step>-?\d+)|no step) (?P<now>now )?(?P<severity>info|warning|error) (?P<kind>[a-z-]+)(?: (?P<tensor>[^:]+))?: (?P<message>.*)$")


@dataclass(frozen=True)
class WatchFinding:
    """One line of ``gradscope watch``: a finding, as it appeared."""

    step: Optional[int]
    severity: str
    kind: str
    tensor: Optional[str]
    message: str
    #: True when a finding shown before became more severe ("now error").
    escalated: bool
    line: str


def parse_line(line: str) -> Optional[WatchFinding]:
    """The finding a line of ``gradscope watch``'s output is, or None for its other lines."""
    match = _FINDING.match(line.rstrip("\n"))
    if not match:
        return None
    step = match.group("step")
    return WatchFinding(
        step=int(step) if step is not None else None, severity=match.group("severity"), kind=match.group("kind"),
        tensor=match.group("tensor"), message=match.group("message"), escalated=match.group("now") is not None,
        line=line.rstrip("\n"))


def find_binary(binary: Optional[str] = None) -> str:
    """The gradscope executable: ``binary``, else $GRADSCOPE_BINARY, else ``gradscope`` on PATH."""
    candidate = binary or os.environ.get("GRADSCOPE_BINARY") or shutil.which("gradscope")
    if not candidate or not os.access(candidate, os.X_OK):
        raise FileNotFoundError(
            "gradscope binary not found: pass binary=, set GRADSCOPE_BINARY, or put gradscope on PATH"
            + (f" ({candidate} is not executable)" if candidate else ""))
    return candidate


class Watcher:
    """A running ``gradscope watch``. Use ``stop()`` (or a ``with`` block) to end it."""

    def __init__(self, args: Sequence[str], echo: bool, on_finding: Optional[Callable[[WatchFinding], None]],
                 on_failure: Optional[Callable[["Watcher"], None]]):
        self.args = list(args)
        self.findings: List[WatchFinding] = []
        self.skipped: List[str] = []
        self.summary: Optional[str] = None
        self._echo = echo
        self._on_finding = on_finding
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, bufsize=1,
            # Its own process group: the training script's Ctrl-C is the script's to handle; stop() ends gradscope.
            start_new_session=True)
        self._reader = threading.Thread(target=self._read, name="gradscope-watch", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            finding = parse_line(line)
            if finding is not None:
                with self._lock:
                    self.findings.append(finding)
                if self._echo:
                    print("gradscope: " + finding.line, flush=True)
                if self._on_finding is not None:
                    self._on_finding(finding)
            elif line.startswith("skipped "):
                with self._lock:
                    self.skipped.append(line.rstrip("\n")[len("skipped "):])
            elif not line.startswith("watching "):
                self.summary = line.rstrip("\n")
        self.process.wait()
        if self.process.returncode == 1 and self._on_failure is not None:
            self._on_failure(self)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return self.process.poll()

    @property
    def failed(self) -> bool:
        """True once gradscope stopped at a finding at or above ``fail_on`` (it exited with code 1)."""
        return self.process.poll() == 1

    def wait(self, timeout: Optional[float] = None) -> int:
        """Waits for gradscope to end (a finding at ``fail_on``, or ``stop()``); its exit code."""
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    def stop(self, timeout: float = 30) -> int:
        """Ends gradscope (SIGTERM: it finishes the scan under way, prints its summary line, exits 0)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout)
        return self.process.returncode

    def __enter__(self) -> "Watcher":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def watch(
    run_dir: Union[str, os.PathLike],
    fail_on: Optional[str] = "error",
    interval: float = 10.0,
    binary: Optional[str] = None,
    echo: bool = True,
    on_finding: Optional[Callable[[WatchFinding], None]] = None,
    on_failure: Optional[Callable[[Watcher], None]] = None,
    extra_args: Sequence[str] = (),
) -> Watcher:
    """Starts ``gradscope watch run_dir`` in the background and returns its ``Watcher``.

    fail_on : "info", "warning" or "error": gradscope stops at the first finding at or above it
        and ``Watcher.failed`` becomes true; None watches until ``stop()``.
    interval : seconds between gradscope's looks at the directory.
    binary : the gradscope executable (default: $GRADSCOPE_BINARY, else gradscope on PATH).
    echo : print each finding to stdout as it appears, prefixed ``gradscope: ``.
    on_finding : called with each ``WatchFinding`` (from a background thread).
    on_failure : called with the watcher when a finding reached ``fail_on`` (from a background thread).
    extra_args : more options for ``gradscope watch`` (e.g. ["--select", "head"]).
    """
    if fail_on is not None and fail_on not in ("info", "warning", "error"):
        raise ValueError(f"fail_on must be 'info', 'warning', 'error' or None, not {fail_on!r}")
    if not interval > 0:
        raise ValueError("interval must be positive")
    args = [find_binary(binary), "watch", os.fspath(run_dir), "--interval", repr(float(interval)), "--quiet"]
    if fail_on is not None:
        args += ["--fail-on", fail_on]
    args += list(extra_args)
    return Watcher(args, echo=echo, on_finding=on_finding, on_failure=on_failure)


if __name__ == "__main__":  # pragma: no cover - a manual check: python -m gradscope_export._watch RUN
    with watch(sys.argv[1], fail_on=None, interval=2) as w:
        w.wait()
