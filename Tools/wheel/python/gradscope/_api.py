"""scan, inspect and diff: the gradscope binary run with ``--format json``, its output as objects.

The numbers are the binary's own (docs/JSON.md is the contract): nothing is recomputed here.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, List, Mapping, Sequence, Union

from ._binary import binary_path
from ._errors import GradscopeError
from ._results import DiffResult, InspectResult, ScanResult

PathLike = Union[str, "os.PathLike[str]"]

# The options each command takes (keyword -> kind); `--format`, `--quiet` and `--output` are the API's.
_COMMON = {
    "layout": "value",
    "follow_links": "flag",
    "allow_plugins": "flag",
    "select": "value",
    "fail_on": "value",
    "config": "value",
    "threshold": "thresholds",
}
_OPTIONS = {
    "scan": {**_COMMON, "explain": "flag", "timeout": "value", "jobs": "value", "no_isolation": "flag"},
    "inspect": {**_COMMON, "explain": "flag"},
    "diff": {**_COMMON, "explain": "flag"},
    "report": {**_COMMON, "timeout": "value", "jobs": "value", "no_isolation": "flag"},
}


def _arguments(command: str, options: Mapping[str, Any]) -> List[str]:
    known = _OPTIONS[command]
    arguments: List[str] = []
    for key, value in options.items():
        kind = known.get(key)
        if kind is None:
            allowed = ", ".join(sorted(known))
            raise TypeError(f"gradscope.{command}() got an unknown option {key!r} (options: {allowed})")
        flag = "--" + key.replace("_", "-")
        if kind == "flag":
            if value:
                arguments.append(flag)
        elif kind == "thresholds":
            if value is None:
                continue
            pairs = value.items() if isinstance(value, Mapping) else (str(item).split("=", 1) for item in value)
            for name, number in pairs:
                arguments += [flag, f"{name}={number}"]
        elif value is not None:
            arguments += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    return arguments


def _run(arguments: Sequence[str]) -> "subprocess.CompletedProcess[bytes]":
    """Runs the binary; exit codes 0 and 1 (findings at or above --fail-on) are results, others errors."""
    command = [binary_path()] + list(arguments)
    try:
        completed = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True)
    except OSError as error:
        raise GradscopeError(f"cannot run {command[0]}: {error.strerror}", 2, command) from None
    if completed.returncode not in (0, 1):
        lines = [line for line in completed.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
        if lines:
            # The binary's one line ("gradscope: FILE: reason"), or the argument parser's "Error: ...".
            marked = [line for line in lines if line.startswith(("gradscope: ", "Error: "))]
            message = (marked or lines)[0]
            if message.startswith("gradscope: "):
                message = message[len("gradscope: ") :]
            if message.startswith("Error: "):
                message = message[len("Error: ") :]
        elif completed.returncode < 0:
            message = f"gradscope was ended by signal {-completed.returncode}"
        else:
            message = f"gradscope exited with code {completed.returncode} and no message"
        raise GradscopeError(message, completed.returncode, command)
    return completed


def _json(command: str, paths: Sequence[PathLike], options: Mapping[str, Any]):
    arguments = [command, "--format", "json", "--quiet"] + _arguments(command, options)
    arguments += ["--"] + [os.fspath(path) for path in paths]
    completed = _run(arguments)
    text = completed.stdout.decode("utf-8")
    try:
        data = json.loads(text)
    except ValueError:
        raise GradscopeError(f"gradscope {command} printed no JSON object", completed.returncode, arguments) from None
    return text, data, completed.returncode


def report_html(path: PathLike, **options: Any) -> str:
    """The HTML report of a run (``gradscope report PATH -o -``): one self-contained page."""
    arguments = ["report", "--output", "-", "--quiet"] + _arguments("report", options) + ["--", os.fspath(path)]
    return _run(arguments).stdout.decode("utf-8")


def scan(path: PathLike, **options: Any) -> ScanResult:
    """Every step of a run (a directory of checkpoints, or one file with a group per step).

    Options are the command's, as keywords: ``layout``, ``select``, ``fail_on``, ``config``,
    ``threshold`` (a dict ``{"collapse_factor": 100}``), ``timeout``, ``jobs``, ``no_isolation``,
    ``follow_links``, ``allow_plugins``, ``explain``. Raises GradscopeError when the run cannot be
    read; findings at or above ``fail_on`` set ``result.failed`` instead.
    """
    text, data, code = _json("scan", [path], options)
    report_options = {key: value for key, value in options.items() if key in _OPTIONS["report"]}
    return ScanResult(data, text, code, lambda: report_html(path, **report_options))


def inspect(path: PathLike, **options: Any) -> InspectResult:
    """Every tensor of one checkpoint: statistics and what one file can show."""
    text, data, code = _json("inspect", [path], options)
    report_options = {key: value for key, value in options.items() if key in _OPTIONS["report"]}
    return InspectResult(data, text, code, lambda: report_html(path, **report_options))


def diff(a: PathLike, b: PathLike, **options: Any) -> DiffResult:
    """What changed between two saves, tensor by tensor, largest relative change first."""
    text, data, code = _json("diff", [a, b], options)
    return DiffResult(data, text, code)


def version() -> str:
    """The bundled binary's version."""
    return _run(["--version"]).stdout.decode("utf-8").strip()


__all__ = ["scan", "inspect", "diff", "report_html", "version", "PathLike"]
