"""Result objects over the binary's JSON (docs/JSON.md): typed findings, tables, the HTML report."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ._errors import GradscopeError

_NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def number(value: Any) -> Any:
    """A JSON `number` as a float: the contract writes NaN and ±Inf as "nan", "inf", "-inf"."""
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    return value


def _numbers(value: Any) -> Any:
    if isinstance(value, list):
        return [_numbers(item) for item in value]
    return number(value)


def table(records: List[Dict[str, Any]], columns: Sequence[str]):
    """A pandas DataFrame with these columns when pandas is installed, else the records themselves."""
    try:
        import pandas
    except ImportError:
        return records
    return pandas.DataFrame.from_records(records, columns=list(columns))


@dataclass(frozen=True)
class Finding:
    """One finding: ``kind`` (e.g. "frozen"), ``severity`` ("info", "warning", "error"), the
    ``tensor`` and ``layer`` it is about (None for the run as a whole, e.g. the loss), the saved
    steps it spans (``first_step``, ``last_step``, None when not bound to a step), ``message``,
    ``evidence`` (the numbers behind it, non-finite ones as floats) and ``explanation``."""

    kind: str
    severity: str
    tensor: Optional[str]
    layer: Optional[str]
    first_step: Optional[int]
    last_step: Optional[int]
    message: str
    evidence: Dict[str, Any] = field(default_factory=dict)
    explanation: str = ""
    caused_by: Tuple[int, ...] = ()

    @property
    def steps(self) -> Tuple[Optional[int], Optional[int]]:
        """(first_step, last_step)."""
        return (self.first_step, self.last_step)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Finding":
        return cls(
            kind=data["kind"],
            severity=data["severity"],
            tensor=data.get("tensor"),
            layer=data.get("layer"),
            first_step=data.get("first_step"),
            last_step=data.get("last_step"),
            message=data["message"],
            evidence={key: _numbers(value) for key, value in (data.get("evidence") or {}).items()},
            explanation=data.get("explanation") or "",
            caused_by=tuple(data.get("caused_by") or ()),
        )


@dataclass(frozen=True)
class NotChecked:
    """A detector that could not run: its finding ``kind`` and the data it lacked (``reason``)."""

    kind: str
    reason: str


@dataclass(frozen=True)
class SkippedItem:
    """A file or object not analysed: ``item``, ``kind`` (metadata, not-analysed, unreadable,
    superseded: decide by this) and ``reason`` (words, for people)."""

    item: str
    kind: str
    reason: str


_SEVERITY_ORDER = {"info": 0, "warning": 1, "error": 2}


class _Result:
    """What scan, inspect and diff share: the JSON, the verdict, findings, not-checked, skipped."""

    def __init__(self, data: Dict[str, Any], text: str, exit_code: int):
        self.data = data
        self._text = text
        self.exit_code = exit_code
        self.verdict: str = data["verdict"]
        self.findings: List[Finding] = [Finding.from_json(item) for item in data.get("findings", [])]
        self.not_checked: List[NotChecked] = [
            NotChecked(item["kind"], item["reason"]) for item in data.get("not_checked", [])
        ]
        self.skipped: List[SkippedItem] = [
            SkippedItem(item["item"], item["kind"], item["reason"]) for item in data.get("skipped", [])
        ]
        self.notes: List[str] = list(data.get("notes", []))

    @property
    def failed(self) -> bool:
        """Whether a finding is at or above ``fail_on`` (the command's exit code 1)."""
        return self.exit_code == 1

    def findings_of(self, kind: str) -> List[Finding]:
        return [finding for finding in self.findings if finding.kind == kind]

    def to_json(self) -> str:
        """The command's JSON output, exactly as it printed it."""
        return self._text

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._subject()}: {self.verdict}>"

    def _subject(self) -> str:
        raise NotImplementedError

    def _summary_html(self) -> str:
        rows = "".join(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                html.escape(f.severity),
                html.escape(f.kind),
                html.escape(f.tensor or ""),
                html.escape("" if f.first_step is None else f"{f.first_step}–{f.last_step}"),
                html.escape(f.message),
            )
            for f in self.findings
        )
        table_html = (
            "<table><tr><th>severity</th><th>kind</th><th>tensor</th><th>steps</th><th>message</th></tr>"
            f"{rows}</table>"
            if rows
            else ""
        )
        return f"<div><p><b>{html.escape(self._subject())}</b>: {html.escape(self.verdict)}</p>{table_html}</div>"


