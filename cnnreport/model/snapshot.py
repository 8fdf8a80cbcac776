"""A model's state copied once before cnnreport runs it, and put back bit for bit after.

A model's own forward may write to it: a quantisation-aware model's observers update their
min/max buffers, a BatchNorm in a custom eval path updates running statistics, a forward
scales a weight in place, reassigns a buffer (``self.buf = self.buf * 2``), registers a new
one, or counts its calls in an attribute. :class:`ModelSnapshot` records, for every module:

* the values of every tensor it holds directly (parameters, buffers persistent or not, plain
  tensor attributes) and of each parameter's ``.grad``: one copy each, on the tensor's own
  device, so restoring is exact whatever wrote them (``t.data.mul_()`` bypasses autograd's
  version counter, so a counter alone would miss it);
* each tensor's storage and geometry (``p.data = other`` keeps the object, changes those);
* which objects its attributes and its dicts, lists and sets (``_parameters``, ``_buffers``,
  ``_modules``, hooks, the user's own) hold, by identity: assignments, additions and deletions.

:meth:`ModelSnapshot.restore` compares, bit for bit, and writes back only what differs, with
``.data.copy_`` under ``no_grad`` (no version bump for a tensor nothing else changed), so a
model no forward wrote to is not written at all (a read-only memory-mapped checkpoint stays
unpaged). Cost: one copy of the model's tensors (ResNet-50: 98 MB, see
``benchmarks/bench_snapshot.py``), a copy at the start and a comparison per restore.

Not covered: tensors inside the model's lists or dicts (only which tensors they hold is
restored), objects' own state beyond a module's attributes, and lazy modules, whose first
forward defines their parameters and attributes (they stay initialised).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

#: Containers whose contents are restored by identity (exact types: not torch's own wrappers).
_CONTAINERS = (dict, OrderedDict, list, set)

#: An int dtype of each element size, to compare floating values bit for bit: ``torch.equal``
#: takes NaN as unequal to itself and ``-0.0`` as equal to ``0.0``.
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _has_values(t: torch.Tensor) -> bool:
    """Whether the tensor holds values we can copy and compare (dense, materialised)."""
    if isinstance(t, nn.parameter.UninitializedTensorMixin):
        return False
    return t.layout == torch.strided and not t.is_meta and not t.is_quantized and not t.is_nested


def _bits(t: torch.Tensor) -> torch.Tensor:
    if t.is_complex():
        t = torch.view_as_real(t.resolve_conj())
    if t.is_floating_point() and t.element_size() in _BITS:
        return t.view(_BITS[t.element_size()])
    return t


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes and bit-identical values (NaN payloads and signed zeros included)."""
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(_bits(a), _bits(b))


#: Up to this many elements a CPU tensor is compared through numpy (its boolean temporary
#: stays small); larger ones through torch.
_CHUNK = 1 << 16


def _numpy_bits(t: torch.Tensor) -> np.ndarray | None:
    """A numpy view of a CPU tensor's bits, or None where numpy cannot hold them: numpy
    compares and copies a model's hundreds of small tensors several times faster than torch,
    whose per-call overhead is most of the work for them."""
    if t.device.type != "cpu" or t.is_conj() or t.is_neg():
        return None
    try:
        return _bits(t.detach()).numpy()
    except (TypeError, RuntimeError):  # a dtype numpy lacks
        return None


def _geometry(t: torch.Tensor) -> tuple[Any, ...]:
    return (t.data_ptr(), t.dtype, t.device, tuple(t.shape), t.stride(), t.storage_offset())


def _version(t: torch.Tensor) -> int | None:
    try:
        return int(t._version)
    except RuntimeError:  # inference tensors have no version counter
        return None


@dataclass
class _SavedTensor:
    tensor: torch.Tensor  # the live object, whose identity the module keeps
    alias: torch.Tensor  # ``detach()``: its original storage and geometry, kept alive
    geometry: tuple[Any, ...]
    version: int | None
    copy: torch.Tensor  # its values as they were
    live_bits: np.ndarray | None = None  # numpy views of the alias's and the copy's bits (CPU)
    copy_bits: np.ndarray | None = None

    def unchanged(self) -> bool:
        # numpy for the many small tensors (torch's per-call overhead is several times the
        # work), torch for the large ones (its comparison runs on every core).
        if self.live_bits is not None and self.copy_bits is not None and self.live_bits.size <= _CHUNK:
            return bool(np.array_equal(self.live_bits, self.copy_bits))
        return same_bits(self.tensor, self.copy)


@dataclass
class _SavedModule:
    module: nn.Module
    attributes: dict[str, Any] | None  # None: a lazy or TorchScript module, left as it is
    # (attribute name, the container, a copy of its contents, whether a pass sets it itself)
    contents: list[tuple[str, Any, list[Any], bool]]


def _set_by_the_pass(name: str) -> bool:
    """Attributes a pass itself changes and puts back itself: train flags and hooks."""
    return name == "training" or "hooks" in name


