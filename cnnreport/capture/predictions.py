"""What a model's output says: its class scores, probabilities, top predictions and class names.

Read from each batch's output during the capture pass (and by attributions, which need the same
scores as a function of the input)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch

from ..datamodel import Prediction
from ..errors import OptionError
from .activations import _first_tensor


def classification_scores(output: Any) -> torch.Tensor | None:
    """The ``(N, classes)`` tensor in a model's output, if there is exactly such a thing."""
    candidate: Any = output
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        candidate = next((getattr(output, f.name) for f in dataclasses.fields(output) if isinstance(getattr(output, f.name), torch.Tensor)), None)
    elif isinstance(output, dict):
        candidate = output.get("logits", output.get("out", next(iter(output.values()), None) if len(output) == 1 else None))
    elif isinstance(output, (list, tuple)):
        candidate = output[0] if output else None
    if isinstance(candidate, torch.Tensor) and candidate.dim() == 2 and candidate.shape[1] >= 2 and candidate.is_floating_point():
        return candidate
    return None


def probabilities(scores: torch.Tensor) -> torch.Tensor:
    """Softmax of logits; outputs that already are (log-)probabilities are taken as such."""
    s = scores.detach().float().cpu()
    if bool(((s >= 0) & (s <= 1)).all()) and bool(torch.allclose(s.sum(1), torch.ones(s.shape[0]), atol=1e-3)):
        return s
    if bool((s <= 0).all()) and bool(torch.allclose(s.exp().sum(1), torch.ones(s.shape[0]), atol=1e-3)):
        return s.exp()
    return torch.softmax(s, dim=1)


ClassNames = Union[Sequence[str], Mapping[int, str]]


def check_class_names(names: Any) -> list[str] | dict[int, str] | None:
    """``class_names`` as a list (by position) or a map of index to name, or a one-line
    :class:`OptionError`: before the forward pass, so a wrong value costs no time.

    A map stays a map until the model's class count is known (:func:`resolve_class_names`):
    ``{0: "cat", 20000000: "dog"}`` is two names, never a list of twenty million.
    Blank names (``""`` or ``None``) keep their slot and are shown by the class number.
    """
    if names is None:
        return None
    if isinstance(names, (str, bytes)):
        raise OptionError(
            f"class_names {names!r:.60} is one string; give a list of names (or a map of index to name)"
        )
    if isinstance(names, Mapping):
        out: dict[int, str] = {}
        for key, value in names.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or key < 0:
                raise OptionError(f"class_names maps {key!r:.40}: the keys must be class indices 0, 1, 2 ...")
            out[int(key)] = _name_text(value, f"class {key}")
        return out
    try:
        items = list(names)
    except TypeError:
        raise OptionError(f"class_names must be a list of names or a map of index to name, not {type(names).__name__}") from None
    return [_name_text(value, f"entry {i}") for i, value in enumerate(items)]


def _name_text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return str(value)
    raise OptionError(f"class_names {where} is a {type(value).__name__} ({value!r:.40}), not a name")


def class_label(names: ClassNames | None, index: int) -> str:
    """The name of class ``index``, or its number when it has none."""
    if not names:
        return str(index)
    if isinstance(names, Mapping):
        name = names.get(index, "")
    else:
        name = names[index] if index < len(names) else ""
    return name or str(index)


def _span(indices: Sequence[int], limit: int = 6) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (f" and {len(indices) - limit} more" if len(indices) > limit else "")


