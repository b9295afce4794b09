"""gradscope from Python: diagnose training checkpoints with the gradscope binary in this wheel.

    import gradscope
    run = gradscope.scan("runs/a")          # a folder of checkpoints
    print(run.verdict); run.findings; run.timeline   # a DataFrame when pandas is installed
    run                                     # in Jupyter: the HTML report, inline

``scan``, ``inspect`` and ``diff`` run the bundled binary with ``--format json`` (docs/JSON.md),
so the numbers are the command's own. Any failure (an unreadable run, a bad option) raises
``GradscopeError`` with the command's one-line message and exit code; findings at or above
``fail_on`` are not an error (``result.failed``).

The wheel runs on Linux x86-64 with the glibc it was built against, or a newer one.
"""

from ._api import diff, inspect, report_html, scan, version
from ._binary import binary_path
from ._errors import GradscopeError
from ._results import DiffResult, Finding, InspectResult, NotChecked, ScanResult, SkippedItem

try:
    from ._build_info import VERSION as __version__
except ImportError:
    __version__ = "0+source"

__all__ = [
    "scan",
    "inspect",
    "diff",
    "report_html",
    "version",
    "binary_path",
    "GradscopeError",
    "ScanResult",
    "InspectResult",
    "DiffResult",
    "Finding",
    "NotChecked",
    "SkippedItem",
    "__version__",
]