class _Reported(_Result):
    """A result whose HTML report ``gradscope report`` makes (scan and inspect)."""

    def __init__(self, data, text, exit_code, make_report: Callable[[], str]):
        super().__init__(data, text, exit_code)
        self._make_report = make_report
        self._report: Optional[str] = None

    def report_html(self) -> str:
        """The HTML report (``gradscope report ... -o -``): one self-contained page, no script,
        nothing fetched from the network. Made on first use (it reads the files again)."""
        if self._report is None:
            self._report = self._make_report()
        return self._report

    def save_report(self, path) -> None:
        with open(path, "w", encoding="utf-8") as file:
            file.write(self.report_html())

    def _repr_html_(self) -> str:
        # The report is a whole page with its own stylesheet: shown in a sandboxed iframe (its
        # text escaped into srcdoc) so that its CSS cannot restyle the notebook around it.
        try:
            page = self.report_html()
        except GradscopeError as error:  # the files changed or vanished since the scan
            return f"<p>gradscope report: {html.escape(error.message)}</p>{self._summary_html()}"
        return (
            '<iframe class="gradscope-report" sandbox="" style="width:100%;height:820px;'
            'border:1px solid #ddd;resize:vertical" title="gradscope report" '
            f'srcdoc="{html.escape(page, quote=True)}"></iframe>'
        )


_TIMELINE_COLUMNS = (
    "tensor",
    "layer",
    "step",
    "norm",
    "gradient_norm",
    "gradient_ratio",
    "update_ratio",
    "update_per_save",
    "zero_fraction",
    "non_finite",
    "gradient_zero_fraction",
    "gradient_non_finite",
    "dead_units",
)


