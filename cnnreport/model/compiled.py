"""``torch.compile`` models: the module inside the wrapper, and compiled code run eagerly.

``torch.compile(model)`` returns an ``OptimizedModule`` whose ``_orig_mod`` is the model itself
(same tensors, state-dict keys prefixed ``_orig_mod.``). Dynamo traces whatever runs in a
compiled frame, cnnreport's hooks included, and fails on them ("already tracked for mutation"),
so the report is made of the module inside, called directly, and every compiled frame that
still runs (a compiled submodule, ``model.compile()`` in place, a ``torch.compile``'d function
in the forward) runs as plain eager code while cnnreport drives the model.

Nothing here imports ``torch._dynamo`` (seconds of import time): a model can only be compiled
once something else imported it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Any, Iterator

import torch
from torch import nn


def _eval_frame() -> object | None:
    return sys.modules.get("torch._dynamo.eval_frame")


def is_compiled_wrapper(module: nn.Module) -> bool:
    """Whether ``module`` is the wrapper ``torch.compile`` returns (an ``OptimizedModule``)."""
    eval_frame = _eval_frame()
    wrapper = getattr(eval_frame, "OptimizedModule", None) if eval_frame is not None else None
    return wrapper is not None and isinstance(module, wrapper)


def compiled_inner(model: nn.Module) -> tuple[nn.Module, int]:
    """The module a ``torch.compile`` wrapper holds, and how many wrappers were taken off
    (``torch.compile(torch.compile(m))`` nests two). The wrapper itself is not touched."""
    layers = 0
    while is_compiled_wrapper(model) and isinstance(getattr(model, "_orig_mod", None), nn.Module):
        model = model._orig_mod
        layers += 1
    return model, layers


def compiled_parts(model: nn.Module) -> list[str]:
    """Paths of the submodules that are compiled (wrappers, or ``Module.compile()`` in place);
    ``"(model)"`` for the model itself compiled in place."""
    if _eval_frame() is None:
        return []
    found = []
    for name, module in model.named_modules():
        if is_compiled_wrapper(module) or getattr(module, "_compiled_call_impl", None) is not None:
            found.append(name or "(model)")
    return found


def compiled_note(layers: int, parts: list[str]) -> str:
    """The page's line about compilation: what was reported instead, and why."""
    text = ""
    if layers:
        text = (
            "torch.compile'd model: the report shows the module inside the compiled wrapper "
            "(its _orig_mod, the same tensors), run eagerly; dynamo cannot trace the report's hooks. "
            "Checkpoint keys with or without the _orig_mod. prefix load and verify alike."
        )
    if parts:
        shown = ", ".join(parts[:4]) + (" ..." if len(parts) > 4 else "")
        text += (" " if text else "") + f"Compiled parts ({shown}) ran eagerly for the report."
    return text


_STANCE_LOCK = threading.Lock()
_STANCE_USERS = 0
_STANCE_SET: Any = None  # the set_stance object holding what was there before


@contextlib.contextmanager
def compiled_code_runs_eagerly() -> Iterator[None]:
    """Every ``torch.compile`` directive ignored for the block (the ``force_eager`` stance).

    The stance is process-wide, so overlapping blocks (two reports in two threads) share one
    setting: the first to enter sets it, the last to leave puts back what was there before.
    A no-op when dynamo was never imported (nothing can be compiled) or torch has no stances
    (before 2.6).
    """
    global _STANCE_USERS, _STANCE_SET

    set_stance = getattr(torch.compiler, "set_stance", None)
    if _eval_frame() is None or set_stance is None:
        yield
        return
    with _STANCE_LOCK:
        if _STANCE_USERS == 0:
            _STANCE_SET = set_stance("force_eager")  # sets it now; the object remembers the previous
        _STANCE_USERS += 1
    try:
        yield
    finally:
        with _STANCE_LOCK:
            _STANCE_USERS -= 1
            if _STANCE_USERS == 0:
                _STANCE_SET.__exit__(None, None, None)  # puts the previous stance back
                _STANCE_SET = None


__all__ = ["compiled_code_runs_eagerly", "compiled_inner", "compiled_note", "compiled_parts", "is_compiled_wrapper"]
