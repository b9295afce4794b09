"""PyTorch exporter for the gradscope/1 layout.

Contract: call ``exporter.step(step, loss)`` once per training step, AFTER
``optimizer.step()`` and BEFORE the next ``optimizer.zero_grad()``::

    for step in range(1, n_steps + 1):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        exporter.step(step, loss)        # saves when step % every == 0

A saved step ``s`` then holds:

- ``/weights``: the parameters after the s-th update;
- ``/gradients``: the ``.grad`` of each parameter as it is at that moment,
  i.e. the gradients the s-th update just applied (for a parameter that is
  not in the optimizer, whatever ``.grad`` has accumulated);
- ``/optimizer/<slot>``: the optimizer state after the update; only
  per-parameter tensors shaped like the parameter are written (exp_avg,
  exp_avg_sq, momentum_buffer, ...), scalar counters such as Adam's
  ``step`` are not;
- root ``loss``: the loss passed in (the loss of the batch of step s,
  computed before the update); root ``lr``: the first param group's lr
  after ``optimizer.step()`` (pass ``lr=`` to override, e.g. the lr the
  scheduler used for this step);
- ``/activations/<alias>``: outputs of the chosen modules on the fixed
  probe batch, computed with the post-update weights, in eval mode under
  ``torch.no_grad()`` (train mode is restored afterwards).

Call ``exporter.step(0, loss)`` before the first update to save the initial
state: weights only (no gradient or optimizer state exists yet).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

import torch

from ._core import save_step

__all__ = ["TorchExporter"]


def _as_float(x: Any) -> Optional[float]:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return float(x.detach().float().cpu().item())
    return float(x)


def _first_tensor(out: Any) -> Optional[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            t = _first_tensor(o)
            if t is not None:
                return t
    if isinstance(out, Mapping):
        for o in out.values():
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


class TorchExporter:
    """Save model weights, gradients, optimizer state and probe activations
    every ``every`` steps as ``out_dir/filename.format(step=step)``.

    Parameters
    ----------
    model : torch.nn.Module.
    optimizer : torch.optim.Optimizer or None. Decides ``in_optimizer``
        (is the parameter in any param group) and the optimizer state saved.
    out_dir : directory of the run (created if missing).
    every : save when ``step % every == 0``.
    probe : a fixed input batch: a tensor (``model(probe)``), a tuple/list
        (``model(*probe)``) or a dict (``model(**probe)``). Optional.
    probe_modules : which outputs to record on the probe batch: a dict
        alias -> module (or alias -> qualified module name), or a list of
        qualified module names (alias = name). ``""`` or the model itself
        means the model's output. Default when a probe is given:
        ``{"output": model}``.
    filename : file name pattern, formatted with ``step``.
    compression : None or "gzip".
    save_gradients, save_optimizer : turn those groups off.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: Optional[torch.optim.Optimizer],
        out_dir: Union[str, os.PathLike],
        every: int = 1,
        probe: Any = None,
        probe_modules: Union[Mapping[str, Any], Iterable[str], None] = None,
        filename: str = "step_{step:06d}.h5",
        compression: Optional[str] = None,
        save_gradients: bool = True,
        save_optimizer: bool = True,
    ):
        if every < 1:
            raise ValueError("every must be >= 1")
        self.model = model
        self.optimizer = optimizer
        self.out_dir = os.fspath(out_dir)
        self.every = int(every)
        self.probe = probe
        self.filename = filename
        self.compression = compression
        self.save_gradients = save_gradients
        self.save_optimizer = save_optimizer
        self.saved: List[str] = []

        names = {id(m): n for n, m in model.named_modules()}
        self._probe_modules: Dict[str, torch.nn.Module] = {}
        self._module_names: Dict[str, str] = {}
        if probe is not None and probe_modules is None:
            probe_modules = {"output": model}
        if probe_modules is not None:
            items = probe_modules.items() if isinstance(probe_modules, Mapping) else ((n, n) for n in probe_modules)
            for alias, mod in items:
                if isinstance(mod, str):
                    mod = model.get_submodule(mod) if mod else model
                if not isinstance(mod, torch.nn.Module):
                    raise TypeError(f"probe module {alias!r} is not a torch.nn.Module")
                if id(mod) not in names:
                    raise ValueError(f"probe module {alias!r} is not part of the model")
                self._probe_modules[alias] = mod
                self._module_names[alias] = names[id(mod)] or type(model).__name__

    # ------------------------------------------------------------------ #
    def path_for(self, step: int) -> str:
        return os.path.join(self.out_dir, self.filename.format(step=step))

    def step(self, step: int, loss: Any = None, lr: Optional[float] = None, force: bool = False) -> Optional[str]:
        """Save if ``step % every == 0`` (or ``force``). Returns the path or None."""
        if not force and step % self.every != 0:
            return None
        return self.save(step, loss=loss, lr=lr)

    # ------------------------------------------------------------------ #
    def _param_names(self) -> Dict[int, str]:
        return {id(p): n for n, p in self.model.named_parameters()}

    def _optimizer_params(self) -> set:
        if self.optimizer is None:
            return set()
        return {id(p) for g in self.optimizer.param_groups for p in g["params"]}

    def _activations(self) -> Dict[str, torch.Tensor]:
        if self.probe is None or not self._probe_modules:
            return {}
        captured: Dict[str, torch.Tensor] = {}
        handles = []
        for alias, mod in self._probe_modules.items():
            if mod is self.model:
                continue

            def hook(_m, _inp, out, alias=alias):
                t = _first_tensor(out)
                if t is not None:
                    captured[alias] = t.detach().cpu().clone()

            handles.append(mod.register_forward_hook(hook))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                p = self.probe
                if isinstance(p, Mapping):
                    out = self.model(**p)
                elif isinstance(p, (tuple, list)):
                    out = self.model(*p)
                else:
                    out = self.model(p)
        finally:
            for h in handles:
                h.remove()
            self.model.train(was_training)
        for alias, mod in self._probe_modules.items():
            if mod is self.model:
                t = _first_tensor(out)
                if t is not None:
                    captured[alias] = t.detach().cpu().clone()
        return {a: captured[a] for a in self._probe_modules if a in captured}

    def collect(self) -> dict:
        """Gather everything a save writes (without writing): the keyword
        arguments for ``save_step`` except path/step/loss/lr."""
        names = self._param_names()
        in_opt = self._optimizer_params()
        weights, grads, flags = {}, {}, {}
        for n, p in self.model.named_parameters():
            weights[n] = p.detach()
            flags[n] = id(p) in in_opt
            if self.save_gradients and p.grad is not None:
                grads[n] = p.grad.detach()
        opt: Dict[str, Dict[str, torch.Tensor]] = {}
        if self.save_optimizer and self.optimizer is not None:
            for p, state in self.optimizer.state.items():
                n = names.get(id(p))
                if n is None or not isinstance(state, Mapping):
                    continue
                for slot, v in state.items():
                    # per-parameter tensors only; Adam's "step" counter is not a slot
                    if isinstance(v, torch.Tensor) and v.shape == p.shape and slot != "step":
                        opt.setdefault(str(slot), {})[n] = v.detach()
        acts = self._activations()
        return dict(
            weights=weights,
            gradients=grads,
            optimizer=opt,
            activations=acts,
            activation_modules=dict(self._module_names),
            in_optimizer=flags if self.optimizer is not None else None,
            optimizer_name=type(self.optimizer).__name__ if self.optimizer is not None else None,
        )

    def current_lr(self) -> Optional[float]:
        if self.optimizer is None or not self.optimizer.param_groups:
            return None
        return _as_float(self.optimizer.param_groups[0].get("lr"))

    def save(self, step: int, loss: Any = None, lr: Optional[float] = None) -> str:
        """Save now, whatever ``every`` says."""
        parts = self.collect()
        path = save_step(
            self.path_for(step),
            int(step),
            loss=_as_float(loss),
            lr=_as_float(lr) if lr is not None else self.current_lr(),
            framework="pytorch",
            compression=self.compression,
            **parts,
        )
        self.saved.append(path)
        return path
