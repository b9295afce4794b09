"""The ``gradscope`` console script: runs the bundled binary with the same arguments.

The process is replaced by the binary (``os.execv``), so signals, exit codes, stdin, stdout and
stderr are the binary's own. On a machine the wheel does not support, prints one line and exits 2.
"""

from __future__ import annotations

import os
import sys

from ._binary import binary_path
from ._errors import GradscopeError


def main() -> None:
    try:
        binary = binary_path()
    except GradscopeError as error:
        sys.stderr.write(f"gradscope: {error.message}\n")
        sys.exit(error.exit_code)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(binary, [binary] + sys.argv[1:])
    except OSError as error:
        sys.stderr.write(f"gradscope: cannot run {binary}: {error.strerror}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
