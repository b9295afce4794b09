"""Where the bundled gradscope binary lies, and whether this machine can run it.

The wheel holds one Linux x86-64 binary (the Swift runtime linked in, libhdf5 and the libraries it
needs beside it in ``gradscope/.libs``), built against the glibc of the build machine: it runs on
Linux x86-64 with that glibc or a newer one, and nowhere else. Anywhere else, ``binary_path()``
raises ``GradscopeError`` with one message saying so, and the ``gradscope`` command prints it.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Optional, Tuple

from ._errors import GradscopeError

try:  # written by Tools/wheel/build.sh into the wheel
    from ._build_info import GLIBC, PLATFORM_TAG
except ImportError:  # a source checkout: no bundled binary
    GLIBC, PLATFORM_TAG = None, None

_HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED = os.path.join(_HERE, "bin", "gradscope")


def _glibc_version() -> Optional[Tuple[int, int]]:
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):
        return None
    if not text or not text.startswith("glibc "):
        return None
    try:
        major, minor = text.split()[1].split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def unsupported_reason(
    system: Optional[str] = None,
    machine: Optional[str] = None,
    glibc: Optional[Tuple[int, int]] = None,
    required: Optional[str] = None,
) -> Optional[str]:
    """Why the bundled binary cannot run here, or None when it can (arguments: for tests)."""
    system = sys.platform if system is None else system
    machine = platform.machine() if machine is None else machine
    required = GLIBC if required is None else required
    wanted = f"Linux x86-64 with glibc {required} or newer" if required else "Linux x86-64 with glibc"
    if not system.startswith("linux") or machine.lower() not in ("x86_64", "amd64"):
        return (
            f"the gradscope wheel runs on {wanted} only; this is {system} {machine} "
            "(build gradscope from source with Swift 6: see the README)"
        )
    if glibc is None:
        glibc = _glibc_version()
    if glibc is None:
        return f"the gradscope wheel runs on {wanted} only; this Linux has no glibc (musl?)"
    if required:
        need = tuple(int(part) for part in required.split(".")[:2])
        if glibc < need:
            return (
                f"the gradscope wheel runs on {wanted} only; this machine has glibc "
                f"{glibc[0]}.{glibc[1]} (build gradscope from source with Swift 6: see the README)"
            )
    return None


def binary_path() -> str:
    """The gradscope binary to run: $GRADSCOPE_BINARY when set, else the bundled one."""
    override = os.environ.get("GRADSCOPE_BINARY")
    if override:
        return override
    reason = unsupported_reason()
    if reason is not None:
        raise GradscopeError(reason, exit_code=2)
    if not os.path.isfile(BUNDLED):
        raise GradscopeError(
            f"the gradscope binary is not in this installation ({BUNDLED}): install the wheel "
            "Tools/wheel/build.sh makes, or set GRADSCOPE_BINARY to a gradscope binary",
            exit_code=2,
        )
    return BUNDLED
