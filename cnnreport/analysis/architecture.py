"""torchinfo's summary turned into our own table rows and totals.

torchinfo runs the model once at batch size 1 (its own hooks, removed by torchinfo); we copy the
fields of its ``summary_list`` into :class:`~cnnreport.report.LayerRow` and never parse printed
text. torchinfo restores only the top-level train flag, so the call runs inside
:func:`~cnnreport.capture.preserved_model_state`, which restores every submodule's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..datamodel import LayerRow, ModelSummary, row_id
from ..model.modules import CONV_TYPES, is_convolution, module_type_name
from ..model.state import preserved_model_state


@dataclass
class Architecture:
    rows: list[LayerRow]
    summary: ModelSummary
    notes: list[str]


def _shape(value: Any) -> list[Any]:
    if isinstance(value, torch.Size):
        return list(value)
    if isinstance(value, (list, tuple)):
        return [_shape(v) if isinstance(v, (list, tuple, torch.Size)) else v for v in value]
    return []


def module_names(model: nn.Module) -> dict[int, str]:
    """id(module) -> its path; the first path wins for a module registered twice."""
    names: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), name)
    return names


def shared_parameters(model: nn.Module) -> dict[str, list[str]]:
    """Module path -> the other module paths that hold one of its parameters (tied weights)."""
    owners: dict[int, list[str]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), [])
            if mod_name not in owners[id(p)]:
                owners[id(p)].append(mod_name)
    shared: dict[str, list[str]] = {}
    for paths in owners.values():
        if len(paths) > 1:
            for path in paths:
                others = [p for p in paths if p != path]
                shared.setdefault(path, [])
                shared[path] += [o for o in others if o not in shared[path]]
    return shared


def _trainable(num: int, trainable: int) -> str:
    if num == 0:
        return ""
    if trainable == num:
        return "yes"
    return "no" if trainable == 0 else "partial"


def count_parameters(model: nn.Module) -> tuple[int, int, int]:
    """Total, trainable and bytes of the model's parameters, each shared tensor counted once."""
    total = trainable = nbytes = 0
    for p in model.parameters():  # parameters() already yields a shared tensor once
        if isinstance(p, nn.parameter.UninitializedParameter):
            continue
        total += p.numel()
        nbytes += p.numel() * p.element_size()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable, nbytes


def _sum_container_mult_adds(rows: list[LayerRow]) -> None:
    """A container's mult-adds are those of the leaves inside it (torchinfo only counts its own)."""
    leaves = [r for r in rows if r.is_leaf]
    for row in rows:
        if row.is_leaf:
            continue
        if row.depth == 0:
            row.mult_adds = sum(r.mult_adds for r in leaves)
        else:
            prefix = row.name + "."
            row.mult_adds = sum(r.mult_adds for r in leaves if r.name.startswith(prefix))


def _forget_torchinfo_cache(model: nn.Module, summary_list: Any) -> None:
    """Drop the entry torchinfo keeps of this call in its module-level cache.

    torchinfo stores every summary's layer list, which references each module, in a global
    dict keyed by the model's class name, even with ``cache_forward_pass=False``: a report
    would keep the user's model (and its weights) alive after they delete it. Only the entry
    this call made is removed (checked by identity)."""
    try:
        from torchinfo import torchinfo as torchinfo_module  # loaded by inspect_model already

        cache = torchinfo_module._cached_forward_pass
    except (ImportError, AttributeError):  # another torchinfo: nothing of ours to drop
        return
    name = type(model).__name__
    if isinstance(cache, dict) and cache.get(name) is summary_list:
        del cache[name]


def inspect_model(model: nn.Module, example: tuple[torch.Tensor, ...]) -> Architecture:
    """Rows and totals for ``model`` on ``example`` (inputs with batch size 1).

    The parameter totals are ``sum(p.numel())`` over the model's parameters; torchinfo's own
    total is kept beside them, since torchinfo counts a shared parameter once per holder.
    """
    from torchinfo import summary  # lazy: only a report with its table pays for torchinfo

    with preserved_model_state(model, freeze=False):  # the trainable column reads requires_grad
        stats = summary(model, input_data=list(example), verbose=0, depth=1000, mode="eval")
    _forget_torchinfo_cache(model, stats.summary_list)
    names = module_names(model)
    shared = shared_parameters(model)
    total, trainable, param_bytes = count_parameters(model)
    calls: dict[str, int] = {}
    rows: list[LayerRow] = []
    for info in stats.summary_list:
        name = names.get(id(info.module), info.var_name)
        calls[name] = calls.get(name, 0) + 1
        num = max(int(info.num_params), 0)
        kernel = info.kernel_size if isinstance(info.kernel_size, list) and info.kernel_size else None
        if isinstance(info.module, CONV_TYPES):
            kernel = list(info.module.kernel_size)
        rows.append(
            LayerRow(
                name=name or "(model)",
                type=info.class_name,
                depth=int(info.depth),
                input_shape=_shape(info.input_size),
                output_shape=_shape(info.output_size),
                kernel_size=kernel,
                params=num if calls[name] == 1 else 0,
                param_percent=100.0 * num / total if total and calls[name] == 1 else 0.0,
                mult_adds=int(info.macs),
                trainable=_trainable(num, int(info.trainable_params)),
                is_leaf=bool(info.is_leaf_layer),
                executed=bool(info.executed),
                call_index=calls[name],
                row_id=row_id(name) if calls[name] == 1 else f"{row_id(name)}-call{calls[name]}",
                shared_with=shared.get(name, []),
            )
        )
    _sum_container_mult_adds(rows)
    notes = []
    if int(stats.total_params) != total:
        notes.append(
            f"torchinfo counts {int(stats.total_params):,} parameters; the model holds {total:,}: "
            "torchinfo counts a parameter shared by several modules once per module, "
            "the totals here count each tensor once."
        )
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    first_param = next(iter(model.parameters()), None)
    out_shape = _shape(stats.summary_list[0].output_size) if stats.summary_list else []
    summary_row = ModelSummary(
        class_name=module_type_name(model),
        input_shape=[list(t.shape[1:]) for t in example][0] if len(example) == 1 else [list(t.shape[1:]) for t in example],
        output_shape=out_shape,
        total_params=total,
        trainable_params=trainable,
        non_trainable_params=total - trainable,
        mult_adds=int(stats.total_mult_adds),
        param_bytes=param_bytes,
        buffer_bytes=buffer_bytes,
        torchinfo_total_params=int(stats.total_params),
        was_training=model.training,
        device=str(first_param.device) if first_param is not None else "cpu",
        dtype=str(first_param.dtype).replace("torch.", "") if first_param is not None else "float32",
        num_conv_layers=sum(1 for m in model.modules() if is_convolution(m)),
    )
    return Architecture(rows=rows, summary=summary_row, notes=notes)
