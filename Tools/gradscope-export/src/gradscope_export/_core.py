"""Framework-free writer and reader of the gradscope/1 checkpoint layout.

One HDF5 file per saved step::

    /                          attrs: format="gradscope/1", step (int64),
                               loss (float64), lr (float64), framework (str),
                               optimizer (str)   -- all but format and step optional
    /weights/<name>            one dataset per parameter; attr in_optimizer (int8 0/1)
    /gradients/<name>          gradient of /weights/<name> at that step
    /optimizer/<slot>/<name>   optimizer state (exp_avg, exp_avg_sq, momentum, ...)
    /activations/<module>      outputs of a module on a fixed probe batch; attr module

A name containing "/" (Keras "dense_1/kernel") becomes nested groups.
"""

from __future__ import annotations

import os
import secrets
from typing import Any, Iterable, Mapping, Optional, Union

import h5py
import numpy as np

FORMAT = "gradscope/1"
GROUPS = ("weights", "gradients", "optimizer", "activations")

__all__ = ["FORMAT", "save_step", "load_step", "to_numpy", "validate_name"]


# --------------------------------------------------------------------------- #
# conversion
# --------------------------------------------------------------------------- #

def to_numpy(value: Any) -> np.ndarray:
    """Convert an array-like (numpy, torch tensor, JAX/TF/Keras array, scalar)
    into the numpy array that is written.

    Floats narrower than 32 bits (float16, bfloat16, float8) become float32;
    float32 and float64 are kept; integers and bools are kept as they are.
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor
        value = value.detach().cpu()
        if getattr(value, "is_floating_point", lambda: False)() and value.element_size() < 4:
            value = value.float()
        value = value.numpy()
    elif not isinstance(value, np.ndarray) and hasattr(value, "numpy") and callable(value.numpy):
        try:  # TensorFlow EagerTensor / tf.Variable
            value = value.numpy()
        except Exception:  # pragma: no cover - fall back to __array__
            pass
    arr = np.asarray(value)
    dt = arr.dtype
    name = dt.name
    if dt.kind == "f" and dt.itemsize < 4:
        arr = arr.astype(np.float32)
    elif dt.kind == "V" and (name == "bfloat16" or name.startswith(("float8_", "float6_", "float4_"))):
        # ml_dtypes extension types (kind "V"): widen to float32
        arr = arr.astype(np.float32)
    elif dt.kind == "f" and dt.itemsize > 8:
        arr = arr.astype(np.float64)  # long double -> float64
    elif dt.kind not in "fiub":
        raise TypeError(f"unsupported dtype {dt} (only numeric and bool tensors are written)")
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # (np.ascontiguousarray would turn 0-d into 1-d)
    return arr


def validate_name(name: str, what: str = "name") -> str:
    """Check a tensor name. "/" separates nested groups; empty, "." and ".."
    components and leading/trailing "/" are refused."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} is empty")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"invalid {what} {name!r}: empty, '.' or '..' path component")
    if "\x00" in name:
        raise ValueError(f"invalid {what} {name!r}: NUL character")
    return name


def _names_of(in_optimizer: Union[Mapping[str, Any], Iterable[str], None],
              weight_names: Iterable[str]) -> dict:
    if in_optimizer is None:
        return {}
    if isinstance(in_optimizer, Mapping):
        return {k: bool(v) for k, v in in_optimizer.items()}
    members = set(in_optimizer)
    return {k: (k in members) for k in weight_names}


# --------------------------------------------------------------------------- #
# writing
# --------------------------------------------------------------------------- #