def _timeline_records(timelines: List[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    records = []
    for timeline in timelines:
        for point in timeline.get("points", []):
            record: Dict[str, Any] = {"tensor": timeline["name"], "layer": timeline["layer"]}
            for column in _TIMELINE_COLUMNS[2:]:
                record[column] = number(point.get(column))
            records.append(record)
    return records


class ScanResult(_Reported):
    """``gradscope.scan``: the run's verdict, findings, not-checked detectors, skipped files, steps,
    loss and per-tensor timeline. ``data`` is the whole JSON object (docs/JSON.md, ScanReport)."""

    def __init__(self, data, text, exit_code, make_report):
        super().__init__(data, text, exit_code, make_report)
        self.source: str = data["source"]
        self.layout: Optional[str] = data.get("layout")
        self.steps: List[int] = list(data.get("steps", []))
        self.step_source: Optional[str] = data.get("step_source")

    def _subject(self) -> str:
        return self.source

    @property
    def timeline(self):
        """One row per weight tensor and saved step (tensor, layer, step, norm, gradient_norm,
        gradient_ratio, update_ratio, update_per_save, zero_fraction, non_finite,
        gradient_zero_fraction, gradient_non_finite, dead_units; None where the JSON has null):
        a pandas DataFrame when pandas is installed, else a list of dicts."""
        return table(_timeline_records(self.data.get("timeline", [])), _TIMELINE_COLUMNS)

    @property
    def activations(self):
        """As ``timeline``, for the saved activations (``norm`` is their spread)."""
        return table(_timeline_records(self.data.get("activations", [])), _TIMELINE_COLUMNS)

    @property
    def loss(self):
        """One row per save: step, loss, lr (DataFrame or list of dicts, as ``timeline``)."""
        records = [
            {"step": point["step"], "loss": number(point.get("loss")), "lr": number(point.get("lr"))}
            for point in self.data.get("loss", [])
        ]
        return table(records, ("step", "loss", "lr"))


_TENSOR_COLUMNS = ("name", "layer", "role", "slot", "shape", "dtype", "count", "mean", "std", "min", "max",
                   "l2_norm", "zeros", "nan", "pos_inf", "neg_inf", "dead_units", "error")


class InspectResult(_Reported):
    """``gradscope.inspect``: every tensor of one checkpoint and what one file can show."""

    def __init__(self, data, text, exit_code, make_report):
        super().__init__(data, text, exit_code, make_report)
        self.file: str = data["file"]
        self.layout: Optional[str] = data.get("layout")
        self.step: Optional[int] = data.get("step")
        self.loss_value = number(data.get("loss"))
        self.lr = number(data.get("lr"))

    def _subject(self) -> str:
        return self.file

    @property
    def tensors(self):
        """One row per tensor with its main statistics (DataFrame or list of dicts); the full
        statistics (percentiles, histograms, per-unit norms) are in ``data["tensors"]``."""
        records = []
        for tensor in self.data.get("tensors", []):
            stats = tensor.get("stats") or {}
            record = {key: tensor.get(key) for key in ("name", "layer", "role", "slot", "shape", "dtype")}
            for key in ("count", "mean", "std", "min", "max", "l2_norm", "zeros", "nan", "pos_inf", "neg_inf"):
                record[key] = number(stats.get(key))
            record["dead_units"] = tensor.get("dead_units")
            record["error"] = tensor.get("error")
            records.append(record)
        return table(records, _TENSOR_COLUMNS)


_DRIFT_COLUMNS = ("name", "layer", "role", "shape", "status", "norm_a", "norm_b", "relative_change", "per_step",
                  "max_abs_delta", "cosine_similarity", "changed_fraction", "sign_flips", "non_finite")


class DiffResult(_Result):
    """``gradscope.diff``: what changed between two saves, tensor by tensor."""

    def __init__(self, data, text, exit_code):
        super().__init__(data, text, exit_code)
        self.a: str = data["a"]
        self.b: str = data["b"]
        self.step_a: Optional[int] = data.get("step_a")
        self.step_b: Optional[int] = data.get("step_b")
        self.added: List[str] = list(data.get("added", []))
        self.removed: List[str] = list(data.get("removed", []))
        self.reshaped: List[str] = list(data.get("reshaped", []))

    def _subject(self) -> str:
        return f"{self.a} → {self.b}"

    @property
    def tensors(self):
        """One row per tensor in both saves, largest relative change first (DataFrame or list of dicts)."""
        records = []
        for tensor in self.data.get("tensors", []):
            drift = tensor.get("drift") or {}
            records.append(
                {
                    "name": tensor["name"],
                    "layer": tensor["layer"],
                    "role": tensor["role"],
                    "shape": tensor["shape"],
                    "status": tensor["status"],
                    "norm_a": number(tensor.get("norm_a")),
                    "norm_b": number(tensor.get("norm_b")),
                    "relative_change": number(drift.get("relative_change")),
                    "per_step": number(tensor.get("per_step")),
                    "max_abs_delta": number(drift.get("max_abs_delta")),
                    "cosine_similarity": number(drift.get("cosine_similarity")),
                    "changed_fraction": number(drift.get("changed_fraction")),
                    "sign_flips": drift.get("sign_flips"),
                    "non_finite": drift.get("non_finite"),
                }
            )
        return table(records, _DRIFT_COLUMNS)

    def _repr_html_(self) -> str:
        # No HTML report for two saves: the verdict and findings as a plain table (escaped, no CSS).
        return self._summary_html()
