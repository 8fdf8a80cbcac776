"""A model left exactly as it was: weights, buffers, hooks, RNG, grads and every submodule's train flag.

:func:`preserved_model_state` wraps every pass over the user's model (the capture, torchinfo's summary,
attributions); nested uses share the outer snapshot."""

from __future__ import annotations

import contextlib
import contextvars
import random
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from .compiled import compiled_code_runs_eagerly
from .snapshot import ModelSnapshot


@dataclass
class _SavedState:
    training: list[tuple[nn.Module, bool]]
    requires_grad: list[tuple[nn.Parameter, bool]]
    torch_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None
    numpy_rng: Any
    python_rng: Any


#: The snapshots of :func:`model_left_as_it_was` blocks open in this context, by model.
_OPEN_SNAPSHOTS: contextvars.ContextVar[tuple[ModelSnapshot, ...]] = contextvars.ContextVar("cnnreport_snapshots", default=())


def _open_snapshot(model: nn.Module) -> ModelSnapshot | None:
    return next((s for s in reversed(_OPEN_SNAPSHOTS.get()) if s.model is model), None)


def training_flags(model: nn.Module) -> dict[str, bool]:
    """Each module's own ``training`` flag, by module path ("" for the model itself): read it
    before any pass, which runs the model in eval mode (and puts the flags back after)."""
    return {name: bool(module.training) for name, module in model.named_modules()}


@contextlib.contextmanager
def model_left_as_it_was(model: nn.Module) -> Iterator[ModelSnapshot]:
    """Copy ``model``'s state once (:class:`~cnnreport.snapshot.ModelSnapshot`) for a block
    that runs it several times; put it back at the end, also when the block raises.

    Every :func:`preserved_model_state` of the same model inside the block restores to this
    one snapshot instead of taking its own: each forward pass (torchinfo's, the capture's,
    saliency's) starts from the model as it was given, for the price of one copy. Run the
    model inside the block only within :func:`preserved_model_state` (or set the snapshot's
    ``dirty``): the final comparison is skipped when those blocks already restored it.
    """
    outer = _open_snapshot(model)
    snapshot = outer or ModelSnapshot(model)
    token = _OPEN_SNAPSHOTS.set((*_OPEN_SNAPSHOTS.get(), snapshot))
    try:
        yield snapshot
    finally:
        _OPEN_SNAPSHOTS.reset(token)
        if snapshot.dirty:
            snapshot.restore()


@contextlib.contextmanager
def preserved_model_state(model: nn.Module, *, freeze: bool = True) -> Iterator[ModelSnapshot]:
    """Run a block with the model in eval mode and gradients off, then restore everything.

    Restores, also when the block raises: each submodule's own ``training`` flag, each
    parameter's ``requires_grad``, the torch (CPU and CUDA), numpy and ``random`` generators,
    and, bit for bit, whatever the model's own forward wrote: parameters, buffers, ``.grad``,
    attributes, registered tensors and submodules (:class:`~cnnreport.snapshot.ModelSnapshot`,
    shared with an enclosing :func:`model_left_as_it_was`). Compiled code runs eagerly inside
    (:func:`~cnnreport.compiled.compiled_code_runs_eagerly`). ``freeze`` turns
    ``requires_grad`` off for the block, so a backward pass started inside it reaches no
    parameter. Yields the snapshot, for a pass of several forwards to restore between them.
    """
    snapshot = _open_snapshot(model) or ModelSnapshot(model)
    saved = _SavedState(
        training=[(m, m.training) for m in model.modules()],
        requires_grad=[(p, p.requires_grad) for p in model.parameters()],
        torch_rng=torch.random.get_rng_state(),
        cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
        numpy_rng=np.random.get_state(),
        python_rng=random.getstate(),
    )
    snapshot.dirty = True
    try:
        with compiled_code_runs_eagerly():
            model.eval()
            if freeze:
                for p, _ in saved.requires_grad:
                    if not isinstance(p, nn.parameter.UninitializedParameter):  # lazy: not yet a tensor
                        p.requires_grad_(False)
            yield snapshot
    finally:
        for m, flag in saved.training:
            m.training = flag  # set the attribute itself: model.train(flag) would cascade
        for p, flag in saved.requires_grad:
            if not isinstance(p, nn.parameter.UninitializedParameter):
                p.requires_grad_(flag)
        try:
            snapshot.restore()
        finally:
            torch.random.set_rng_state(saved.torch_rng)
            if saved.cuda_rng is not None:
                torch.cuda.set_rng_state_all(saved.cuda_rng)
            np.random.set_state(saved.numpy_rng)
            random.setstate(saved.python_rng)