def resolve_class_names(names: ClassNames | None, class_count: int | None) -> tuple[list[str] | None, list[str]]:
    """The names the report shows, one per class of the model's output, and notes on every
    name that did not fit: too few or too many names, blank ones, map indices beyond the
    model's classes, or names for a model whose output is not class scores.

    Returns ``(names, notes)``; the list has exactly ``class_count`` entries (classes without
    a name are named by their number), or is None when no names were given or none can apply.
    """
    if names is None:
        return None, []
    if class_count is None:
        return None, [
            "--class-names: the model's output is not class scores (an (N, classes) tensor), "
            "so the names are not used."
        ]
    notes: list[str] = []
    if isinstance(names, Mapping):
        beyond = sorted(i for i in names if i >= class_count)
        if beyond:
            notes.append(
                f"--class-names names index {_span(beyond)}, beyond the model's {class_count} classes "
                f"(0 to {class_count - 1}): {'that name is' if len(beyond) == 1 else 'those names are'} not used."
            )
        named = sorted(i for i, name in names.items() if i < class_count and name)
        resolved = [names.get(i, "") or str(i) for i in range(class_count)]
        if len(named) < class_count:
            notes.append(
                f"--class-names names {len(named)} of the model's {class_count} classes; "
                "the others are shown by their number."
            )
        return resolved, notes + _duplicate_name_notes(resolved)
    given = list(names)
    if len(given) < class_count:
        notes.append(
            f"--class-names gives {len(given)} names, but the model has {class_count} classes: "
            + (f"class {class_count - 1} is shown by its number." if len(given) == class_count - 1 else f"classes {len(given)} to {class_count - 1} are shown by their number.")
        )
    elif len(given) > class_count:
        extra = len(given) - class_count
        notes.append(
            f"--class-names gives {len(given)} names, but the model has {class_count} classes: "
            f"the last {extra} (from {given[class_count]!r:.40}) are not used."
        )
    kept = given[:class_count]
    blank = [i for i, name in enumerate(kept) if not name]
    if blank:
        notes.append(
            f"--class-names leaves class {_span(blank)} blank: shown by {'its' if len(blank) == 1 else 'their'} number."
        )
    resolved = [name or str(i) for i, name in enumerate(kept)] + [str(i) for i in range(len(kept), class_count)]
    return resolved, notes + _duplicate_name_notes(resolved)


def _duplicate_name_notes(resolved: Sequence[str]) -> list[str]:
    """A name given to two classes makes their predictions indistinguishable on the page."""
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(resolved):
        seen.setdefault(name, []).append(i)
    twice = [(name, idx) for name, idx in seen.items() if len(idx) > 1]
    if not twice:
        return []
    shown = "; ".join(f"{name!r:.40} for classes {', '.join(map(str, idx[:4]))}{' ...' if len(idx) > 4 else ''}" for name, idx in twice[:3])
    more = f" (and {len(twice) - 3} more names)" if len(twice) > 3 else ""
    return [f"--class-names gives one name to several classes: {shown}{more}: their predictions read alike on the page (hover one for its class number)."]


def top_predictions(probs: torch.Tensor, k: int, class_names: ClassNames | None) -> list[list[Prediction]]:
    k = min(k, probs.shape[1])
    values, indices = torch.topk(probs, k, dim=1)
    result = []
    for vals, idxs in zip(values.tolist(), indices.tolist()):
        if not all(math.isfinite(v) for v in vals):
            # NaN scores rank in no meaningful order: naming a "top" class would be invented.
            result.append([])
            continue
        result.append(
            [
                Prediction(
                    class_index=i,
                    label=class_label(class_names, i),
                    probability=float(v),
                )
                for v, i in zip(vals, idxs)
            ]
        )
    return result


def describe_output(output: Any) -> str:
    """What a forward pass returned, in words, for a note saying why there are no predictions."""
    if output is None:
        return "returned None"
    if isinstance(output, torch.Tensor):
        if output.dim() == 0:
            return "returned a scalar (a 0-dimensional tensor)"
        shape = "x".join(str(v) for v in output.shape)
        if not output.is_floating_point():
            return f"returned a {str(output.dtype).replace('torch.', '')} tensor of shape {shape}"
        if output.dim() == 2 and output.shape[1] == 1:
            return f"returned a tensor of shape {shape} (one value per probe, not a score per class)"
        return f"returned a tensor of shape {shape}"
    return f"returned a {type(output).__name__} holding no (N, classes) tensor"


def _count_nonfinite(output: Any) -> int:
    """NaN and Inf values in the output's first tensor (the one predictions come from)."""

    t = _first_tensor(output)
    if t is None or not t.is_floating_point() or t.numel() == 0:
        return 0
    return int((~torch.isfinite(t.detach())).sum())
