"""The hand-written notebook recipe of issue 4: the baseline cnnreport is measured against.

What people write today: forward hooks that keep every convolution's full output, one forward
pass, then for each layer and each probe one matplotlib figure (``plt.subplots``) of the first
8 channels, saved as PNG and base64-encoded into an ``<img>`` tag. Written the way it usually is
in a notebook, not tuned; only the ``Agg`` backend is forced so it runs headless.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import torch
from torch import nn

CHANNELS = 8


def capture_activations(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Forward hooks keeping each convolution's whole output (the memory the recipe costs)."""
    activations: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            activations[name] = output.detach().clone()

        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(make_hook(name)))
    try:
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return activations


def render_figures(activations: dict[str, torch.Tensor], channels: int = CHANNELS) -> list[str]:
    """One figure per layer and probe, ``channels`` subplots each, as base64 ``<img>`` tags."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = []
    for name, act in activations.items():
        for probe in range(act.shape[0]):
            fig, axes = plt.subplots(1, channels, figsize=(2 * channels, 2.2))
            for c, ax in enumerate(axes):
                if c < act.shape[1]:
                    ax.imshow(act[probe, c].numpy(), cmap="viridis")
                ax.set_title(f"ch {c}", fontsize=8)
                ax.axis("off")
            fig.suptitle(f"{name} probe {probe}")
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png")
            plt.close(fig)
            tags.append(f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">')
    return tags


def recipe_html(model: nn.Module, images: torch.Tensor) -> str:
    """The whole recipe: capture, draw, and join the tags into one page."""
    activations = capture_activations(model, images)
    tags = render_figures(activations)
    return "<html><body>\n" + "\n".join(tags) + "\n</body></html>\n"