def _open_tmp(directory: str, final_name: str) -> str:
    """Create an empty, exclusive temporary file next to the final one.
    Its mode follows the umask like any ordinary new file."""
    for _ in range(100):
        tmp = os.path.join(directory, f".{final_name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise OSError(f"could not create a temporary file in {directory}")  # pragma: no cover


def _h5_file(path: str) -> h5py.File:
    # Keep the file readable by libhdf5 1.10 (Debian 12): cap the format version.
    try:
        return h5py.File(path, "w", libver=("earliest", "v110"))
    except (ValueError, TypeError):  # pragma: no cover - very old h5py
        return h5py.File(path, "w")


def _write(group: h5py.Group, name: str, value: Any, compression: Optional[str]) -> h5py.Dataset:
    arr = to_numpy(value)
    kwargs = {}
    if compression is not None and arr.ndim > 0 and arr.size > 0:
        kwargs = dict(chunks=True, compression=compression)
        if compression == "gzip":
            kwargs["compression_opts"] = 4
    return group.create_dataset(name, data=arr, **kwargs)


def save_step(
    path: Union[str, os.PathLike],
    step: int,
    weights: Mapping[str, Any],
    gradients: Optional[Mapping[str, Any]] = None,
    optimizer: Optional[Mapping[str, Mapping[str, Any]]] = None,
    activations: Optional[Mapping[str, Any]] = None,
    loss: Optional[float] = None,
    lr: Optional[float] = None,
    framework: Optional[str] = "numpy",
    optimizer_name: Optional[str] = None,
    in_optimizer: Union[Mapping[str, Any], Iterable[str], None] = None,
    compression: Optional[str] = None,
    activation_modules: Optional[Mapping[str, str]] = None,
    attrs: Optional[Mapping[str, Any]] = None,
    fsync: bool = True,
) -> str:
    """Write one saved step in the gradscope/1 layout, atomically.

    The file is written to a hidden temporary file (``.<name>.<random>.tmp``)
    in the same directory, flushed, closed, fsync-ed, then renamed over
    ``path`` with ``os.replace``. A reader never sees a half-written file; on
    any error the temporary file is removed and an existing ``path`` is left
    untouched.

    Parameters
    ----------
    path : final file name (its directory is created if missing).
    step : the training step (root attr ``step``, int64).
    weights : name -> array, one entry per parameter.
    gradients : name -> array; every name must be a key of ``weights``.
        ``None`` values are skipped (parameter without a gradient).
    optimizer : slot -> {name -> array}, e.g. {"exp_avg": {...}}; every
        name must be a key of ``weights``.
    activations : module alias -> array (outputs on a fixed probe batch).
    activation_modules : alias -> module name for the ``module`` attribute
        (defaults to the alias itself).
    loss, lr : float root attributes (float64), omitted when None.
    framework : "pytorch", "keras" or "numpy" (omitted when None).
    optimizer_name : optimizer class name (root attr ``optimizer``).
    in_optimizer : dict name -> bool, or a set of names (then every weight
        not in the set gets 0). Stored as int8 attr ``in_optimizer``.
    compression : None (contiguous, uncompressed) or "gzip" (chunked + gzip).
    attrs : extra root attributes (str, int, float or arrays).
    fsync : fsync the file before the rename (durability across a crash).

    Returns the final path as a str.
    """
    path = os.fspath(path)
    if compression not in (None, "gzip"):
        raise ValueError(f"compression must be None or 'gzip', got {compression!r}")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"step must be an int, got {type(step).__name__}")
    weights = dict(weights)
    for n in weights:
        validate_name(n, "weight name")
    gradients = {k: v for k, v in (gradients or {}).items() if v is not None}
    for n in gradients:
        validate_name(n, "gradient name")
        if n not in weights:
            raise ValueError(f"gradient {n!r} has no matching weight")
    optimizer = {s: {k: v for k, v in d.items() if v is not None} for s, d in (optimizer or {}).items()}
    for slot, per_name in optimizer.items():
        validate_name(slot, "optimizer slot")
        if "/" in slot:
            raise ValueError(f"optimizer slot {slot!r} must not contain '/'")
        for n in per_name:
            validate_name(n, "optimizer state name")
            if n not in weights:
                raise ValueError(f"optimizer state {slot}/{n!r} has no matching weight")
    activations = {k: v for k, v in (activations or {}).items() if v is not None}
    for n in activations:
        validate_name(n, "activation name")
    reserved = {"format", "step", "loss", "lr", "framework", "optimizer"} & set(attrs or {})
    if reserved:
        raise ValueError(f"attrs may not set {sorted(reserved)}: use the parameters of save_step")
    flags = _names_of(in_optimizer, weights.keys())
    for n in flags:
        if n not in weights:
            raise ValueError(f"in_optimizer names {n!r}, which is not a weight")

    directory, final_name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = _open_tmp(directory, final_name)
    try:
        with _h5_file(tmp) as f:
            f.attrs["format"] = FORMAT
            f.attrs["step"] = np.int64(step)
            if loss is not None:
                f.attrs["loss"] = np.float64(float(loss))
            if lr is not None:
                f.attrs["lr"] = np.float64(float(lr))
            if framework is not None:
                f.attrs["framework"] = str(framework)
            if optimizer_name is not None:
                f.attrs["optimizer"] = str(optimizer_name)
            for k, v in (attrs or {}).items():
                f.attrs[k] = v

            g = f.create_group("weights")
            for n, v in weights.items():
                ds = _write(g, n, v, compression)
                if n in flags:
                    ds.attrs["in_optimizer"] = np.int8(1 if flags[n] else 0)
            if gradients:
                g = f.create_group("gradients")
                for n, v in gradients.items():
                    _write(g, n, v, compression)
            if any(optimizer.values()):
                g = f.create_group("optimizer")
                for slot, per_name in optimizer.items():
                    if not per_name:
                        continue
                    sg = g.create_group(slot)
                    for n, v in per_name.items():
                        _write(sg, n, v, compression)
            if activations:
                g = f.create_group("activations")
                for n, v in activations.items():
                    ds = _write(g, n, v, compression)
                    ds.attrs["module"] = str((activation_modules or {}).get(n, n))
            f.flush()
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


# --------------------------------------------------------------------------- #
# reading (for tests, checks and scripts)
# --------------------------------------------------------------------------- #

def _read_tree(group: h5py.Group, prefix: str = "") -> dict:
    out = {}
    for key in group:
        obj = group[key]
        name = f"{prefix}{key}"
        if isinstance(obj, h5py.Group):
            out.update(_read_tree(obj, name + "/"))
        else:
            out[name] = obj[()]
    return out


def _attr(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.generic):
        return v.item()
    return v


def load_step(path: Union[str, os.PathLike]) -> dict:
    """Read a gradscope/1 file back into plain dicts::

        {"attrs": {...}, "weights": {name: array}, "gradients": {...},
         "optimizer": {slot: {name: array}}, "activations": {...},
         "in_optimizer": {name: bool}}
    """
    with h5py.File(os.fspath(path), "r") as f:
        out = {"attrs": {k: _attr(v) for k, v in f.attrs.items()}}
        for grp in ("weights", "gradients", "activations"):
            out[grp] = _read_tree(f[grp], "") if grp in f else {}
        out["optimizer"] = {}
        if "optimizer" in f:
            for slot in f["optimizer"]:
                out["optimizer"][slot] = _read_tree(f["optimizer"][slot], "")
        flags = {}
        if "weights" in f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and "in_optimizer" in obj.attrs:
                    flags[name] = bool(obj.attrs["in_optimizer"])
            f["weights"].visititems(visit)
        out["in_optimizer"] = flags
    return out
