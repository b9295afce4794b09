"""The Python API's own logic, from the source tree with stand-in binaries (no build): options
to arguments, exit codes to results or GradscopeError, non-finite numbers, the platform check."""

from __future__ import annotations

import json
import math
import os
import stat
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

import gradscope  # noqa: E402
from gradscope import _api, _binary, _cli  # noqa: E402

SCAN = {
    "source": "run",
    "layout": "native",
    "verdict": "1 problem: loss is NaN from step 2.",
    "steps": [0, 2],
    "findings": [
        {
            "kind": "nan-inf",
            "severity": "error",
            "tensor": None,
            "layer": None,
            "first_step": 2,
            "last_step": 2,
            "message": "The loss is NaN.",
            "evidence": {"loss": "nan", "upper": "inf", "count": 3, "names": ["a"]},
            "explanation": "...",
        }
    ],
    "skipped": [{"item": "run/notes.txt", "kind": "not-analysed", "reason": "not a checkpoint"}],
    "not_checked": [{"kind": "frozen", "reason": "needs two saves"}],
    "notes": [],
    "loss": [{"step": 0, "loss": 0.7, "lr": 0.1}, {"step": 2, "loss": "nan", "lr": "-inf"}],
    "timeline": [{"name": "w", "layer": "l", "shape": [2], "points": [{"step": 0, "norm": "inf", "non_finite": 1}]}],
    "activations": [],
    "story": [],
}


def stand_in(tmp_path, monkeypatch, body):
    """Makes GRADSCOPE_BINARY a shell script with this body; returns the file its arguments go to."""
    script = tmp_path / "gradscope"
    arguments = tmp_path / "arguments"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {arguments}\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("GRADSCOPE_BINARY", str(script))
    return arguments


def test_findings_at_fail_on_are_a_result_not_an_error(tmp_path, monkeypatch):
    (tmp_path / "out.json").write_text(json.dumps(SCAN))
    arguments = stand_in(tmp_path, monkeypatch, f"cat {tmp_path}/out.json; exit 1")
    run = gradscope.scan("run", fail_on="error", threshold={"collapse_factor": 100}, no_isolation=True, explain=False)
    assert arguments.read_text().splitlines() == [
        "scan", "--format", "json", "--quiet", "--fail-on", "error", "--threshold", "collapse_factor=100",
        "--no-isolation", "--", "run",
    ]
    assert run.failed and run.exit_code == 1
    finding = run.findings[0]
    assert (finding.kind, finding.severity, finding.tensor, finding.steps) == ("nan-inf", "error", None, (2, 2))
    assert math.isnan(finding.evidence["loss"]) and finding.evidence["upper"] == math.inf
    assert finding.evidence["count"] == 3 and finding.evidence["names"] == ["a"]
    assert run.skipped == [gradscope.SkippedItem("run/notes.txt", "not-analysed", "not a checkpoint")]
    assert run.not_checked == [gradscope.NotChecked("frozen", "needs two saves")]
    loss = run.loss if isinstance(run.loss, list) else run.loss.to_dict("records")
    assert math.isnan(loss[1]["loss"]) and loss[1]["lr"] == -math.inf
    timeline = run.timeline if isinstance(run.timeline, list) else run.timeline.to_dict("records")
    assert timeline[0]["tensor"] == "w" and timeline[0]["norm"] == math.inf
    assert json.loads(run.to_json()) == SCAN


def test_the_commands_one_line_is_the_errors_message(tmp_path, monkeypatch):
    stand_in(tmp_path, monkeypatch, 'echo "gradscope: run/x.h5: truncated file" >&2; exit 2')
    with pytest.raises(gradscope.GradscopeError) as caught:
        gradscope.inspect("run/x.h5")
    assert caught.value.message == "run/x.h5: truncated file"
    assert str(caught.value) == "run/x.h5: truncated file"
    assert caught.value.exit_code == 2
    assert caught.value.command[1:4] == ["inspect", "--format", "json"]


