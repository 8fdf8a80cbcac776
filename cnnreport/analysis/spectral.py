"""Layer quality without data: the power-law exponent alpha of each layer's weight spectrum.

WeightWatcher's method (Martin & Mahoney; the ``weightwatcher`` package 0.7.7, ``analyze()``
with its defaults), in torch and batched, so that the numbers are the package's own:

- **Layers**: every ``nn.Linear`` and convolution. A convolution's weight
  ``(out, in/groups, *kernel)`` is cut into one ``out x in`` matrix per kernel position
  (``rf`` of them, ``rf = prod(kernel)``), and their eigenvalues are pooled into one
  spectrum (ww: ``pool=True``). A linear layer is one matrix.
- **Eigenvalues**: of ``W^T W`` for each matrix (the squared singular values), in float64,
  times 1/2 for a convolution (ww's ``conv2d_norm``: each slice scaled by ``sqrt(1/2)``).
  All the slices of a layer go through one batched ``eigvalsh``. Those above ``1e-5``
  (ww's ``EVALS_THRESH``) are the layer's empirical spectral density (ESD).
- **Layers ww leaves out**, left out here with the reason: fewer than 8 or more than 15,000
  eigenvalues in the pool (``M * rf``, ww's ``min_evals`` / ``max_evals``, ``M`` the matrix's
  smaller side) or a matrix side over 50,000 (``max_N``).
- **Fit** (ww's own ``WWFit``, its default since 0.7): every eigenvalue but the largest is a
  candidate ``xmin``; for each, the continuous power-law maximum-likelihood exponent over the
  ``n`` eigenvalues ``x >= xmin`` is ``alpha = 1 + n / sum(log(x / xmin))`` (Clauset, Shalizi
  & Newman 2009), and the Kolmogorov-Smirnov distance between the fitted CDF and the tail's
  is ``D = max_k |1 - (x_k / xmin)^(1 - alpha) - k / n|`` (``k = 0 .. n-1``, the tail in
  ascending order). The candidate with the smallest ``D`` wins (the first, on a tie). With
  fewer than 20 eigenvalues, ww's small-sample variant: the bias-corrected
  ``alpha = 1 + (n - 1) / sum(...)``, tails of at least 8 eigenvalues, chosen by
  ``D - 0.868 / sqrt(n)``.

The xmin scan is one matrix of candidates x tail positions, done in row blocks of bounded
memory, so a layer of ``N`` eigenvalues costs ``N^2 / 2`` exponentials and no Python loop.

Reading (ww's): alpha from about 2 to 6 is a well-trained layer; below 2 possibly over-fitted;
large values (above 6) an untrained or random one. ``ReportOptions.spectral_alpha_low`` and
``spectral_alpha_high`` set the band; a layer outside it gets an info alert when its spectrum
has at least ``spectral_min_eigenvalues`` eigenvalues (50: a smaller one's alpha is mostly noise).

Nothing here runs the model: only its weights are read.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import nn

from ..capture.passes import single_threaded_torch
from ..datamodel import (
    ROOT_LABEL,
    Alert,
    AlertKind,
    LayerSpectrum,
    ReportOptions,
    Severity,
    section_id,
)
from ..model.modules import CONV_TYPES, module_type_name

#: Eigenvalues at or below this are not part of the spectrum (ww's ``EVALS_THRESH`` on CPU).
EVALS_THRESHOLD = 1e-5
#: ww's ``conv2d_norm``: each convolution slice is scaled by sqrt(1/2), its eigenvalues by 1/2.
CONV_EIGEN_SCALE = 0.5
#: ww's ``min_evals`` and ``max_evals`` on the pooled count ``M * rf``, and ``max_N``.
MIN_EVALS = 8
MAX_EVALS = 15_000
MAX_N = 50_000
#: Below this many eigenvalues ww fits with its small-sample variant (``SMALL_N_CUTOFF``).
SMALL_N = 20
#: The small-sample variant's shortest tail and its tail-size bonus per 1/sqrt(n).
SMALL_N_MIN_TAIL = 8
SMALL_N_BONUS = 0.868
#: Elements of one block of the xmin scan: 512 KB of float64, which stays in a core's cache
#: through the block's few passes (16 MB blocks took twice as long).
SCAN_BLOCK = 1 << 16
#: Elements of one float64 block of a layer's weight while its Gram matrices are summed.
GRAM_BLOCK = 1 << 23
#: Above this largest eigenvalue, float64 rounding in W^T W (about 1e-16 of it) would reach
#: the 1e-5 threshold's digits: the spectrum is taken from singular values instead.
GRAM_SAFE_MAX = 1e6

LINEAR_TYPES = (nn.Linear,)
_TYPE_NAMES = {t.__name__ for t in (*LINEAR_TYPES, *CONV_TYPES)}


@dataclass(frozen=True)
class PowerLawFit:
    """A fitted power law: its exponent, where its tail starts, and how well it fits."""

    alpha: float
    xmin: float
    ks_distance: float
    tail: int  # eigenvalues >= xmin
    count: int  # eigenvalues fitted


# --------------------------------------------------------------------------------------------
# Weight matrices and their eigenvalues


def weight_slices(weight: torch.Tensor) -> torch.Tensor:
    """A layer's weight as a stack of matrices, ``(rf, out, in)``: one per kernel position of a
    convolution (``rf = prod(kernel)``), the matrix itself (``rf = 1``) for a linear layer.

    A view where it can be: no copy, no change of dtype."""
    if weight.ndim < 2:
        raise ValueError(f"a weight matrix has at least 2 dimensions, got shape {tuple(weight.shape)}")
    out_ch, in_ch = weight.shape[:2]
    return weight.reshape(out_ch, in_ch, -1).permute(2, 0, 1)


def _gram(slices: torch.Tensor) -> torch.Tensor:
    """``A^T A`` in float64 for each ``A`` of ``slices`` ``(rf, a, b)``, the smaller side
    kept (``(rf, min, min)``), summed over blocks of the longer side so that only a block of
    the weight is ever in float64 (a VGG classifier's 25088 x 4096 would be 822 MB)."""
    if slices.shape[1] < slices.shape[2]:
        slices = slices.transpose(1, 2)  # (rf, long, short)
    rf, long, short = slices.shape
    rows = max(1, GRAM_BLOCK // max(1, rf * short))
    gram = torch.zeros((rf, short, short), dtype=torch.float64, device=slices.device)
    for start in range(0, long, rows):
        block = slices[:, start : start + rows].to(torch.float64)
        gram.baddbmm_(block.transpose(1, 2), block)
    return gram


def pooled_eigenvalues(weight: torch.Tensor, *, conv: bool) -> torch.Tensor:
    """Every eigenvalue of ``W^T W`` over the layer's matrices (:func:`weight_slices`), times
    :data:`CONV_EIGEN_SCALE` for a convolution: float64, ascending, all of them (zeros too).

    One batched ``eigvalsh`` of the Gram matrices; where the spectrum is so large that their
    float64 rounding would reach the threshold's digits, one batched ``svdvals`` instead."""
    slices = weight_slices(weight.detach())
    with torch.no_grad():
        evals = torch.linalg.eigvalsh(_gram(slices)).reshape(-1)
        if evals.numel() and float(evals.max()) > GRAM_SAFE_MAX:
            evals = torch.linalg.svdvals(slices.to(torch.float64)).reshape(-1).square()
        evals = evals.clamp_min(0.0)
    if conv:
        evals = evals * CONV_EIGEN_SCALE
    return torch.sort(evals).values


# --------------------------------------------------------------------------------------------
# The power-law fit


def power_law_alpha(x: torch.Tensor, xmin: float) -> float:
    """The continuous power-law maximum-likelihood exponent of the values ``x >= xmin``:
    ``1 + n / sum(log(x / xmin))`` (Clauset et al. 2009, eq. 3.1)."""
    tail = x[x >= xmin].to(torch.float64)
    return 1.0 + tail.numel() / float(torch.log(tail / xmin).sum())


def _tail_log_sums(logx: torch.Tensor) -> torch.Tensor:
    """``s_i = sum_{k >= i} (log x_k - log x_i)`` for each i of sorted ``log x``.

    As a suffix sum of the non-negative terms ``(N - 1 - j) * (log x_{j+1} - log x_j)``, not
    as a total minus ``n * log x_i``: no cancellation between two large numbers."""
    count = logx.numel()
    steps = (logx[1:] - logx[:-1]) * torch.arange(count - 1, 0, -1, dtype=logx.dtype, device=logx.device)
    sums = torch.zeros_like(logx)
    sums[:-1] = torch.flip(torch.cumsum(torch.flip(steps, (0,)), 0), (0,))
    return sums


def _ks_distances(logx: torch.Tensor, alphas: torch.Tensor, candidates: int) -> torch.Tensor:
    """For each candidate i < ``candidates``: the KS distance between the power law of exponent
    ``alphas[i]`` from ``x_i`` and the empirical CDF of ``x_i .. x_{N-1}``,
    ``max_k |1 - (x_k / x_i)^(1 - alpha_i) - (k - i) / (N - i)|``.

    In blocks of rows small enough to stay in the core's cache, every step in place."""
    count = logx.numel()
    out = torch.empty(candidates, dtype=torch.float64, device=logx.device)
    positions = torch.arange(count, dtype=torch.float64, device=logx.device)
    inv_n = 1.0 / (count - positions[:candidates])  # 1 / n for each candidate's tail
    rows = max(1, SCAN_BLOCK // max(1, count))
    equal_tails = bool(torch.isinf(alphas[:candidates]).any())  # 0 * inf is NaN: those entries are 1 (see below)
    for start in range(0, candidates, rows):
        stop = min(candidates, start + rows)
        scale = inv_n[start:stop, None]
        # (x_k / x_i)^(1 - alpha) as exp((1 - alpha) * (log x_k - log x_i)); at x_k == x_i it
        # is 1 for every alpha, an infinite one (a tail of equal values) included.
        dev = (logx[None, start:] - logx[start:stop, None]).mul_(1.0 - alphas[start:stop, None])
        if equal_tails:
            dev.nan_to_num_(nan=0.0)
        # |1 - power - (k - i) / n| = |power + k / n - (1 + i / n)|
        dev.exp_().addcmul_(positions[None, start:], scale).sub_(1.0 + positions[start:stop, None] * scale).abs_()
        dev[:, : stop - start].triu_()  # positions before a candidate are not in its tail
        out[start:stop] = dev.amax(dim=1)
    return out


def fit_power_law(evals: torch.Tensor) -> PowerLawFit | None:
    """WeightWatcher's power-law fit of an ESD (see the module docstring); None when there is
    nothing to fit: fewer than 2 eigenvalues above :data:`EVALS_THRESHOLD`, or a small sample
    with no spread."""
    x = torch.sort(evals.detach().to(torch.float64).reshape(-1)).values
    x = x[x > EVALS_THRESHOLD]
    count = x.numel()
    if count < 2:
        return None
    logx = torch.log(x)
    sums = _tail_log_sums(logx)[:-1]  # every value but the largest is a candidate xmin
    tails = torch.arange(count, 1, -1, dtype=torch.float64, device=x.device)  # n = N - i
    if count >= SMALL_N:
        alphas = 1.0 + tails / sums  # a tail of equal values: n / 0 = inf, as numpy gives
        distances = _ks_distances(logx, alphas, count - 1)
        best = int(torch.argmin(distances))  # the first of equal minima, as numpy's
    else:
        alphas = 1.0 + (tails - 1.0) / sums
        distances = _ks_distances(logx, alphas, count - 1)
        valid = (tails >= SMALL_N_MIN_TAIL) & (sums > 1e-12)
        objective = torch.where(valid, distances - SMALL_N_BONUS / torch.sqrt(tails), torch.inf)
        if bool(torch.isfinite(objective).any()):
            best = int(torch.argmin(objective))
        else:  # no tail is long enough: the whole sample is the tail (ww does the same)
            if float(sums[0]) <= 1e-12:
                return None
            best = 0
    xmin = float(x[best])
    return PowerLawFit(
        alpha=float(alphas[best]),
        xmin=xmin,
        ks_distance=float(distances[best]),
        tail=int((x >= xmin).sum()),
        count=count,
    )


# --------------------------------------------------------------------------------------------
# The model's layers


def _analysed(module: nn.Module) -> bool:
    if isinstance(module, (*LINEAR_TYPES, *CONV_TYPES)):
        return True
    return isinstance(module, torch.jit.ScriptModule) and module_type_name(module) in _TYPE_NAMES


def _dims(weight: torch.Tensor, module: nn.Module, linear: bool) -> tuple[int, int, int]:
    """``(N, M, rf)`` as ww counts them for its size limits (``M * rf`` eigenvalues, side ``N``).

    A linear layer: its larger and smaller side, ``rf = 1``. A 2-D convolution, as ww's
    ``conv2D_Wmats`` leaves them for a PyTorch weight ``(out, in, kh, kw)``: ``(out, in)``,
    swapped once per kernel position when ``out < in`` (so ``(in, out)`` for an odd number of
    positions, ``(out, in)`` for an even one), and never swapped when ``out + in < kh + kw``,
    where ww reads the tensor the other way round and swaps back. Other convolutions (which ww
    does not cut into slices): their larger and smaller side."""
    if linear:
        return max(weight.shape), min(weight.shape), 1
    out_ch, in_ch = int(weight.shape[0]), int(weight.shape[1])
    rf = math.prod(int(k) for k in weight.shape[2:])
    if module_type_name(module) != "Conv2d" or weight.ndim != 4:
        return max(out_ch, in_ch), min(out_ch, in_ch), rf
    if out_ch + in_ch >= int(weight.shape[2]) + int(weight.shape[3]) and out_ch < in_ch and rf % 2 == 1:
        return in_ch, out_ch, rf
    return out_ch, in_ch, rf


def layer_spectrum(name: str, module: nn.Module) -> LayerSpectrum | None:
    """One layer's spectrum and fit; None when the module has no weight matrix to read
    (an uninitialised lazy module, a weight that is not a tensor)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or isinstance(weight, nn.parameter.UninitializedParameter) or weight.ndim < 2:
        return None
    kind = module_type_name(module)
    linear = kind == "Linear" or isinstance(module, LINEAR_TYPES)
    if weight.ndim != 2 and linear:
        return None
    big, small, rf = _dims(weight, module, linear)
    matrices = 1 if linear else rf
    def skipped(note: str) -> LayerSpectrum:
        return LayerSpectrum(name=name, type=kind, alpha=None, xmin=None, ks_distance=None, eigenvalues=0, tail=0, matrices=matrices, note=note)

    if weight.device.type == "meta":
        return skipped("weights on the meta device hold no values")
    if small * rf < MIN_EVALS:
        return skipped(f"{small * rf} eigenvalues: fewer than {MIN_EVALS} to fit")
    if small * rf > MAX_EVALS:
        return skipped(f"{small * rf:,} eigenvalues: more than {MAX_EVALS:,}, left out as WeightWatcher does")
    if big > MAX_N:
        return skipped(f"a side of {big:,}: over {MAX_N:,}, left out as WeightWatcher does")
    if not weight.is_floating_point():
        return skipped(f"{weight.dtype} weights: not floating point")
    if not bool(torch.isfinite(weight).all()):
        return skipped("NaN or Inf weights: no spectrum")
    try:
        evals = pooled_eigenvalues(weight, conv=not linear)
    except torch.linalg.LinAlgError as exc:  # LAPACK did not converge: say so, the report goes on
        return skipped(f"no eigenvalues: {str(exc).splitlines()[0][:120]}")
    fit = fit_power_law(evals)
    kept = int((evals > EVALS_THRESHOLD).sum())
    if fit is None:
        return LayerSpectrum(
            name=name, type=kind, alpha=None, xmin=None, ks_distance=None, eigenvalues=kept, tail=0, matrices=matrices,
            note=f"{kept} eigenvalue(s) above {EVALS_THRESHOLD:g}: too few, or too equal, to fit",
        )
    return LayerSpectrum(
        name=name, type=kind, alpha=fit.alpha, xmin=fit.xmin, ks_distance=fit.ks_distance, eigenvalues=fit.count, tail=fit.tail, matrices=matrices,
    )


def analysed_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The convolution and linear layers of ``model`` in definition order (a module reached by
    two paths once, by its first): the layers :func:`layer_spectrum` reads."""
    return [(name, module) for name, module in model.named_modules() if _analysed(module)]


def layer_spectra(model: nn.Module) -> list[LayerSpectrum]:
    """The spectrum of every convolution and linear layer of ``model``, in definition order;
    layers WeightWatcher would not fit are listed with ``alpha`` None and the reason in
    ``note``.

    One layer per worker thread, each on one core, the largest layers first: with torch's own
    thread team per call, the batched eigvalsh and the scan oversubscribed a busy machine's
    cores and took up to ten times as long (the report's sections do the same)."""
    layers = analysed_layers(model)
    by_size = sorted(layers, key=lambda item: -_weight_numel(item[1]))
    with single_threaded_torch(), ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        jobs = {name: pool.submit(layer_spectrum, name, module) for name, module in by_size}
        found = [jobs[name].result() for name, _ in layers]
    return [s for s in found if s is not None]


def _weight_numel(module: nn.Module) -> int:
    weight = getattr(module, "weight", None)
    return weight.numel() if isinstance(weight, torch.Tensor) and not isinstance(weight, nn.parameter.UninitializedParameter) else 0


def spectral_alerts(spectra: list[LayerSpectrum], options: ReportOptions, section_ids: set[str] = frozenset()) -> list[Alert]:
    """An info alert for each layer whose alpha lies outside ``[spectral_alpha_low,
    spectral_alpha_high]`` and whose spectrum has at least ``spectral_min_eigenvalues``
    eigenvalues, in definition order; linked to the layer's section when ``section_ids``
    holds it. The message gives the fit's standard error and tail size."""
    low, high = options.spectral_alpha_low, options.spectral_alpha_high
    alerts = []
    for s in spectra:
        if s.alpha is None or low <= s.alpha <= high or s.eigenvalues < options.spectral_min_eigenvalues:
            continue
        # The maximum-likelihood estimate's standard error, (alpha - 1) / sqrt(n) over the n
        # eigenvalues of the tail (Clauset et al. 2009, eq. 3.2): how far to trust the reading.
        fit = f"alpha {s.alpha:.2f} ± {(s.alpha - 1) / math.sqrt(max(s.tail, 1)):.2f} (a tail of {s.tail} of {s.eigenvalues} eigenvalues)"
        if s.alpha < low:
            message = f"{fit}, below {low:g}: the layer may be over-fitted (its weight spectrum's tail is unusually heavy)"
        else:
            message = f"{fit}, above {high:g}: the layer looks untrained or random (its weight spectrum has almost no heavy tail)"
        sid = section_id(s.name)
        alerts.append(
            Alert(
                kind=AlertKind.SPECTRAL_ALPHA,
                severity=Severity.INFO,
                layer=s.name or ROOT_LABEL,
                message=message,
                value=s.alpha,
                section_id=sid if sid in section_ids else "",
            )
        )
    return alerts


__all__ = [
    "EVALS_THRESHOLD",
    "analysed_layers",
    "PowerLawFit",
    "fit_power_law",
    "layer_spectra",
    "layer_spectrum",
    "pooled_eigenvalues",
    "power_law_alpha",
    "spectral_alerts",
    "weight_slices",
]
