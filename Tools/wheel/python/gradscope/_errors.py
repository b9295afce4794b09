"""The one exception the Python API raises."""

from __future__ import annotations

from typing import Optional, Sequence


class GradscopeError(Exception):
    """gradscope could not do what was asked.

    ``message`` is the command's one-line message (what it printed on stderr: the file and the
    reason), ``exit_code`` its exit code (2 for a usage error or unreadable input), ``command``
    the command line that was run (None when nothing could be run). Findings, even at or above
    ``fail_on``, are never an error: they are in the result.
    """

    def __init__(self, message: str, exit_code: int = 2, command: Optional[Sequence[str]] = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.command = list(command) if command is not None else None