def test_a_crash_is_an_error_too(tmp_path, monkeypatch):
    stand_in(tmp_path, monkeypatch, "kill -SEGV $$")
    with pytest.raises(gradscope.GradscopeError) as caught:
        gradscope.diff("a.h5", "b.h5")
    assert caught.value.exit_code < 0
    assert "signal" in caught.value.message


def test_output_that_is_not_json_is_an_error(tmp_path, monkeypatch):
    stand_in(tmp_path, monkeypatch, "echo not json")
    with pytest.raises(gradscope.GradscopeError, match="printed no JSON"):
        gradscope.scan("run")


def test_unknown_options_are_refused_before_running():
    with pytest.raises(TypeError, match="unknown option 'format'"):
        _api._arguments("scan", {"format": "csv"})
    with pytest.raises(TypeError, match="unknown option 'jobs'"):
        _api._arguments("inspect", {"jobs": 2})
    assert _api._arguments("scan", {"threshold": ["a=1", "b=2"], "select": "fc", "jobs": 3}) == [
        "--threshold", "a=1", "--threshold", "b=2", "--select", "fc", "--jobs", "3",
    ]


def test_report_shown_in_a_notebook_is_escaped_into_an_iframe(tmp_path, monkeypatch):
    (tmp_path / "out.json").write_text(json.dumps(SCAN))
    page = '<!DOCTYPE html><html><head><style>body{color:red}</style></head><body>"a" & <b>b</b></body></html>'
    (tmp_path / "page.html").write_text(page)
    stand_in(tmp_path, monkeypatch, f'if [ "$1" = report ]; then cat {tmp_path}/page.html; else cat {tmp_path}/out.json; fi')
    shown = gradscope.scan("run")._repr_html_()
    assert shown.startswith('<iframe class="gradscope-report" sandbox=""')
    assert shown.count("<") == 2 and "<style" not in shown
    assert "srcdoc=\"&lt;!DOCTYPE html&gt;" in shown and "&quot;a&quot; &amp; &lt;b&gt;" in shown


def test_other_platforms_get_one_clear_message():
    assert _binary.unsupported_reason("linux", "x86_64", (2, 36), "2.36") is None
    assert _binary.unsupported_reason("linux", "x86_64", (2, 39), "2.36") is None
    old = _binary.unsupported_reason("linux", "x86_64", (2, 31), "2.36")
    assert "Linux x86-64 with glibc 2.36 or newer" in old and "glibc 2.31" in old
    mac = _binary.unsupported_reason("darwin", "arm64", None, "2.36")
    assert "Linux x86-64 with glibc 2.36 or newer only; this is darwin arm64" in mac
    arm = _binary.unsupported_reason("linux", "aarch64", (2, 36), "2.36")
    assert "this is linux aarch64" in arm


def test_the_console_script_says_it_and_exits_2(monkeypatch, capsys):
    monkeypatch.delenv("GRADSCOPE_BINARY", raising=False)
    monkeypatch.setattr(_binary, "unsupported_reason", lambda: "the gradscope wheel runs on Linux x86-64 only")
    with pytest.raises(SystemExit) as exit:
        _cli.main()
    assert exit.value.code == 2
    assert capsys.readouterr().err == "gradscope: the gradscope wheel runs on Linux x86-64 only\n"
    with pytest.raises(gradscope.GradscopeError, match="Linux x86-64 only"):
        gradscope.scan("run")


def test_a_report_that_cannot_be_made_is_said_in_its_place(tmp_path, monkeypatch):
    (tmp_path / "out.json").write_text(json.dumps(SCAN))
    stand_in(tmp_path, monkeypatch, f'if [ "$1" = report ]; then echo "gradscope: run: gone <now>" >&2; exit 2; fi; cat {tmp_path}/out.json')
    shown = gradscope.scan("run")._repr_html_()
    assert shown.startswith("<p>gradscope report: run: gone &lt;now&gt;</p>")
    assert "1 problem: loss is NaN from step 2." in shown
