"""The one forward pass: hooks that reduce every activation to what the page shows, then let it go.

Each hooked call is reduced *inside the hook* to statistics, per-channel means and a few small
uint8 tiles, so memory does not grow with the depth of the model and an in-place op that runs
after the hook (``ReLU(inplace=True)``) cannot change what was captured.

:func:`preserved_model_state` puts everything the pass touches back as it was: the train/eval
flag of *every* submodule (``model.train(flag)`` would unfreeze a frozen BatchNorm),
``requires_grad`` and ``.grad`` of every parameter, the torch, numpy and ``random`` RNG state,
and whatever the model's own forward wrote to it (:mod:`cnnreport.snapshot`).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn.modules import module as module_globals

from ..errors import ForwardError
from .tracing import is_passive_hook, passive_hook, suspend_recording

#: Bounded activations and their limits, for the saturation check.
BOUNDED_LIMITS: dict[type, Callable[[nn.Module], tuple[float, float]]] = {
    nn.Sigmoid: lambda m: (0.0, 1.0),
    nn.Tanh: lambda m: (-1.0, 1.0),
    nn.Hardsigmoid: lambda m: (0.0, 1.0),
    nn.ReLU6: lambda m: (0.0, 6.0),
    nn.Hardtanh: lambda m: (float(m.min_val), float(m.max_val)),
}

#: float16's smallest normal value: nonzero values below it become subnormal (fewer digits) or,
#: where the hardware flushes subnormals, zero.
FP16_SMALLEST_NORMAL = 6.103515625e-05
#: Values per probe the float16 underflow count looks at: all of a smaller output, an even
#: sample of a larger one (a few small torch calls per module call, no pass over the values).
FP16_SAMPLES_PER_PROBE = 4096

#: Floating dtypes whose CPU tensors numpy reads in place.
NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)

HISTOGRAM_SAMPLES_PER_PROBE = 4096
#: At most this many values per layer in all (16 probes' worth): fewer per probe beyond that.
HISTOGRAM_SAMPLES_PER_LAYER = 16 * HISTOGRAM_SAMPLES_PER_PROBE

#: Elementwise modules that are clamps, so their output's per-(probe, channel) minimum and
#: maximum are their input's, clamped: exact, and when the input is an output just reduced
#: (a BatchNorm's before its ReLU) they cost no pass over the values. A third of a ResNet's
#: activations are ReLU outputs.
RANGE_FROM_INPUT: dict[type, Callable[[nn.Module], tuple[float | None, float | None]]] = {
    nn.ReLU: lambda m: (0.0, None),
    nn.ReLU6: lambda m: (0.0, 6.0),
    nn.Hardtanh: lambda m: (float(m.min_val), float(m.max_val)),
}


# --------------------------------------------------------------------------------------------
# Leaving the model exactly as it was


# --------------------------------------------------------------------------------------------
# What a hooked call is reduced to


@dataclass
class ProbeTiles:
    """The most active channels of one probe, downsampled and quantised for one mosaic."""

    channels: list[int]
    tiles: np.ndarray  # uint8 (k, h, w), 0..254 mapped linearly onto [vmin, vmax]; 255: non-finite
    vmin: float  # over the finite values only; NaN when the channels shown hold none
    vmax: float
    #: Per channel shown, its NaN and Inf values (before downsampling); empty: all finite.
    nonfinite: list[int] = field(default_factory=list)

    @property
    def nonfinite_count(self) -> int:
        return int(sum(self.nonfinite))


@dataclass
class LayerCapture:
    """Everything kept of one module call over all probes: numbers and small uint8 arrays only."""

    name: str
    type: str
    call_index: int
    order: int  # position in execution order among all recorded calls
    output_shape: list[int]  # per sample, batch dimension left out
    detailed: bool  # a section of the page: tiles, channel means and histogram kept
    # Per probe, in probe order.
    probe_mean: list[float] = field(default_factory=list)
    probe_std: list[float] = field(default_factory=list)
    probe_min: list[float] = field(default_factory=list)
    probe_max: list[float] = field(default_factory=list)
    probe_zeros: list[int] = field(default_factory=list)  # counted for section layers only
    probe_nan: list[int] = field(default_factory=list)
    probe_inf: list[int] = field(default_factory=list)
    numel_per_probe: int = 0
    input_rms: list[float] = field(default_factory=list)
    output_rms: list[float] = field(default_factory=list)
    saturated_low: int = 0
    saturated_high: int = 0
    limits: tuple[float, float] | None = None
    # Of the values the float16 underflow count looked at (all of them, or an even sample of
    # FP16_SAMPLES_PER_PROBE per probe; a section layer's histogram sample): the nonzero ones,
    # and those below FP16_SMALLEST_NORMAL.
    fp16_nonzero: int = 0
    fp16_tiny: int = 0
    fp16_sampled: bool = False  # whether those were a sample rather than every value
    # The first BatchNorm to run only (call 1): its input's per-channel mean and variance
    # over each probe's positions, per probe, (C,) each: what the probes look like to it.
    input_channel_mean: list[np.ndarray] = field(default_factory=list)
    input_channel_var: list[np.ndarray] = field(default_factory=list)
    # Detailed layers only.
    channel_means: list[np.ndarray] = field(default_factory=list)  # per probe, (C,)
    channel_min: np.ndarray | None = None  # (C,) over every probe and position
    channel_max: np.ndarray | None = None
    tiles: list[ProbeTiles] = field(default_factory=list)
    samples: list[np.ndarray] = field(default_factory=list)
    tile_note: str = ""

    @property
    def probes(self) -> int:
        return len(self.probe_mean)

    def overall(self) -> dict[str, float]:
        """Mean, std, min, max, zero fraction and non-finite counts over every probe."""
        n = self.numel_per_probe
        means = np.asarray(self.probe_mean, dtype=np.float64)
        stds = np.asarray(self.probe_std, dtype=np.float64)
        finite = np.isfinite(means) & np.isfinite(stds)
        if finite.any():
            mean = float(means[finite].mean())
            # Pooled variance of equal-sized groups: mean of variances plus variance of means.
            var = float((stds[finite] ** 2).mean() + ((means[finite] - mean) ** 2).mean())
        else:
            mean, var = float("nan"), float("nan")
        mins = [v for v in self.probe_min if math.isfinite(v)]
        maxs = [v for v in self.probe_max if math.isfinite(v)]
        total = n * max(self.probes, 1)
        return {
            "mean": mean,
            "std": math.sqrt(var) if var == var else float("nan"),
            "min": min(mins) if mins else float("nan"),
            "max": max(maxs) if maxs else float("nan"),
            "frac_zero": sum(self.probe_zeros) / total if total else 0.0,
            "nan_count": int(sum(self.probe_nan)),
            "inf_count": int(sum(self.probe_inf)),
            "numel": int(total),
        }


@dataclass
class CaptureResult:
    """All calls recorded by one or more forward batches, in execution order."""

    layers: list[LayerCapture]
    gradcam: list[np.ndarray] = field(default_factory=list)  # per probe, float (h, w) in [0, 1]
    #: Module path -> why a call of it kept nothing (see ActivationCapture.skipped).
    skipped: dict[str, str] = field(default_factory=dict)
    gradcam_layer: str = ""
    gradcam_targets: list[int] = field(default_factory=list)

    def detailed(self) -> list[LayerCapture]:
        return [layer for layer in self.layers if layer.detailed]


# --------------------------------------------------------------------------------------------
# Reductions (pure functions of a tensor)


def _as_float(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    return t if t.dtype == torch.float32 else t.float()


def _rms(t: torch.Tensor) -> list[float]:
    flat = _as_float(t).reshape(t.shape[0], -1)
    if flat.shape[1] == 0:
        return [0.0] * flat.shape[0]
    norms = torch.linalg.vector_norm(flat, dim=1)  # no full-size temporary, unlike x**2
    return (norms / math.sqrt(flat.shape[1])).tolist()


#: Elements per chunk when a reduction needs a temporary as large as its input: bounded
#: temporaries keep the capture's memory from growing with the largest activation.
CHUNK_ELEMENTS = 1 << 20


def _chunked(flat: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Sum of ``reduce(chunk)`` over column chunks, so no full-size temporary is ever made."""
    n, m = flat.shape
    step = max(1, CHUNK_ELEMENTS // max(n, 1))
    total = torch.zeros(n, dtype=dtype, device=flat.device)
    for start in range(0, m, step):
        total += reduce(flat[:, start : start + step]).to(dtype)
    return total


def _zero_count(chunk: torch.Tensor) -> torch.Tensor:
    """Exact zeros per row. ``bool()`` (nonzero, NaN included) summed as bytes: 7x faster on CPU
    than ``(chunk == 0).sum(1)``, whose comparison and bool reduction are not vectorised, and
    this was the capture's most expensive statistic. Counts fit int32: chunks are ~1M values."""
    nonzero = chunk.bool().view(torch.uint8).sum(1, dtype=torch.int32)
    return chunk.shape[1] - nonzero


def _std_and_rms(flat: torch.Tensor, mean: np.ndarray, norms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Population std and RMS per row from the rows' float32 ``mean`` and L2 ``norms``: std
    from the RMS (no pass of its own) when that is exact enough, else from the squared
    deviations, summed in chunks."""
    count = max(flat.shape[1], 1)
    rms_sq = norms.astype(np.float64) ** 2 / count
    mean64 = mean.astype(np.float64)
    var = rms_sq - mean64**2
    # rms^2 - mean^2 loses digits when the spread is tiny next to the mean (float32 sums carry
    # ~1e-6 relative error): recompute those rows exactly.
    unsafe = var <= 1e-4 * mean64**2
    if unsafe.any():
        centre = torch.from_numpy(np.ascontiguousarray(mean, dtype=np.float32)).to(flat.device)
        exact = _chunked(flat, lambda c: torch.linalg.vector_norm(c - centre[:, None], dim=1) ** 2, torch.float64) / count
        var = np.where(unsafe, exact.cpu().numpy(), var)
    return np.sqrt(np.maximum(var, 0.0)), np.sqrt(rms_sq)


def _as_lists(*values: Any) -> dict[str, list[Any]]:
    keys = ("mean", "std", "min", "max", "zeros", "nan", "inf", "rms")
    return {key: value.tolist() for key, value in zip(keys, values)}


def probe_statistics(
    x: torch.Tensor,
    *,
    count_zeros: bool = True,
    moments: bool = True,
    channel_range: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Per-probe mean, std, min, max, zero count and NaN/Inf counts of an ``(N, ...)`` tensor.

    ``count_zeros=False`` and ``moments=False`` skip the zero count (reported as 0) and the
    mean and std (reported as NaN, with no per-channel means), each a pass of its own over the
    values: layers without a section do not show them, and the health checks read only their
    range, RMS and NaN/Inf counts. ``channel_range``: the ``(N, C)`` minima and maxima of an
    ``(N, C, ...)`` tensor when already known (see :data:`RANGE_FROM_INPUT`); finite only.

    For ``(N, C, ...)`` tensors the result also holds ``channel_min``/``channel_max`` (C,)
    and, with moments, ``channel_means`` (N, C) as numpy arrays, and ``range_nc`` and
    ``channel_means_t`` as tensors, when every value is finite.
    """
    n = x.shape[0]
    flat = _as_float(x).reshape(n, -1)
    # For (N, C, ...) activations the reductions run per (probe, channel) over the contiguous
    # spatial axis: one pass then gives the probe's figures and the channel's (range, means).
    grid = flat.reshape(n, x.shape[1], -1) if x.dim() >= 3 else None
    # The passes over the values run in torch; everything they leave is small, and goes to
    # numpy in one copy: this runs for every module call, and a torch op on a handful of
    # numbers costs several times a numpy one (the hooks made ~75 torch calls a module).
    if grid is not None:
        mn_nc, mx_nc = channel_range if channel_range is not None else (grid.amin(2), grid.amax(2))
        parts = [mn_nc.reshape(-1), mx_nc.reshape(-1)]
    else:
        parts = [flat.amin(1), flat.amax(1)]
    norms_t = torch.linalg.vector_norm(flat, dim=1)  # no full-size temporary, unlike x**2
    parts.append(norms_t)
    mean_nc_t = None
    if moments:
        if grid is not None:
            mean_nc_t = grid.mean(2)
            # channels are equal-sized, so the mean of the channel means is the mean
            parts += [mean_nc_t.reshape(-1), mean_nc_t.mean(1)]
        else:
            parts.append(flat.mean(1))
    small = torch.cat([part.float() for part in parts]).cpu().numpy()
    if grid is not None:
        k = mn_nc.numel()
        mn_nc_np, mx_nc_np = small[:k].reshape(mn_nc.shape), small[k : 2 * k].reshape(mx_nc.shape)
        mn, mx = mn_nc_np.min(1), mx_nc_np.max(1)
        rest = small[2 * k :]
    else:
        mn, mx, rest = small[:n], small[n : 2 * n], small[2 * n :]
    norms, rest = rest[:n], rest[n:]
    # amin/amax propagate NaN and keep Inf, so finite extremes mean a finite tensor: the common
    # case skips the NaN/Inf scans, which cost more than every other statistic together.
    if np.isfinite(mn).all() and np.isfinite(mx).all():
        extra: dict[str, Any] = {}
        if grid is not None:
            extra = {"channel_min": mn_nc_np.min(0), "channel_max": mx_nc_np.max(0), "range_nc": (mn_nc, mx_nc)}
        if not moments:
            rms = norms.astype(np.float64) / math.sqrt(max(flat.shape[1], 1))
            mean = std = np.full(n, np.nan)
        else:
            if grid is not None:
                k = mean_nc_t.numel()
                extra["channel_means"] = rest[:k].reshape(mean_nc_t.shape)
                extra["channel_means_t"] = mean_nc_t
                mean = rest[k:]
            else:
                mean = rest
            std, rms = _std_and_rms(flat, mean, norms)
        zeros = np.zeros(n, dtype=np.int64)
        if count_zeros and ((mn <= 0) & (mx >= 0)).any():  # no zero can lie outside [min, max]
            zeros = _chunked(flat, _zero_count, torch.int64).cpu().numpy()
        nan = inf = np.zeros(n, dtype=np.int64)
        return {**_as_lists(mean, std, mn, mx, zeros, nan, inf, rms), **extra}
    return _nonfinite_probe_statistics(flat)


def _nonfinite_probe_statistics(flat: torch.Tensor) -> dict[str, Any]:
    """:func:`probe_statistics` of an ``(N, D)`` tensor holding NaN or Inf: NaN/Inf counts per
    probe, and the other figures over each probe's finite values (NaN where it has none)."""
    nan = torch.isnan(flat).sum(1)
    inf = torch.isinf(flat).sum(1)
    # Statistics over the finite values only; the counts say how many were not.
    finite = torch.isfinite(flat)
    clean = torch.where(finite, flat, torch.zeros((), dtype=flat.dtype))
    count = finite.sum(1).clamp(min=1).to(torch.float64)
    mean = clean.sum(1, dtype=torch.float64) / count
    var = ((clean.double() - mean[:, None]) ** 2 * finite).sum(1) / count
    std = var.sqrt()
    big = torch.finfo(flat.dtype).max
    mn = torch.where(finite, flat, torch.full((), big)).amin(1)
    mx = torch.where(finite, flat, torch.full((), -big)).amax(1)
    no_finite = finite.sum(1) == 0
    nan_t = torch.tensor(float("nan"))
    mean, std = mean.masked_fill(no_finite, float("nan")), std.masked_fill(no_finite, float("nan"))
    mn, mx = torch.where(no_finite, nan_t, mn), torch.where(no_finite, nan_t, mx)
    zeros = (flat == 0).sum(1)
    return _as_lists(mean, std, mn, mx, zeros, nan, inf, torch.tensor(_rms(flat)))


def as_image_channels(x: torch.Tensor) -> tuple[torch.Tensor | None, str]:
    """View an activation as ``(N, C, H, W)`` images, with a note saying how, or None."""
    if x.dim() == 4:
        return x, ""
    if x.dim() == 3:  # (N, C, L): each channel a one-pixel-high strip
        return x.unsqueeze(2), "1-D activations: each tile is one channel's signal as a strip"
    if x.dim() == 5:
        return x.amax(2), "3-D activations: each tile is a maximum projection over depth"
    return None, ""


def _window_average_matrix(size: int, out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(out, size)``: row i averages input positions floor(i*size/out) .. ceil((i+1)*size/out)-1,
    the windows of ``adaptive_avg_pool``."""
    rows = torch.arange(out)
    start = (rows * size) // out
    end = -((-(rows + 1) * size) // out)
    cols = torch.arange(size)
    inside = (cols[None, :] >= start[:, None]) & (cols[None, :] < end[:, None])
    return (inside / (end - start)[:, None]).to(dtype=dtype, device=device)


def area_downsample(images: torch.Tensor, out_hw: tuple[int, int], *, finite: bool | None = None) -> torch.Tensor:
    """``adaptive_avg_pool2d(images, out_hw)`` (same windows, so the same values up to float
    rounding) as two small matrix products: a window's mean is the mean of its rows' means.
    For ratios like 56 -> 48 px the pooling kernel was a tenth of the capture's own time.

    The pooling kernel itself where the products would differ: off the CPU (a GPU may run
    matrix products in TF32) and for non-finite values (a product spreads one NaN over the
    whole tile, the pooling keeps it in its window). ``finite``: whether ``images`` is known
    to hold finite values only (None: look; the check costs as much as the products)."""
    if finite is None:
        finite = bool(torch.isfinite(images).all())
    if images.device.type != "cpu" or not finite:
        return torch.nn.functional.adaptive_avg_pool2d(images, out_hw)
    h, w = images.shape[-2:]
    rows = _window_average_matrix(h, out_hw[0], images.dtype, images.device)
    cols = _window_average_matrix(w, out_hw[1], images.dtype, images.device)
    return rows @ images @ cols.T


def top_channel_tiles(
    images: torch.Tensor, channel_means: torch.Tensor, k: int, tile_size: int, *, finite: bool | None = None
) -> list[ProbeTiles]:
    """For each probe, its ``k`` channels of highest mean activation, area-averaged to at most
    ``tile_size`` pixels on the longer side and quantised to uint8 on a shared scale per probe.
    ``finite``: whether ``images`` is known to be free of NaN and Inf (None: look)."""
    n, c, h, w = images.shape
    k = min(k, c)
    scores = torch.nan_to_num(channel_means, nan=-math.inf)
    idx = torch.topk(scores, k, dim=1).indices  # (N, k), stable for ties
    if images.is_contiguous():
        # The chosen maps as rows of the (N*C, H, W) view: one index_select copies whole maps,
        # 7x faster than gather's per-element indexing.
        rows = (idx + torch.arange(n, device=idx.device)[:, None] * c).reshape(-1)
        chosen = images.reshape(n * c, h, w).index_select(0, rows).reshape(n, k, h, w)
    else:  # channels-last or a strided view: the reshape above would copy the whole map
        chosen = torch.gather(images, 1, idx[:, :, None, None].expand(n, k, h, w))
    # NaN and Inf per shown channel, counted before downsampling spreads them over a window;
    # only looked for where the values are not known to be finite.
    bad_counts = None
    if finite is not True:
        bad_counts = (~torch.isfinite(chosen)).reshape(n, k, -1).sum(2)
        if not bool(bad_counts.any()):
            bad_counts = None
        finite = bad_counts is None
    scale = max(h, w) / tile_size
    if scale > 1:
        out_hw = (max(1, round(h / scale)), max(1, round(w / scale)))
        chosen = area_downsample(chosen, out_hw, finite=finite)
    chosen = _as_float(chosen)
    bad = None
    if bad_counts is None:
        lo, hi = chosen.reshape(n, -1).amin(1), chosen.reshape(n, -1).amax(1)
    else:  # the colour scale comes from the finite values; the others are drawn grey (255)
        bad = ~torch.isfinite(chosen)
        flat = chosen.reshape(n, -1)
        flat_bad = bad.reshape(n, -1)
        lo = torch.where(flat_bad, torch.full((), math.inf), flat).amin(1)
        hi = torch.where(flat_bad, torch.full((), -math.inf), flat).amax(1)
        none_finite = flat_bad.all(1)
        lo, hi = lo.masked_fill(none_finite, math.nan), hi.masked_fill(none_finite, math.nan)
        chosen = torch.where(bad, torch.zeros(()), chosen)
    span = (hi - lo).clamp(min=1e-12)
    # 128 levels (even palette indices 0..254): indistinguishable on the colour map, and the
    # PNGs compress ~14% smaller than with 255 levels of sensor-like noise in the low bits.
    # One temporary, then in place: this runs in the hook of every section layer.
    q = chosen - lo[:, None, None, None]
    q.div_(span[:, None, None, None]).mul_(127).round_().clamp_(0, 127).mul_(2)
    if bad is not None:
        q = torch.where(bad, torch.full((), 255.0), torch.nan_to_num(q, nan=0.0))
    q = q.to(torch.uint8).cpu().numpy()
    # One conversion each, not one per probe: indexing a tensor row costs a torch call.
    channels, lows, highs = idx.tolist(), lo.tolist(), hi.tolist()
    counts = bad_counts.tolist() if bad_counts is not None else [[] for _ in range(n)]
    return [ProbeTiles(channels[i], q[i], lows[i], highs[i], counts[i]) for i in range(n)]


def histogram_sample(x: torch.Tensor, per_probe: int = HISTOGRAM_SAMPLES_PER_PROBE) -> list[np.ndarray]:
    """A deterministic sample of ``per_probe`` of each probe's values, for the histogram: one
    value from each run of ``step`` consecutive positions, at a hashed offset within it.

    Not a plain stride: when ``step`` is a multiple of the map's H*W (2048 channels of 7x7
    sampled 2,048 times), every stride lands on the same pixel of each channel, and the
    histogram would be that pixel's (the corner, with zero padding) instead of the layer's."""
    flat = x.detach().reshape(x.shape[0], -1)
    count = flat.shape[1]
    if count <= per_probe:
        sample = flat
    else:
        step = count // per_probe
        strata = torch.arange(per_probe, dtype=torch.int64)
        offsets = (strata * 2654435761) % step  # Knuth's multiplicative hash: spread, repeatable
        sample = flat.index_select(1, (strata * step + offsets).to(flat.device))
    return list(_as_float(sample).cpu().numpy().copy())


# --------------------------------------------------------------------------------------------
# The capture context


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            t = _first_tensor(item)
            if t is not None:
                return t
    if isinstance(value, dict):
        for item in value.values():
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


def _unrecorded_output(output: Any, tensor: torch.Tensor | None) -> str:
    """What a module returned that has no statistics, in words for a note."""
    if tensor is None:
        return "returned None" if output is None else f"returned no tensor (a {type(output).__name__})"
    if tensor.dim() == 0:
        return "returned a scalar (a 0-dimensional tensor)"
    if not tensor.is_floating_point():
        return f"returned a {str(tensor.dtype).replace('torch.', '')} tensor, not a floating-point one"
    return f"returned an empty tensor of shape {tuple(tensor.shape)}"


def _record_saturation(layer: LayerCapture, out: torch.Tensor, limits: tuple[float, float]) -> None:
    """Count a bounded activation's values within 0.1% of its range from either limit."""
    lo, hi = limits
    tol = 1e-3 * (hi - lo)
    x = out.detach()
    layer.limits = (lo, hi)
    layer.saturated_low += int((x <= lo + tol).sum())
    layer.saturated_high += int((x >= hi - tol).sum())


def _record_channel_range(layer: LayerCapture, out: torch.Tensor, stats: dict[str, Any]) -> None:
    """Widen the layer's per-channel range by an ``(N, C, ...)`` output's.

    Every conv-shaped layer keeps its per-channel range, so the health checks find dead
    channels in layers that have no section too. Flat (N, F) outputs are left out: a flattened
    map has a "channel" per pixel, and a pixel that is always zero is not a dead unit.
    """
    if "channel_min" in stats:
        cmin_np, cmax_np = stats["channel_min"], stats["channel_max"]
    else:  # non-finite values: the slow path computed no channel figures
        x = out.detach()
        dims = (0, *range(2, x.dim()))
        cmin_np = x.amin(dim=dims).float().cpu().numpy()
        cmax_np = x.amax(dim=dims).float().cpu().numpy()
    _widen_channel_range(layer, cmin_np, cmax_np)


def _widen_channel_range(layer: LayerCapture, cmin_np: np.ndarray, cmax_np: np.ndarray) -> None:
    """Take per-channel minima and maxima into the layer's running range."""
    layer.channel_min = cmin_np if layer.channel_min is None else np.minimum(layer.channel_min, cmin_np)
    layer.channel_max = cmax_np if layer.channel_max is None else np.maximum(layer.channel_max, cmax_np)


#: The float16 sample is read in runs of this many consecutive values (64 bytes of float32, one
#: cache line): gathering 4,096 scattered values from a large output is a cache miss each, most
#: of the count's time; 256 runs of 16 cost a sixteenth of the misses and still cover it evenly.
FP16_SAMPLE_RUN = 16


def _fp16_sample_index(count: int) -> torch.Tensor:
    """Positions of the float16 count's sample in a probe's ``count`` values (``count >
    FP16_SAMPLES_PER_PROBE``): ``FP16_SAMPLES_PER_PROBE / FP16_SAMPLE_RUN`` runs of
    consecutive values, one in each of as many equal strata, at a fixed pseudo-random offset
    inside it (so a period of the layout cannot line up with the strata)."""
    runs = FP16_SAMPLES_PER_PROBE // FP16_SAMPLE_RUN
    step = count // runs
    slack = step - FP16_SAMPLE_RUN + 1  # offsets at which a whole run still fits in its stratum
    strata = torch.arange(runs, dtype=torch.int64)
    starts = strata * step + (strata * 2654435761) % slack
    return (starts[:, None] + torch.arange(FP16_SAMPLE_RUN, dtype=torch.int64)).reshape(-1)


def _count_fp16_sample(layer: LayerCapture, sample: list[np.ndarray], *, sampled: bool) -> None:
    """Add a section layer's histogram sample (one array per probe) to its float16 underflow
    counts: nonzero values, and of them those below float16's smallest normal (NaN is neither)."""
    layer.fp16_sampled = layer.fp16_sampled or sampled
    if not sample:
        return
    magnitude = np.abs(np.concatenate(sample))
    nonzero = np.count_nonzero(magnitude > 0)
    layer.fp16_nonzero += nonzero
    layer.fp16_tiny += nonzero - np.count_nonzero(magnitude >= FP16_SMALLEST_NORMAL)


class ActivationCapture:
    """Hooks on every leaf module for the whole forward pass (use as a context manager).

    ``detailed`` names the modules that get a section: their activations also give tiles,
    per-channel means and histogram samples. Every other leaf gets statistics only, which the
    health checks use (NaN's first layer, exploding scale, saturation).
    """

    def __init__(
        self,
        model: nn.Module,
        detailed: set[str],
        *,
        max_channels: int = 16,
        tile_size: int = 64,
        cam_layer: str | None = None,
        max_probes: int | None = None,
        total_probes: int | None = None,
    ) -> None:
        self.model = model
        self.detailed_names = set(detailed)
        self.max_channels = max_channels
        self.tile_size = tile_size
        self.cam_layer = cam_layer
        # What the page shows bounds what is kept, whatever the number of probes: tiles for
        # the first ``max_probes`` probes only, and a histogram sample per layer of at most
        # HISTOGRAM_SAMPLES_PER_LAYER values spread evenly over all ``total_probes``.
        self.max_probes = max_probes
        self.samples_per_probe = HISTOGRAM_SAMPLES_PER_PROBE
        if total_probes:
            self.samples_per_probe = max(1, min(HISTOGRAM_SAMPLES_PER_PROBE, HISTOGRAM_SAMPLES_PER_LAYER // total_probes))
        self._first_probe = 0
        # For the automatic batch size (batching.py): bytes of one probe's largest output so
        # far, and bytes of the tiles kept so far.
        self.largest_per_probe = 0
        self.tile_bytes = 0
        self._handles: list[Any] = []
        self._layers: dict[tuple[str, int], LayerCapture] = {}
        self._calls: dict[str, int] = {}
        self._order = 0
        self._cam_leaf: torch.Tensor | None = None
        self._gradcam: list[np.ndarray] = []
        self._gradcam_targets: list[int] = []
        self._pending_inputs: dict[str, list[_Reduced | None]] = {}  # per module: its pre-hooks' inputs, a stack
        self._recent: dict[int, _Reduced] = {}
        self._fp16_index: dict[tuple[int, torch.device], torch.Tensor] = {}
        self._first_batchnorm: str | None = None
        self.completed: list[str] = []
        #: Module path -> why a call of it kept nothing (its output is None, a scalar ...).
        self.skipped: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "ActivationCapture":
        try:
            for name, module in self.model.named_modules():
                if isinstance(module, torch.jit.ScriptModule):
                    continue  # TorchScript runs outside Python: its modules cannot be hooked
                is_leaf = not any(True for _ in module.children())
                if is_leaf or name in self.detailed_names or name == self.cam_layer:
                    # The input's scale is read before the call: an in-place op (ReLU(inplace))
                    # has overwritten the input by the time the forward hook runs.
                    self._handles.append(module.register_forward_pre_hook(passive_hook(self._make_pre_hook(name))))
                    self._handles.append(module.register_forward_hook(self._make_hook(name, module)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._remove()
        self._cam_leaf = None
        self._recent.clear()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def start_batch(self, first_probe: int = 0) -> None:
        """Call before each forward batch: call counts restart, so call N is the same call.
        ``first_probe``: the index of the batch's first probe among all probes."""
        self._first_probe = first_probe
        self._calls.clear()
        self._cam_leaf = None
        self._recent.clear()

    # -- the hooks --------------------------------------------------------------------------
    def _make_pre_hook(self, name: str) -> Callable[..., Any]:
        pending = self._pending_inputs.setdefault(name, [])

        def pre_hook(mod: nn.Module, inputs: tuple[Any, ...]) -> None:
            inp = _first_tensor(inputs)
            if inp is None or not inp.is_floating_point() or inp.dim() == 0:
                pending.append(None)
                return
            known = self._known(inp)
            if known is not None:
                pending.append(known)
                return
            with suspend_recording(), torch.no_grad():
                pending.append(_Reduced(None, -1, tuple(inp.shape), _rms(inp), None))

        return pre_hook

    #: Outputs whose RMS and range are remembered for the next module's input (see _known).
    RECENT_OUTPUTS = 8

    def _remember(self, out: torch.Tensor, rms: list[float], range_nc: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        version = _version_of(out)
        if version is None:
            return
        recent = self._recent
        if len(recent) >= self.RECENT_OUTPUTS:
            del recent[next(iter(recent))]
        recent[id(out)] = _Reduced(weakref.ref(out), version, tuple(out.shape), rms, range_nc)

    def _known(self, inp: torch.Tensor) -> _Reduced | None:
        """What this pass already reduced of ``inp``, if it is an output just reduced, unchanged.

        Most modules take the previous module's output as it is, so its RMS (and range) is
        already known: one full pass over every activation saved. The same object (a weak
        reference, as ids are reused) at the same version counter (an in-place op bumps it)
        is the same values. Writes that bypass autograd's version counter (``t.data.mul_()``,
        a numpy view of the tensor, a custom kernel writing through its pointer) between two
        modules go unseen: the next module's input RMS is then the value before the write.
        """
        entry = self._recent.get(id(inp))
        if entry is None or entry.ref() is not inp or _version_of(inp) != entry.version:
            return None
        return entry

    def _make_hook(self, name: str, module: nn.Module) -> Callable[..., Any]:
        detailed = name in self.detailed_names
        limits_of = next((f for t, f in BOUNDED_LIMITS.items() if type(module) is t), None)
        clamp_of = RANGE_FROM_INPUT.get(type(module))
        # A BatchNorm's range is derived where no section shows it (a section layer computes
        # its moments in a pass anyway, so measuring its range costs little more there).
        affine_of = _batchnorm_affine if type(module) in BATCHNORM_TYPES and not detailed else None
        type_name = type(module).__name__
        is_cam = name == self.cam_layer
        is_batchnorm = isinstance(module, nn.modules.batchnorm._BatchNorm)

        def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
            out = _first_tensor(output)
            pending = self._pending_inputs.get(name)
            seen_input = pending.pop() if pending else None
            # An empty output ((N, C, 0, W) from an odd shape) has no statistics: skipped
            # rather than failing the user's forward pass in our hook.
            if out is None or out.dim() == 0 or not out.is_floating_point() or out.numel() == 0:
                if name not in self.skipped:  # why a chosen layer has no section, for the page's notes
                    self.skipped[name] = _unrecorded_output(output, out)
                return None
            call = self._calls.get(name, 0) + 1
            self._calls[name] = call
            with suspend_recording(), torch.no_grad():
                known_range = _derived_range(mod, seen_input, out, clamp_of, affine_of)
                input_rms = seen_input.rms if seen_input is not None else None
                self._record(name, type_name, call, out, input_rms, detailed, limits_of, mod, known_range)
                if is_batchnorm and call == 1 and self._first_batchnorm in (None, name):
                    # The first BatchNorm to run: what the probes look like to it, against
                    # its running statistics (the preprocessing check).
                    self._first_batchnorm = name
                    inp = _first_tensor(inputs)
                    if inp is not None and inp.is_floating_point():
                        self._record_bn_input(self._layers[(name, call)], inp)
            self.completed.append(name)
            if is_cam and call == 1 and torch.is_grad_enabled() and isinstance(output, torch.Tensor):
                # Grad-CAM shares this pass: the CAM layer's output becomes a leaf, so autograd
                # records only the ops after it, never the (much larger) early layers.
                leaf = output.detach().requires_grad_(True)
                self._cam_leaf = leaf
                return leaf.clone()  # a non-leaf, so a following in-place ReLU stays legal
            return None

        # Passive for _only_passive_hooks: it returns a new output only for the Grad-CAM layer's
        # first call, never for the clamp-like and BatchNorm calls that check asks about.
        return passive_hook(hook)

    def _record(
        self,
        name: str,
        type_name: str,
        call: int,
        out: torch.Tensor,
        input_rms: list[float] | None,
        detailed: bool,
        limits_of: Callable[[nn.Module], tuple[float, float]] | None,
        module: nn.Module,
        known_range: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Add one call's output ``out`` (a batch of probes) to the layer's record."""
        if out.shape[0]:
            self.largest_per_probe = max(self.largest_per_probe, out.numel() // out.shape[0] * out.element_size())
        layer = self._layer_for(name, type_name, call, out, detailed)
        stats = probe_statistics(out, count_zeros=detailed, moments=detailed, channel_range=known_range)
        layer.probe_mean += stats["mean"]
        layer.probe_std += stats["std"]
        layer.probe_min += stats["min"]
        layer.probe_max += stats["max"]
        layer.probe_zeros += stats["zeros"]
        layer.probe_nan += stats["nan"]
        layer.probe_inf += stats["inf"]
        layer.output_rms += stats["rms"]
        self._remember(out, stats["rms"], stats.get("range_nc"))
        if input_rms is not None and len(input_rms) == out.shape[0]:
            layer.input_rms += input_rms
        if limits_of is not None:
            _record_saturation(layer, out, limits_of(module))
        if not detailed:  # a section layer counts on its histogram sample (_record_details)
            self._record_fp16(layer, out)
        if out.dim() >= 3:
            _record_channel_range(layer, out, stats)
        if detailed:
            self._record_details(layer, out, stats)

    def _record_fp16(self, layer: LayerCapture, out: torch.Tensor) -> None:
        """Count nonzero values and those below float16's smallest normal, in ``out`` or an even
        sample of it (the same strata as the histogram's, see :func:`histogram_sample`)."""
        n = out.shape[0]
        flat = out.detach().reshape(n, -1)
        count = flat.shape[1]
        if not n or not count:
            return
        if count > FP16_SAMPLES_PER_PROBE:
            index = self._fp16_index.get((count, flat.device))
            if index is None:
                index = _fp16_sample_index(count).to(flat.device)
                self._fp16_index[(count, flat.device)] = index
            flat = flat.index_select(1, index)
            layer.fp16_sampled = True
        # NaN is neither nonzero nor tiny here: it fails both comparisons. The tiny ones are the
        # nonzero ones that are not normal, two counts and no mask combined.
        if flat.device.type == "cpu" and flat.dtype in NUMPY_FLOATS:
            # A few thousand values: numpy's calls cost a fraction of torch's dispatch, which was
            # most of this function's time (issue 19's budget, benchmarks/bench_checks.py).
            magnitude = np.abs(flat.numpy())
            nonzero, normal = np.count_nonzero(magnitude > 0), np.count_nonzero(magnitude >= FP16_SMALLEST_NORMAL)
        else:
            magnitude = flat.abs()
            nonzero, normal = torch.stack([(magnitude > 0).sum(), (magnitude >= FP16_SMALLEST_NORMAL).sum()]).tolist()
        layer.fp16_nonzero += int(nonzero)
        layer.fp16_tiny += int(nonzero) - int(normal)

    def _record_bn_input(self, layer: LayerCapture, inp: torch.Tensor) -> None:
        """The first BatchNorm's input, per probe and channel: mean and variance over positions."""
        if inp.dim() < 2 or not inp.shape[0]:
            return
        grid = _as_float(inp).reshape(inp.shape[0], inp.shape[1], -1)
        # Two passes in float32, the second over the deviations so no digits cancel: an eighth
        # of torch.var_mean's time on a ResNet's conv1 output (2 ms of 15.6 on one core), and
        # within 1e-6 of float64 (tests/test_deployment_alerts.py's hand-derived figures).
        mean = grid.mean(2, keepdim=True)
        spread = torch.linalg.vector_norm(grid - mean, dim=2).double()
        mean, var = mean.squeeze(2).double(), spread * spread / max(grid.shape[2], 1)
        both = torch.stack([mean, var.clamp_(min=0.0)]).cpu().numpy()
        layer.input_channel_mean += list(both[0])
        layer.input_channel_var += list(both[1])

    def _layer_for(self, name: str, type_name: str, call: int, out: torch.Tensor, detailed: bool) -> LayerCapture:
        """The record of ``name``'s call ``call``, made (next in execution order) at its first batch."""
        key = (name, call)
        layer = self._layers.get(key)
        if layer is None:
            layer = LayerCapture(
                name=name,
                type=type_name,
                call_index=call,
                order=self._order,
                output_shape=list(out.shape[1:]),
                detailed=detailed,
                numel_per_probe=int(out[0].numel()) if out.shape[0] else 0,
            )
            self._order += 1
            self._layers[key] = layer
        return layer

    def _record_details(self, layer: LayerCapture, out: torch.Tensor, stats: dict[str, Any]) -> None:
        """What only a section shows: per-probe channel means, the top channels' tiles, a histogram sample."""
        x = _as_float(out)
        images, note = as_image_channels(x)
        layer.tile_note = note
        if x.dim() >= 3:
            dims = tuple(range(2, x.dim()))
            if "channel_means" in stats:
                cmeans, cmeans_np = stats["channel_means_t"], stats["channel_means"]
            else:  # non-finite values: each channel's mean over its finite values (NaN if none),
                # as the layer's own statistics are; the copies are paid only in this rare case
                finite_mask = torch.isfinite(x)
                total = torch.where(finite_mask, x, torch.zeros((), dtype=x.dtype)).sum(dims, dtype=torch.float64)
                cmeans = (total / finite_mask.sum(dims)).float()  # 0 / 0 is NaN: a channel with no finite value
                cmeans_np = cmeans.cpu().numpy()
        else:
            cmeans = x.reshape(x.shape[0], -1)
            cmeans_np = cmeans.cpu().numpy()
            _widen_channel_range(layer, cmeans_np.min(0), cmeans_np.max(0))
        # A copy: cmeans_np is a view, of the statistics' whole buffer (three times its size)
        # or, for a flat (N, F) output, of the activation itself, which an in-place op after
        # this module (ReLU(inplace=True)) would overwrite.
        layer.channel_means += list(np.array(cmeans_np, copy=True))
        shown = x.shape[0] if self.max_probes is None else max(0, min(x.shape[0], self.max_probes - self._first_probe))
        if images is not None and self.max_channels > 0 and shown:
            # Finite extremes (the statistics' fast path) mean finite values throughout.
            finite = "channel_min" in stats
            tiles = top_channel_tiles(images[:shown], cmeans[:shown], self.max_channels, self.tile_size, finite=finite)
            self.tile_bytes += sum(t.tiles.nbytes for t in tiles)
            layer.tiles += tiles
        sample = histogram_sample(x, self.samples_per_probe)
        layer.samples += sample
        # The float16 underflow count on the same even sample: no second one to draw.
        _count_fp16_sample(layer, sample, sampled=x.shape[0] > 0 and x[0].numel() > self.samples_per_probe)

    # -- Grad-CAM ---------------------------------------------------------------------------
    def gradcam_backward(self, scores: torch.Tensor, targets: list[int]) -> bool:
        """After a batch's forward: Grad-CAM maps of the CAM layer for the given class scores.

        ``scores`` is the batch's ``(N, classes)`` output. Returns False (and records nothing)
        when the CAM layer did not run or the scores do not depend on it.
        """
        leaf = self._cam_leaf
        self._cam_leaf = None
        if leaf is None or not scores.requires_grad or leaf.dim() < 3:
            return False
        # Gradients on, whatever the caller's mode: a report built under ``torch.no_grad()``
        # still gets its Grad-CAM (the forward ran with them on for the same reason).
        with torch.enable_grad():
            picked = scores.gather(1, torch.as_tensor(targets, device=scores.device)[:, None]).sum()
            (grads,) = torch.autograd.grad(picked, leaf, allow_unused=True)
        if grads is None:
            return False
        with torch.no_grad():
            act, grads = _as_float(leaf), _as_float(grads)
            if act.dim() == 3:
                act, grads = act.unsqueeze(2), grads.unsqueeze(2)
            elif act.dim() == 5:
                act, grads = act.mean(2), grads.mean(2)
            weights = grads.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((weights * act).sum(1))
            # Normalised by the largest finite value: a NaN pixel (non-finite activations or
            # gradients) stays NaN, and is not allowed to blank the whole map.
            peak = torch.where(torch.isfinite(cam), cam, torch.zeros(())).flatten(1).amax(1).clamp(min=1e-12)
            cam = (cam / peak[:, None, None]).cpu().numpy()
        self._gradcam += [m for m in cam]
        self._gradcam_targets += list(targets)
        return True

    # -- result -----------------------------------------------------------------------------
    def result(self) -> CaptureResult:
        layers = sorted(self._layers.values(), key=lambda layer: layer.order)
        return CaptureResult(
            layers=layers,
            gradcam=list(self._gradcam),
            gradcam_layer=self.cam_layer or "",
            gradcam_targets=list(self._gradcam_targets),
            skipped=dict(self.skipped),
        )


@dataclass
class _Reduced:
    """What the pass computed of one tensor: for reuse when it is the next module's input."""

    ref: Any  # weak reference to the tensor (None: an input reduced in a pre-hook)
    version: int
    shape: tuple[int, ...]
    rms: list[float]
    range_nc: tuple[torch.Tensor, torch.Tensor] | None  # (N, C) minima and maxima, finite


BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)  # exactly these: see _batchnorm_affine


def _batchnorm_affine(
    module: nn.Module, range_nc: tuple[torch.Tensor, torch.Tensor], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """An eval-mode BatchNorm's per-(probe, channel) output range from its input's.

    In eval mode with running statistics a BatchNorm is, per channel, ``y = a x + b`` with
    ``a`` of the sign of its weight: a monotone map, so the extremes map to the extremes
    (swapped where the weight is negative). They are mapped by the module's own kernel
    (``F.batch_norm`` on the extremes alone), which rounds each value as it did in the full
    tensor. NaN in the statistics stays NaN, so the NaN check still names the BatchNorm. None
    where the module is not such a map (training mode, no running statistics).
    """
    rm, rv = getattr(module, "running_mean", None), getattr(module, "running_var", None)
    low, high = range_nc
    if module.training or rm is None or rv is None or low.dim() != 2 or low.shape[1] != rm.numel():
        return None
    spatial = {nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3}[type(module)]
    extremes = torch.cat([low, high]).reshape(2 * low.shape[0], low.shape[1], *([1] * spatial)).to(dtype)
    mapped = torch.nn.functional.batch_norm(extremes, rm, rv, module.weight, module.bias, False, 0.0, module.eps)
    mapped = mapped.float().reshape(2, *low.shape)
    flip = (module.weight.detach().float() < 0) if module.weight is not None else torch.zeros(low.shape[1], dtype=torch.bool)
    return torch.where(flip, mapped[1], mapped[0]), torch.where(flip, mapped[0], mapped[1])


def _derived_range(
    module: nn.Module,
    seen_input: _Reduced | None,
    out: torch.Tensor,
    clamp_of: Callable[[nn.Module], tuple[float | None, float | None]] | None,
    affine_of: Callable[..., tuple[torch.Tensor, torch.Tensor] | None] | None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The output's per-(probe, channel) range from its input's, where that is exact: a
    clamp-like module or an eval BatchNorm, elementwise, its input reduced just before, and
    only our own hooks around it. None where it must be measured."""
    if (
        (clamp_of is None and affine_of is None)
        or seen_input is None
        or seen_input.range_nc is None
        or tuple(out.shape) != seen_input.shape
        or not _only_passive_hooks(module)
    ):
        return None
    if clamp_of is not None:
        # The limits as the module's dtype holds them: a half Hardtanh(-0.1, 0.1) clamps at
        # -0.09998, and rounding is monotonic, so this is the exact range.
        lo, hi = (None if v is None else float(torch.tensor(v, dtype=out.dtype)) for v in clamp_of(module))
        low, high = seen_input.range_nc
        return low.clamp(min=lo, max=hi), high.clamp(min=lo, max=hi)
    return affine_of(module, seen_input.range_nc, out.dtype)


def _only_passive_hooks(module: nn.Module) -> bool:
    """Whether every forward (pre-)hook on ``module``, and every global one, is one of ours
    that never changes inputs or outputs: otherwise a user's hook (steering, fake quantisation)
    may have changed what the module returned, and its range must be measured, not derived."""
    for hooks in (
        module._forward_pre_hooks,
        module._forward_hooks,
        module_globals._global_forward_pre_hooks,
        module_globals._global_forward_hooks,
    ):
        for hook in hooks.values():
            if not is_passive_hook(hook):
                return False
    return True


def _version_of(t: torch.Tensor) -> int | None:
    """The tensor's in-place version counter; None for inference tensors, which have none."""
    try:
        return int(t._version)
    except RuntimeError:
        return None


def run_forward(model: nn.Module, inputs: tuple[torch.Tensor, ...], *, where: str = "") -> Any:
    """Call the model, turning any exception into a :class:`ForwardError` that names it."""
    try:
        return model(*inputs)
    except ForwardError:
        raise
    except Exception as exc:  # the user's model may raise anything
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs if isinstance(t, torch.Tensor))
        raise ForwardError(
            f"the model's forward pass failed{where} on input {shapes}: {type(exc).__name__}: "
            + " ".join(str(exc).split())
        ) from exc
