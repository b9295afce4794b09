"""Keras 3 callback writing the gradscope/1 layout.

    model.fit(x, y, callbacks=[GradscopeCallback("runs/a", every=50, probe=x[:64])])

The step is the optimizer's iteration count: a file for step ``s`` is written
after the s-th update (``on_train_batch_end``), and, with ``save_initial``,
one for the starting state when training begins (step 0 for a fresh model).

What each file holds:

- ``/weights/<name>``: every model variable (trainable or not), named by its
  Keras path with the model's own name stripped (``dense_1/kernel``).
  ``in_optimizer`` = the variable is trainable.
- ``/optimizer/<slot>/<name>``: the optimizer's per-variable state, matched
  to its variable through the name Keras gives it
  (``<variable path with "/" -> "_">_<slot>``) and checked by shape: Adam
  ``momentum`` and ``velocity``, SGD ``momentum``, RMSprop ``velocity``...
- root ``loss``: ``logs["loss"]`` as Keras reports it at that batch, which
  in Keras 3 is the running mean over the current epoch, not the loss of
  the last batch alone. Root ``lr``: the optimizer's current learning rate
  (schedules evaluated).
- ``/activations/<alias>``: outputs on the fixed probe batch
  (``training=False``): the model output as ``output``, plus the layers
  named in ``probe_layers`` (functional and Sequential models only).
- ``/gradients``: Keras callbacks never see the training gradients. With
  ``probe_gradients=True`` (and ``probe_targets``), the gradient of the
  compiled loss on the probe batch at the saved weights is computed and
  written instead (JAX and torch backends), and the root attribute
  ``gradient_source`` says ``"probe"``. Otherwise no gradients are written.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

import keras

from ._core import save_step

__all__ = ["GradscopeCallback", "variable_names", "optimizer_slots"]


def _np(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _path(v) -> str:
    return getattr(v, "path", None) or v.name


def variable_names(model) -> Dict[int, str]:
    """id(variable) -> export name: the Keras path without the model's own
    name in front (``sequential/dense/kernel`` -> ``dense/kernel``). Falls
    back to full paths when stripping would make two names equal."""
    variables = list(model.weights)
    full = [_path(v) for v in variables]
    prefix = f"{model.name}/"
    stripped = [p[len(prefix):] if p.startswith(prefix) and len(p) > len(prefix) else p for p in full]
    names = stripped if len(set(stripped)) == len(stripped) else full
    if len(set(names)) != len(names):  # still ambiguous: number the repeats
        seen: Dict[str, int] = {}
        out = []
        for n in names:
            k = seen.get(n, 0)
            seen[n] = k + 1
            out.append(n if k == 0 else f"{n}_{k}")
        names = out
    return {id(v): n for v, n in zip(variables, names)}


def _unwrap(optimizer):
    # LossScaleOptimizer keeps the real one inside
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def optimizer_slots(model, optimizer=None) -> Dict[str, Dict[str, Any]]:
    """slot -> {export name -> optimizer variable} for a built Keras 3 optimizer.

    Keras names a slot variable ``<reference path with "/" -> "_">_<slot>``
    (``adam/sequential_dense_kernel_momentum``). Each optimizer variable is
    matched to the trainable variable with the longest such prefix whose
    shape equals its own; iteration, learning rate and other scalars match
    nothing and are left out.
    """
    optimizer = _unwrap(optimizer if optimizer is not None else model.optimizer)
    names = variable_names(model)
    refs = []
    for v in model.trainable_variables:
        if id(v) in names:
            refs.append((_path(v).replace("/", "_") + "_", tuple(v.shape), names[id(v)]))
    refs.sort(key=lambda r: len(r[0]), reverse=True)
    out: Dict[str, Dict[str, Any]] = {}
    for ov in getattr(optimizer, "variables", []):
        oname = ov.name.split("/")[-1]
        for prefix, shape, export_name in refs:
            if oname.startswith(prefix) and tuple(ov.shape) == shape:
                slot = oname[len(prefix):]
                if slot:
                    out.setdefault(slot, {})[export_name] = ov
                break
    return out


class GradscopeCallback(keras.callbacks.Callback):
    """Write a gradscope/1 file every ``every`` optimizer steps during ``fit``.

    Parameters
    ----------
    out_dir : run directory (created if missing).
    every : save when the iteration count is a multiple of ``every``.
    probe : fixed input batch for activations (and probe gradients).
    probe_targets : targets of the probe batch (needed for probe gradients).
    probe_layers : names of layers whose outputs are written too.
    probe_gradients : compute gradients on the probe batch (see module doc).
    filename : pattern formatted with ``step``.
    compression : None or "gzip".
    save_initial : also save the state at the start of training.
    save_optimizer : write the optimizer slots.
    """

    def __init__(
        self,
        out_dir: Union[str, os.PathLike],
        every: int = 1,
        probe: Any = None,
        probe_targets: Any = None,
        probe_layers: Optional[Sequence[str]] = None,
        probe_gradients: bool = False,
        filename: str = "step_{step:06d}.h5",
        compression: Optional[str] = None,
        save_initial: bool = True,
        save_optimizer: bool = True,
    ):
        super().__init__()
        if every < 1:
            raise ValueError("every must be >= 1")
        if probe_gradients and (probe is None or probe_targets is None):
            raise ValueError("probe_gradients needs probe and probe_targets")
        self.out_dir = os.fspath(out_dir)
        self.every = int(every)
        self.probe = probe
        self.probe_targets = probe_targets
        self.probe_layers = list(probe_layers or [])
        self.probe_gradients = probe_gradients
        self.filename = filename
        self.compression = compression
        self.save_initial = save_initial
        self.save_optimizer = save_optimizer
        self.saved: List[str] = []
        self._iteration = 0
        self._extractor = None

    # ------------------------------------------------------------------ callbacks
    def on_train_begin(self, logs=None):
        model = self.model  # (with JAX, this access syncs the state)
        opt = getattr(model, "optimizer", None)
        self._iteration = int(_np(opt.iterations)) if opt is not None else 0
        if self.save_initial and self._iteration % self.every == 0:
            self.save(self._iteration, loss=None)

    def on_train_batch_end(self, batch, logs=None):
        self._iteration += 1
        if self._iteration % self.every == 0:
            loss = (logs or {}).get("loss")
            self.save(self._iteration, loss=loss)

    # ------------------------------------------------------------------ pieces
    def _activations(self, model) -> Dict[str, np.ndarray]:
        if self.probe is None:
            return {}
        acts: Dict[str, np.ndarray] = {}
        out = model(self.probe, training=False)
        if isinstance(out, (list, tuple)):
            for i, o in enumerate(out):
                acts[f"output_{i}"] = _np(o)
        elif isinstance(out, dict):
            for k, o in out.items():
                acts[f"output_{k}"] = _np(o)
        else:
            acts["output"] = _np(out)
        if self.probe_layers:
            if self._extractor is None:
                outs = [model.get_layer(n).output for n in self.probe_layers]
                ins = model.inputs[0] if len(model.inputs) == 1 else model.inputs
                self._extractor = keras.Model(inputs=ins, outputs=outs)
            res = self._extractor(self.probe, training=False)
            if not isinstance(res, (list, tuple)):
                res = [res]
            for n, r in zip(self.probe_layers, res):
                acts[n] = _np(r)
        return acts

    def _probe_grads(self, model) -> Dict[int, np.ndarray]:
        backend = keras.backend.backend()
        x, y = self.probe, self.probe_targets
        tvars = list(model.trainable_variables)
        if backend == "jax":
            import jax

            ntv = [v.value for v in model.non_trainable_variables]

            def loss_fn(tv):
                y_pred, _ = model.stateless_call(tv, ntv, x, training=False)
                return model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)

            grads = jax.grad(loss_fn)([v.value for v in tvars])
        elif backend == "torch":
            import torch

            with torch.enable_grad():
                y_pred = model(x, training=False)
                loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
                grads = torch.autograd.grad(loss, [v.value for v in tvars], allow_unused=True)
            grads = [g if g is not None else torch.zeros_like(v.value) for g, v in zip(grads, tvars)]
        else:
            raise NotImplementedError(f"probe gradients are not implemented for the {backend} backend")
        return {id(v): _np(g) for v, g in zip(tvars, grads)}

    # ------------------------------------------------------------------ save
    def path_for(self, step: int) -> str:
        return os.path.join(self.out_dir, self.filename.format(step=step))

    def save(self, step: int, loss: Any = None) -> str:
        model = self.model
        names = variable_names(model)
        trainable = {id(v) for v in model.trainable_variables}
        weights, flags = {}, {}
        for v in model.weights:
            n = names[id(v)]
            weights[n] = _np(v.value)
            flags[n] = id(v) in trainable
        opt = getattr(model, "optimizer", None)
        slots = {}
        lr = None
        opt_name = None
        if opt is not None:
            inner = _unwrap(opt)
            opt_name = type(inner).__name__
            try:
                lr = float(_np(inner.learning_rate))
            except Exception:
                lr = None
            if self.save_optimizer and getattr(inner, "built", True):
                slots = {s: {n: _np(ov.value) for n, ov in d.items()} for s, d in optimizer_slots(model, inner).items()}
        grads = {}
        attrs = {}
        if self.probe_gradients:
            by_id = self._probe_grads(model)
            grads = {names[i]: g for i, g in by_id.items() if i in names}
            attrs["gradient_source"] = "probe"
        path = save_step(
            self.path_for(step),
            int(step),
            weights,
            gradients=grads,
            optimizer=slots,
            activations=self._activations(model),
            loss=None if loss is None else float(loss),
            lr=lr,
            framework="keras",
            optimizer_name=opt_name,
            in_optimizer=flags,
            compression=self.compression,
            attrs=attrs,
        )
        self.saved.append(path)
        return path
