"""Where the model looks: gradient saliency (Captum ``Saliency``) and a Captum Grad-CAM reference.

Why Captum here, and our own Grad-CAM in :mod:`cnnreport.capture`:

- **Grad-CAM shares the capture pass.** The report already runs one forward pass with hooks on
  every layer; the CAM layer's hook makes its output a leaf, so the backward from the class score
  stops there (DESIGN.md measured 0.96x a bare forward in total). Captum's ``LayerGradCam`` would
  cost one more forward *and* a backward over the whole model, and register hooks of its own on a
  layer we already hook. Its maths is five lines (channel weights = spatial mean of the
  gradients, ReLU of the weighted sum), so we keep it in the pass, and use Captum's
  ``LayerGradCam`` (:func:`gradcam_reference`) as the independent reference the tests compare
  against.
- **Saliency needs its own full backward anyway** (gradients down to the input pixels), so there
  is nothing to share: Captum's ``Saliency`` is the maintained, well-known implementation of
  exactly that, it installs cleanly next to the CPU torch, and using it means the report's
  "saliency" means what the literature and Captum users mean by it. The cost is an optional
  dependency (``pip install "cnnreport[attributions]"``), imported only when called.

Both functions run inside :func:`cnnreport.capture.preserved_model_state`: the model is in eval
mode with every parameter's ``requires_grad`` off (the backward reaches the input only, no
parameter ``.grad`` is written), and flags, gradients and RNG state are restored afterwards.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import OptionError
from ..model.state import preserved_model_state
from .predictions import classification_scores

__all__ = ["saliency_maps", "gradcam_reference", "require_captum"]


def require_captum() -> Any:
    """Import and return ``captum.attr``, or raise :class:`OptionError` saying how to install it."""
    try:
        import captum.attr as captum_attr  # optional: only --saliency with captum installed
    except ImportError as exc:
        raise OptionError(
            'saliency maps need Captum, which is not installed: pip install "cnnreport[attributions]" '
            "(or leave out --saliency)"
        ) from exc
    return captum_attr


def _scores_function(model: nn.Module) -> Callable[..., torch.Tensor]:
    """A forward function returning the ``(N, classes)`` scores, whatever the output's container."""

    def forward(*inputs: torch.Tensor) -> torch.Tensor:
        output = model(*inputs)
        scores = classification_scores(output)
        if scores is None:
            raise OptionError(
                "attributions need a classification output (an (N, classes) tensor); "
                f"the model returned {type(output).__name__}"
            )
        return scores

    return forward


def _normalise(maps: torch.Tensor) -> list[np.ndarray]:
    """Each ``(h, w)`` map divided by its own maximum, so it lies in [0, 1] (all-zero stays 0)."""
    maps = torch.nan_to_num(maps.detach().float(), nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0)
    peak = maps.flatten(1).amax(1).clamp(min=1e-12)
    return [m for m in (maps / peak[:, None, None]).cpu().numpy()]


def _check_targets(inputs: tuple[torch.Tensor, ...], targets: Sequence[int]) -> int:
    if not inputs:
        raise OptionError("attributions need at least one input tensor")
    n = inputs[0].shape[0]
    if len(targets) != n:
        raise OptionError(f"got {len(targets)} target classes for {n} inputs: give one per input")
    return n


def _prepared(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    # Fresh leaves that require grad: the backward must reach the input, and the caller's tensors
    # must keep their own flags.
    return tuple(t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs)


def saliency_maps(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    targets: Sequence[int],
    *,
    batch_size: int = 32,
) -> list[np.ndarray]:
    """Plain gradient saliency of each input's target class score, one ``(H, W)`` map per input.

    The absolute gradient of the class score with respect to the first input tensor (the image),
    maximum over its channels, each map scaled to [0, 1] by its own maximum (Simonyan et al.
    2014, via Captum's ``Saliency``). ``inputs`` is the model's positional inputs, batch first;
    ``targets`` one class index per input. Runs in batches of ``batch_size`` to bound memory.
    """
    attr = require_captum()
    n = _check_targets(inputs, targets)
    forward = _scores_function(model)
    saliency = attr.Saliency(forward)
    maps: list[np.ndarray] = []
    with preserved_model_state(model), torch.enable_grad():
        for start in range(0, n, max(1, batch_size)):
            chunk = _prepared(tuple(t[start : start + batch_size] for t in inputs))
            target = [int(t) for t in targets[start : start + batch_size]]
            grads = saliency.attribute(chunk if len(chunk) > 1 else chunk[0], target=target, abs=True)
            grad = grads[0] if isinstance(grads, tuple) else grads
            if grad.dim() == 4:  # (N, C, H, W) -> (N, H, W)
                grad = grad.amax(1)
            elif grad.dim() == 3:  # (N, C, L) -> a one-pixel-high strip
                grad = grad.amax(1, keepdim=True)
            elif grad.dim() == 5:  # (N, C, D, H, W) -> maximum projection over depth
                grad = grad.amax(dim=(1, 2))
            else:
                grad = grad.reshape(grad.shape[0], 1, -1)
            maps += _normalise(grad)
    return maps


def gradcam_reference(
    model: nn.Module,
    layer_module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    targets: Sequence[int],
) -> list[np.ndarray]:
    """Captum ``LayerGradCam`` of ``layer_module``, one map per input in the layer's own grid.

    ReLU of the channel sum weighted by the spatially averaged gradients, each map scaled to
    [0, 1] by its maximum: the same definition :mod:`cnnreport.capture` computes inside the
    capture pass, so the two can be compared directly (no upsampling on either side).
    """
    attr = require_captum()
    _check_targets(inputs, targets)
    cam = attr.LayerGradCam(_scores_function(model), layer_module)
    with preserved_model_state(model), torch.enable_grad():
        chunk = _prepared(inputs)
        maps = cam.attribute(chunk if len(chunk) > 1 else chunk[0], target=[int(t) for t in targets], relu_attributions=True)
    if maps.dim() == 3:  # a 1-D layer: (N, 1, L)
        maps = maps.unsqueeze(2)
    elif maps.dim() == 5:
        maps = maps.mean(2)
    return _normalise(maps[:, 0])
