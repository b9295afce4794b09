"""gradscope from Python: the gradscope binary in this wheel, and the `gradscope` command that runs it.

The wheel runs on Linux x86-64 with the glibc it was built against, or a newer one.
"""

from ._binary import binary_path
from ._errors import GradscopeError

try:
    from ._build_info import VERSION as __version__
except ImportError:
    __version__ = "0+source"

__all__ = ["binary_path", "GradscopeError", "__version__"]
