"""gradscope_export: write training checkpoints in the gradscope/1 HDF5 layout.

- ``save_step(...)``: framework-free, atomic writer of one saved step.
- ``load_step(path)``: read such a file back into dicts.
- ``gradscope_export.torch.TorchExporter``: PyTorch (import needs torch).
- ``gradscope_export.keras.GradscopeCallback``: Keras 3 (import needs keras).
- ``watch(run_dir, fail_on="error")``: start ``gradscope watch`` beside the training loop;
  the returned ``Watcher`` has ``.failed``, ``.findings`` and ``.stop()``.
"""

from ._core import FORMAT, load_step, save_step, to_numpy, validate_name
from ._watch import Watcher, WatchFinding, watch

__version__ = "0.1.0"
__all__ = ["FORMAT", "save_step", "load_step", "to_numpy", "validate_name", "watch", "Watcher", "WatchFinding", "__version__"]