def _is_lazy(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params()


class ModelSnapshot:
    """Everything a forward pass may write in ``model``, recorded now; see the module docs."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules: list[_SavedModule] = []
        self.tensors: list[_SavedTensor] = []
        self.grads: list[tuple[nn.Parameter, torch.Tensor | None]] = []
        seen: set[int] = set()
        with torch.no_grad():
            for module in model.modules():
                self.modules.append(self._save_module(module))
                for tensor in self._held_tensors(module):
                    if id(tensor) not in seen:
                        seen.add(id(tensor))
                        self._save_tensor(tensor)
            for p in model.parameters():
                self.grads.append((p, p.grad))
                if p.grad is not None and id(p.grad) not in seen:
                    seen.add(id(p.grad))
                    self._save_tensor(p.grad)
        #: True while every tensor of the model was copied: the fingerprint can come from here.
        self.complete = not any(_is_lazy(m) for m in model.modules())
        #: Whether model code may have run since the last full restore (set by who runs it).
        self.dirty = False
        self._frozen: dict[str, Any] | None = None

    # -- taking ------------------------------------------------------------------------------
    @staticmethod
    def _held_tensors(module: nn.Module) -> list[torch.Tensor]:
        held = [t for _, t in module.named_parameters(recurse=False)]
        held += [t for _, t in module.named_buffers(recurse=False)]
        if not isinstance(module, torch.jit.ScriptModule):
            held += [v for v in vars(module).values() if isinstance(v, torch.Tensor)]
        return held

    @staticmethod
    def _save_module(module: nn.Module) -> _SavedModule:
        if _is_lazy(module) or isinstance(module, torch.jit.ScriptModule):
            return _SavedModule(module, None, [])
        attributes = dict(vars(module))
        contents = []
        for name, value in attributes.items():
            if type(value) in (dict, OrderedDict):
                contents.append((name, value, list(value.items()), _set_by_the_pass(name)))
            elif type(value) in (list, set):
                contents.append((name, value, list(value), _set_by_the_pass(name)))
        return _SavedModule(module, attributes, contents)

    def _save_tensor(self, tensor: torch.Tensor) -> None:
        if not _has_values(tensor):
            return
        alias = tensor.detach()
        saved = _SavedTensor(tensor, alias, _geometry(tensor), _version(tensor), alias.clone(memory_format=torch.preserve_format))
        saved.live_bits, saved.copy_bits = _numpy_bits(alias), _numpy_bits(saved.copy)
        self.tensors.append(saved)

    @property
    def nbytes(self) -> int:
        """Bytes the copies hold."""
        return sum(s.copy.numel() * s.copy.element_size() for s in self.tensors)

    def frozen_state_dict(self) -> dict[str, Any] | None:
        """``model.state_dict()`` as it is now, its tensors this snapshot's copies (so it can be
        hashed later, whatever runs in between); None for a model whose lazy modules are not
        initialised yet (there is nothing to hash before their first forward)."""
        if not self.complete:
            return None
        if self._frozen is None:
            copies = {id(s.tensor): s.copy for s in self.tensors}
            frozen: dict[str, Any] = {}
            for key, value in self.model.state_dict(keep_vars=True).items():
                if isinstance(value, torch.Tensor):
                    # A state-dict hook's own tensor may be a view of a live one: copied now.
                    frozen[key] = copies.get(id(value)) if id(value) in copies else value.detach().clone()
                else:
                    try:
                        frozen[key] = copy.deepcopy(value)
                    except Exception:  # an object that cannot be copied counts by its type name
                        frozen[key] = value
            self._frozen = frozen
        return self._frozen

    # -- restoring ---------------------------------------------------------------------------
    def restore(self, *, between_passes: bool = False) -> int:
        """Put everything recorded back; returns how many tensors' values had to be written.

        ``between_passes``: inside a pass, leave what the pass itself set up as it is (the
        train/eval flags and the hooks), restore what the model's own forward wrote.
        """
        for saved in self.modules:
            if saved.attributes is not None:
                self._restore_module(saved, between_passes)
        written = 0
        with torch.no_grad():
            for s in self.tensors:
                if _geometry(s.tensor) != s.geometry:
                    s.tensor.data = s.alias  # ``p.data = other`` swapped its storage: the original back
                if _version(s.tensor) != s.version or not s.unchanged():
                    self._write(s)
                    written += 1
                s.version = _version(s.tensor)
            for p, grad in self.grads:
                if p.grad is not grad:
                    p.grad = grad
        if not between_passes:
            self.dirty = False
        return written

    @staticmethod
    def _write(s: _SavedTensor) -> None:
        if s.live_bits is not None and s.copy_bits is not None:
            np.copyto(s.live_bits, s.copy_bits)  # behind autograd: no version bump on the user's tensor
            return
        target = s.tensor.data  # behind autograd, likewise
        if s.tensor.is_inference():
            with torch.inference_mode():
                target.copy_(s.copy)
        else:
            target.copy_(s.copy)

    @staticmethod
    def _restore_module(saved: _SavedModule, between_passes: bool) -> None:
        live = vars(saved.module)
        before = saved.attributes or {}
        if len(live) != len(before) or any(live.get(k, _MISSING) is not v for k, v in before.items()):
            for name in [n for n in live if n not in before]:
                if not (between_passes and _set_by_the_pass(name)):
                    del live[name]  # added by the forward
            for name, value in before.items():
                if live.get(name, _MISSING) is not value and not (between_passes and _set_by_the_pass(name)):
                    live[name] = value  # reassigned or deleted by the forward
        for name, container, items, by_the_pass in saved.contents:
            if (between_passes and by_the_pass) or (not items and not container):
                continue
            if type(container) is set:
                if len(container) != len(items) or any(v not in container for v in items):
                    container.clear()
                    container.update(items)
                continue
            current = list(container.items()) if type(container) is not list else container
            if len(current) != len(items) or any(_changed(now, then) for now, then in zip(current, items)):
                if type(container) is list:
                    container[:] = items
                else:
                    container.clear()
                    container.update(items)


def _changed(now: Any, then: Any) -> bool:
    """By identity: a list's item, or a dict's (key, value) pair."""
    if type(now) is tuple and type(then) is tuple and len(now) == len(then) == 2:
        return now[0] is not then[0] or now[1] is not then[1]
    return now is not then


_MISSING = object()


__all__ = ["ModelSnapshot", "same_bits"]
