"""What kind of module is this: type names, convolution kinds, and the inputs moved to a model's device.

Generic helpers for the user's model, imported by every stage that names or classifies layers."""

from __future__ import annotations

import torch
from torch import nn

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def module_type_name(module: nn.Module) -> str:
    """The class name a user wrote: TorchScript modules keep it as ``original_name``."""
    if isinstance(module, torch.jit.ScriptModule):
        return str(getattr(module, "original_name", type(module).__name__))
    return type(module).__name__


def is_convolution(module: nn.Module) -> bool:
    """A convolution, also inside a TorchScript archive (where isinstance no longer works)."""
    if isinstance(module, CONV_TYPES):
        return True
    return isinstance(module, torch.jit.ScriptModule) and module_type_name(module) in {t.__name__ for t in CONV_TYPES}


def to_model(inputs: tuple[torch.Tensor, ...], model: nn.Module) -> tuple[torch.Tensor, ...]:
    """Inputs moved to the model's device, and floating inputs cast to its dtype (half models)."""
    param = next(iter(model.parameters()), None)
    if param is None:
        param = next(iter(model.buffers()), None)
    if param is None:
        return inputs
    return tuple(
        t.to(device=param.device, dtype=param.dtype if t.is_floating_point() and param.is_floating_point() else t.dtype)
        for t in inputs
    )
