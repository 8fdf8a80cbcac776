"""Dataset examples: what each channel of a layer responds to, over a probe set of any size.

A layer's outputs over the set are reduced, batch by batch inside a forward hook, to a
:class:`ExamplePartial`: per channel, the top-k examples by their maximum over positions (and
where that maximum is), counts, sum, maximum, whether the channel varies at all, and a
histogram of the per-example maxima on fixed bins. Its size is O(channels * (k + bins)), whatever the number of examples, and two of them
merge exactly (:func:`merge`), so one process reducing the whole set and many processes each
reducing a shard and merging give the same result: the same top-k, counts, ranges and
histograms, and sums equal up to their last bits.

NaN values are left out of everything but their own count (``nan_count``): the per-example
maximum, the top-k, the maximum, whether the channel varies, the sum and mean are over the
other values. An
(example, channel) whose values are all NaN has no maximum: it never enters the top-k, it adds
nothing to ``maxima_sum`` and counts in the histogram's first bin. Infinities are ordinary
values: ``-inf < every finite value < +inf`` in the top-k and the maximum; they make the sum
(and so the mean) infinite, or NaN when both signs occur.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .activations import NUMPY_FLOATS
from .tracing import passive_hook, suspend_recording

# --------------------------------------------------------------------------------------------
# The fixed histogram bins of the per-example maximum
#
# Data-independent, so histograms from different processes (or layers' different batches) merge
# by adding counts:
#   bin 0                  the example has no maximum (all its values in the channel are NaN)
#   bin 1                  maximum < 0 (-inf included)
#   bin 2                  maximum == 0 (a dead ReLU's usual value)
#   bin 3                  0 < maximum < 1e-4 (underflow)
#   bins 4 .. 83           [10**(j/10), 10**((j+1)/10)) for j = -40 .. 39: ten per decade, 1e-4 to 1e4
#   bin 84                 maximum >= 1e4 (+inf included; overflow)

#: Edges of the log-spaced positive bins: 10 per decade from 1e-4 to 1e4, 81 edges.
POSITIVE_EDGES = 10.0 ** (np.arange(-40, 41, dtype=np.float64) / 10.0)
BIN_NO_MAXIMUM = 0
BIN_NEGATIVE = 1
BIN_ZERO = 2
#: The first positive bin (underflow); the positive bins end with the overflow bin.
BIN_POSITIVE = 3
HISTOGRAM_BINS = BIN_POSITIVE + len(POSITIVE_EDGES) + 1  # underflow, 80 log bins, overflow: 85

#: The example index of an empty top-k slot (fewer than k examples seen so far).
EMPTY = -1

_INT64_MAX = np.iinfo(np.int64).max
_INT32_MAX = int(np.iinfo(np.int32).max)


#: Edges for one ``searchsorted`` over every bin but "no maximum": a value's count of edges at or
#: below it is its bin less one (0 and the smallest positive float split "zero" from "underflow").
_ALL_EDGES = np.concatenate([[0.0, np.nextafter(0.0, 1.0)], POSITIVE_EDGES])


def histogram_bins(maxima: np.ndarray, has_maximum: np.ndarray | None = None) -> np.ndarray:
    """The fixed bin (see the table above) of each per-example maximum, as int64;
    ``has_maximum`` False (all NaN) puts it in the "no maximum" bin (None: every one has one)."""
    bins = np.searchsorted(_ALL_EDGES, maxima, side="right") + BIN_NEGATIVE
    if has_maximum is not None:
        bins[~has_maximum] = BIN_NO_MAXIMUM
    return bins


def position_to_yx(position: Any, spatial_shape: Sequence[int]) -> tuple[Any, ...]:
    """A flat spatial position (an int or an array of them) as coordinates in ``spatial_shape``:
    ``(y, x)`` for an output of spatial shape ``(H, W)``; ``()`` for an ``(N, C)`` output."""
    if len(spatial_shape) == 0:
        return ()
    return tuple(np.unravel_index(position, tuple(spatial_shape)))


# --------------------------------------------------------------------------------------------
# The mergeable partial result


@dataclass
class ExamplePartial:
    """One layer's reduction over a set of examples, per channel; merge two with :func:`merge`.

    ``top_values[c]`` are channel ``c``'s k largest per-example maxima, in descending order,
    ties broken by the smaller example index; ``top_indices[c]`` their example indices
    (:data:`EMPTY` in slots not filled yet, whose value is ``-inf``), and ``top_positions[c]``
    the flat spatial position of the maximum in that example (the first on ties; see
    :func:`position_to_yx`).
    """

    k: int
    top_values: np.ndarray  # float64 (C, k): exact, every supported dtype fits in float64
    # int32, as the histogram: the partial lives through the whole pass for every channel of
    # every layer (ResNet-50: 26,560 channels, 24 MB in int64 against 13.5 MB), and no set or
    # feature map comes near 2**31 examples or positions.
    top_indices: np.ndarray  # int32 (C, k)
    top_positions: np.ndarray  # int32 (C, k)
    examples: int  # examples reduced (each counts in every channel)
    values: int  # values per channel: examples * positions
    nan_count: np.ndarray  # int64 (C,)
    zero_count: np.ndarray  # int64 (C,): exact zeros (-0.0 included)
    total: np.ndarray  # float64 (C,): sum of the non-NaN values
    # bool (C,): two different non-NaN values seen (-0.0 and 0.0 are equal). Not the minimum:
    # it is found from the maxima and one value per row, without a pass over the activation
    # for every channel that varies between examples (nearly all of them).
    varies: np.ndarray
    maximum: np.ndarray  # float64 (C,): -inf before any non-NaN value
    maxima_sum: np.ndarray  # float64 (C,): sum over examples of the per-example maximum
    histogram: np.ndarray  # int32 (C, HISTOGRAM_BINS): the per-example maxima on the fixed bins
    spatial_shape: tuple[int, ...] | None = None  # None until the first update

    @classmethod
    def empty(cls, channels: int, k: int) -> "ExamplePartial":
        """The reduction of no examples: the identity of :func:`merge`."""
        if channels < 1 or k < 1:
            raise ValueError(f"channels and k must be positive, got {channels} and {k}")
        return cls(
            k=k,
            top_values=np.full((channels, k), -np.inf),
            top_indices=np.full((channels, k), EMPTY, dtype=np.int32),
            top_positions=np.zeros((channels, k), dtype=np.int32),
            examples=0,
            values=0,
            nan_count=np.zeros(channels, dtype=np.int64),
            zero_count=np.zeros(channels, dtype=np.int64),
            total=np.zeros(channels),
            varies=np.zeros(channels, dtype=bool),
            maximum=np.full(channels, -np.inf),
            maxima_sum=np.zeros(channels),
            histogram=np.zeros((channels, HISTOGRAM_BINS), dtype=np.int32),
        )

    @property
    def channels(self) -> int:
        return int(self.top_values.shape[0])

    def maxima_count(self) -> np.ndarray:
        """Per channel, the examples that have a maximum (not all NaN)."""
        return self.examples - self.histogram[:, BIN_NO_MAXIMUM]

    def means(self) -> np.ndarray:
        """Per channel, the mean of its non-NaN values over the set (NaN where there are none)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.total / (self.values - self.nan_count)

    def mean_maxima(self) -> np.ndarray:
        """Per channel, the mean over examples of the per-example maximum."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.maxima_sum / self.maxima_count()

    def zero_fractions(self) -> np.ndarray:
        """Per channel, the fraction of all its values that are exactly zero."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.zero_count / np.float64(self.values)

    def dead_channels(self) -> np.ndarray:
        """Indices of the channels constant over the set: one value (NaN aside) in every
        position of every example. A channel with no value but NaN is not constant."""
        return np.flatnonzero(~self.varies & (self.maxima_count() > 0))

    def nbytes(self) -> int:
        """Bytes held by the arrays: O(C * (k + bins)), independent of the number of examples."""
        return sum(
            a.nbytes
            for a in (self.top_values, self.top_indices, self.top_positions, self.nan_count, self.zero_count,
                      self.total, self.varies, self.maximum, self.maxima_sum, self.histogram)
        )

    def top_yx(self, channel: int) -> list[tuple[int, float, tuple[int, ...]]]:
        """Channel ``channel``'s filled top-k slots as (example index, value, coordinates)."""
        shape = self.spatial_shape or ()
        out = []
        for value, index, position in zip(self.top_values[channel], self.top_indices[channel], self.top_positions[channel]):
            if index != EMPTY:
                out.append((int(index), float(value), tuple(int(v) for v in position_to_yx(int(position), shape))))
        return out


def _select_top(
    values: np.ndarray, indices: np.ndarray, positions: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the k best (value, index, position) candidates: larger value first, then smaller
    example index; empty slots last. Also the column each came from (to tell new entries)."""
    empty = indices == EMPTY
    # lexsort's last key is the primary one: filled before empty, then -value, then index.
    order = np.lexsort((np.where(empty, _INT64_MAX, indices), -values, empty), axis=1)[:, :k]
    take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    return take(values), take(indices), take(positions), order


def merge(a: ExamplePartial, b: ExamplePartial) -> ExamplePartial:
    """The reduction of the union of two disjoint sets of examples, from their reductions.

    Exact and symmetric for the top-k, counts, maxima, variation and histograms; the float64 sums differ
    from another merge order only in their last bits. The example indices of the two must be
    distinct (shards of one set): an example reduced twice would count twice.
    """
    if a.channels != b.channels or a.k != b.k:
        raise ValueError(f"cannot merge {a.channels} channels top-{a.k} with {b.channels} channels top-{b.k}")
    if a.spatial_shape is not None and b.spatial_shape is not None and a.spatial_shape != b.spatial_shape:
        raise ValueError(f"cannot merge spatial shapes {a.spatial_shape} and {b.spatial_shape}")
    values, indices, positions, _ = _select_top(
        np.concatenate([a.top_values, b.top_values], axis=1),
        np.concatenate([a.top_indices, b.top_indices], axis=1),
        np.concatenate([a.top_positions, b.top_positions], axis=1),
        a.k,
    )
    with np.errstate(invalid="ignore"):  # +inf + -inf: a NaN sum, as documented
        total, maxima_sum = a.total + b.total, a.maxima_sum + b.maxima_sum
    return ExamplePartial(
        k=a.k,
        top_values=values,
        top_indices=indices,
        top_positions=positions,
        examples=a.examples + b.examples,
        values=a.values + b.values,
        nan_count=a.nan_count + b.nan_count,
        zero_count=a.zero_count + b.zero_count,
        total=total,
        # Each side constant (or empty) so far, the union varies where both hold values and
        # their one values differ.
        varies=a.varies | b.varies | ((a.maxima_count() > 0) & (b.maxima_count() > 0) & (a.maximum != b.maximum)),
        maximum=np.maximum(a.maximum, b.maximum),
        maxima_sum=maxima_sum,
        histogram=a.histogram + b.histogram,
        spatial_shape=a.spatial_shape if a.spatial_shape is not None else b.spatial_shape,
    )


# --------------------------------------------------------------------------------------------
# Folding one batch in


#: Values per block of the CPU zero count: a block's mask stays in the core's cache.
_ZERO_BLOCK = 1 << 18
#: Each thread's mask buffer, kept: a fresh one per layer and batch cost more than the count
#: at batch 4 (reports may run in several threads at once, hence one per thread).
_MASKS = threading.local()


def _zero_counts(flat: torch.Tensor) -> torch.Tensor:
    """Exact zeros (``-0.0`` included; NaN is not zero) per (example, channel) row of ``flat``
    ``(N, C, P)``, as int32 ``(N, C)``.

    The zero count was the costliest of the reduction's passes: a mask the size of the
    activation, written to memory and read back (58 ms on a 32 x 256 x 56 x 56 output against
    6 ms for its sum). On the CPU the rows go through numpy in blocks whose mask stays in cache,
    and a block is counted row by row only when one fast count of the whole block finds a zero:
    most outputs reduced here (a convolution's, before its activation) hold none, and the count
    by rows was most of the pass's time (12-15 ms there, against 4-7 ms for the block test).
    Elsewhere the mask's bytes are summed in int32, three times faster than ``count_nonzero``
    or a bool sum (which goes through int64)."""
    if flat.device.type != "cpu" or flat.dtype not in NUMPY_FLOATS:
        return flat.eq(0).view(torch.uint8).sum(dim=2, dtype=torch.int32)
    n, c, p = flat.shape
    rows = flat.reshape(n * c, p).numpy()  # a view where the output is contiguous
    out = np.zeros(n * c, dtype=np.int32)
    step = max(1, _ZERO_BLOCK // max(p, 1))
    buffer = getattr(_MASKS, "buffer", None)
    if buffer is None or buffer.size < min(step, n * c) * p:
        buffer = _MASKS.buffer = np.empty(max(_ZERO_BLOCK, min(step, n * c) * p), dtype=bool)
    mask = buffer[: min(step, n * c) * p].reshape(min(step, n * c), p)
    for start in range(0, n * c, step):
        block = rows[start : start + step]
        np.equal(block, 0, out=mask[: len(block)])
        if np.count_nonzero(mask[: len(block)]):
            out[start : start + len(block)] = np.count_nonzero(mask[: len(block)], axis=1)
    return torch.from_numpy(out.reshape(n, c))


def update(partial: ExamplePartial, output: torch.Tensor, example_indices: Any) -> None:
    """Fold one batch's layer output ``(N, C, *spatial)`` (or ``(N, C)``: one position) into
    ``partial``, in place. ``example_indices``: the N examples' indices in the whole set.

    Three cheap passes over the activation (maximum, sum, zero count: :func:`_zero_counts`), each a
    per-(example, channel) reduction; everything after works on (N, C) numbers. The position
    of a maximum is searched only for the (example, channel) pairs that enter the top-k, and
    NaN is dealt with only in the rows that hold one. An empty output (a zero-size spatial
    dimension) changes nothing.
    """
    x = output.detach()
    if x.dim() < 2 or not x.is_floating_point():
        raise ValueError(f"expected a floating (N, C, ...) output, got {tuple(x.shape)} {x.dtype}")
    n, c = int(x.shape[0]), int(x.shape[1])
    if c != partial.channels:
        raise ValueError(f"output has {c} channels, the reduction {partial.channels}")
    spatial = tuple(int(s) for s in x.shape[2:])
    if partial.spatial_shape is not None and spatial != partial.spatial_shape:
        raise ValueError(f"spatial shape {spatial} differs from the earlier {partial.spatial_shape}")
    indices = np.asarray(example_indices.cpu() if isinstance(example_indices, torch.Tensor) else example_indices, dtype=np.int64).reshape(-1)
    if len(indices) != n:
        raise ValueError(f"{len(indices)} example indices for a batch of {n}")
    if x.numel() == 0:
        return
    if indices.min() < 0 or indices.max() > _INT32_MAX:
        raise ValueError(f"example indices must be from 0 to {_INT32_MAX}")
    if math.prod(spatial) > _INT32_MAX:
        raise ValueError(f"a feature map of {math.prod(spatial)} positions is over the {_INT32_MAX} the positions are kept in")
    partial.spatial_shape = spatial

    # A view, not a copy, for contiguous and channels-last outputs alike.
    flat = x.flatten(2) if x.dim() > 2 else x.unsqueeze(2)
    p = int(flat.shape[2])
    # Half types are summed in float32 (a float16 sum of 3136 values can overflow).
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    high = flat.amax(dim=2)  # NaN propagates: such rows are redone below
    sums = flat.sum(dim=2, dtype=acc)
    zeros = _zero_counts(flat)
    # Below, every step works on (N, C) numbers, and a batch costs each layer a fixed number of
    # small operations: at the CPU's best batch sizes (4-8, whose activations stay in cache)
    # they are most of the reduction's time, so each is done only where it can change anything.
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        high_np, sums_np = high.numpy(), sums.numpy()  # views: no copy, no sync
    else:  # one transfer (a single sync on an accelerator); float64 holds every supported value
        small = torch.stack([high.double(), sums.double()]).cpu().numpy()
        high_np, sums_np = small[0], small[1]
    zeros_np = zeros.numpy() if zeros.device.type == "cpu" else zeros.cpu().numpy()

    has_maximum = None  # every (example, channel) has a maximum: no NaN row
    nan_rows = rows_varying = None  # the rows holding a NaN, and which of them vary (exactly)
    if np.isnan(high_np).any():
        rows_n, rows_c = np.nonzero(np.isnan(high_np))
        rn, rc = torch.as_tensor(rows_n, device=x.device), torch.as_tensor(rows_c, device=x.device)
        rows = flat[rn, rc]
        is_nan = torch.isnan(rows)
        row_high = rows.masked_fill(is_nan, -torch.inf).amax(dim=1)  # -inf: all NaN
        high[rn, rc] = row_high
        row_low = rows.masked_fill(is_nan, torch.inf).amin(dim=1)
        row_sums = rows.masked_fill(is_nan, 0).sum(dim=1, dtype=acc)
        nan_counts = is_nan.sum(dim=1).cpu().numpy()
        high_np, sums_np = np.array(high_np, dtype=np.float64), np.array(sums_np, dtype=np.float64)
        high_np[rows_n, rows_c] = row_high.double().cpu().numpy()
        sums_np[rows_n, rows_c] = row_sums.double().cpu().numpy()
        np.add.at(partial.nan_count, rows_c, nan_counts)
        has_maximum = np.ones((n, c), dtype=bool)
        has_maximum[rows_n, rows_c] = nan_counts < p
        nan_rows, rows_varying = np.zeros((n, c), dtype=bool), np.zeros((n, c), dtype=bool)
        nan_rows[rows_n, rows_c] = True
        rows_varying[rows_n, rows_c] = (row_low < row_high).cpu().numpy()  # all NaN: inf < -inf, False

    # Whether a channel varies is looked at only while one is not known to (see _fold_variation).
    seen = None if partial.varies.all() else partial.maxima_count() > 0  # before this batch
    partial.examples += n
    partial.values += n * p
    if zeros_np.any():
        partial.zero_count += zeros_np.sum(axis=0)
    with np.errstate(invalid="ignore"):  # +inf and -inf in one channel: a NaN sum, as documented
        partial.total += sums_np.sum(axis=0, dtype=np.float64)
        partial.maxima_sum += (high_np if has_maximum is None else np.where(has_maximum, high_np, 0.0)).sum(axis=0, dtype=np.float64)
    bins = histogram_bins(high_np, has_maximum) + _bin_offsets(c)  # (N, C): each in the flat histogram
    if n <= 8:  # a row's C bins are distinct (one per channel): added in place, row by row
        if not partial.histogram.flags.c_contiguous:  # reshape would copy, and the counts be lost
            partial.histogram = np.ascontiguousarray(partial.histogram)
        flat_histogram = partial.histogram.reshape(-1)  # a view
        for row in bins:
            flat_histogram[row] += 1
    else:  # counted in one go (C x 85 bins): cheaper than N rows past a few
        partial.histogram += np.bincount(bins.reshape(-1), minlength=c * HISTOGRAM_BINS).reshape(c, HISTOGRAM_BINS)
    if seen is not None:
        _fold_variation(partial, flat, high, high_np, has_maximum, nan_rows, rows_varying, seen)
    partial.maximum = np.maximum(partial.maximum, high_np.max(axis=0))

    # The top-k: the kept k and this batch's N candidates per channel, best k kept. Only the
    # channels where a candidate can enter are sorted: one with a maximum at least the k-th
    # kept value (an empty slot's is -inf). Once the set is well under way that is a few
    # channels per batch, and the sort of every channel was most of the reduction's fixed cost.
    k = partial.k
    candidates = high_np.T if has_maximum is None else np.where(has_maximum.T, high_np.T, -np.inf)  # (C, N)
    reaching = candidates >= partial.top_values[:, -1:]
    if has_maximum is not None:
        reaching &= has_maximum.T
    hopeful = np.flatnonzero(reaching.any(axis=1))
    if len(hopeful) == 0:
        return
    entrants = np.broadcast_to(indices[None, :], (len(hopeful), n))
    if has_maximum is not None:
        entrants = np.where(has_maximum.T[hopeful], entrants, EMPTY)
    values, top_indices, positions, order = _select_top(
        np.concatenate([partial.top_values[hopeful], candidates[hopeful]], axis=1),
        np.concatenate([partial.top_indices[hopeful], entrants], axis=1),
        np.concatenate([partial.top_positions[hopeful], np.zeros((len(hopeful), n), dtype=np.int64)], axis=1),
        k,
    )
    new_row, new_slot = np.nonzero((order >= k) & (top_indices != EMPTY))
    if len(new_row):
        new_n, new_c = order[new_row, new_slot] - k, hopeful[new_row]
        if p == 1:
            positions[new_row, new_slot] = 0
        else:
            rn = torch.as_tensor(new_n, device=x.device)
            rc = torch.as_tensor(new_c, device=x.device)
            rows = flat[rn, rc]  # only the rows that entered: at most C * k
            if nan_rows is None:
                # The first position of the maximum: argmax gives the first of equal values
                # (-0.0 and 0.0 among them), in one pass where a comparison mask took three.
                first = rows.argmax(dim=1)
            else:  # a NaN is argmax's maximum: the first position equal to the maximum instead
                first = (rows == high[rn, rc].unsqueeze(1)).to(torch.uint8).argmax(dim=1)
            positions[new_row, new_slot] = first.cpu().numpy()
    # New arrays, not writes into the old: a caller may hold the partial's earlier arrays.
    for name, chosen in (("top_values", values), ("top_indices", top_indices), ("top_positions", positions)):
        updated = getattr(partial, name).copy()
        updated[hopeful] = chosen
        setattr(partial, name, updated)


_OFFSETS: dict[int, np.ndarray] = {}


def _bin_offsets(channels: int) -> np.ndarray:
    """``c * HISTOGRAM_BINS`` for each channel ``c``, as a (1, C) row: where each channel's bins
    start in the flat histogram (kept per channel count: every layer and batch adds it)."""
    offsets = _OFFSETS.get(channels)
    if offsets is None:
        offsets = _OFFSETS[channels] = (np.arange(channels, dtype=np.int64) * HISTOGRAM_BINS)[None, :]
    return offsets


def _fold_variation(
    partial: ExamplePartial,
    flat: torch.Tensor,
    high: torch.Tensor,
    high_np: np.ndarray,
    has_maximum: np.ndarray | None,
    nan_rows: np.ndarray | None,
    rows_varying: np.ndarray | None,
    seen: np.ndarray,
) -> None:
    """Mark the channels this batch shows to vary (``partial.maximum`` not yet updated, ``seen``
    its channels with a value before the batch). Only channels not yet known to vary are
    looked at: once every channel of a layer varies (nearly always after its first batch) this
    is not called at all. A channel varies where two of the batch's maxima differ, where one
    differs from the one value seen before, or where a row varies within itself: its first
    value differs from its maximum, or (only for rows nothing else decided) its minimum does."""
    open_c = np.flatnonzero(~partial.varies)
    block = high_np[:, open_c]
    valid = np.ones(block.shape, dtype=bool) if has_maximum is None else has_maximum[:, open_c]
    in_batch = valid.any(axis=0)
    top = np.where(valid, block, -np.inf).max(axis=0)
    bottom = np.where(valid, block, np.inf).min(axis=0)
    varies = (in_batch & (top != bottom)) | (in_batch & seen[open_c] & (top != partial.maximum[open_c]))
    oc = torch.as_tensor(open_c, device=flat.device)
    first = flat[:, oc, 0].double().cpu().numpy()
    clean = valid if nan_rows is None else valid & ~nan_rows[:, open_c]  # rows without a NaN
    row_varies = clean & (first != block)
    if rows_varying is not None:
        row_varies |= rows_varying[:, open_c]
    varies |= row_varies.any(axis=0)
    # Rows of a channel still constant whose first value is their maximum: their minimum tells
    # (NaN rows were decided exactly). In practice only constant channels get here.
    undecided_n, undecided_j = np.nonzero(~varies[None, :] & clean & ~row_varies)
    if len(undecided_n):
        un = torch.as_tensor(undecided_n, device=flat.device)
        uc = torch.as_tensor(open_c[undecided_j], device=flat.device)
        differs = (flat[un, uc].amin(dim=1) != high[un, uc]).cpu().numpy()
        varies[undecided_j[differs]] = True
    if varies.any():
        marked = partial.varies.copy()
        marked[open_c[varies]] = True
        partial.varies = marked


# --------------------------------------------------------------------------------------------
# Hooks on a model


class ExampleReducer:
    """Reduce chosen modules' outputs over many forward batches into :class:`ExamplePartial`.

    ::

        reducer = ExampleReducer(["layer1", "layer2"], k=9)
        with torch.no_grad(), reducer.attached(model):
            for batch, indices in loader:
                reducer.next_batch(indices)  # optional: else examples are numbered 0, 1, 2, ...
                model(batch)
        reducer.partials  # {"layer1": ExamplePartial, ...}

    Only the first call of each module in a forward is reduced (a module reused inside one
    forward would otherwise count its examples twice). The hooks keep no activation: each
    output is reduced to its (N, C) numbers inside the hook and let go. A forward starts
    with a call of the model given to :meth:`attached`: call that model, not a submodule.
    """

    def __init__(self, names: Sequence[str], *, k: int = 9) -> None:
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        self.names = list(dict.fromkeys(names))
        self.k = k
        self.partials: dict[str, ExamplePartial] = {}
        #: Module path -> why its output was not reduced (not a floating (N, C, ...) tensor).
        self.skipped: dict[str, str] = {}
        self._next_index = 0
        self._pending: np.ndarray | None = None
        self._batch: np.ndarray | None = None
        self._called: set[str] = set()

    def next_batch(self, example_indices: Any) -> None:
        """The example indices of the next forward's batch (its N examples, in order)."""
        self._pending = np.asarray(
            example_indices.cpu() if isinstance(example_indices, torch.Tensor) else example_indices, dtype=np.int64
        ).reshape(-1)

    @contextmanager
    def attached(self, model: nn.Module) -> Iterator["ExampleReducer"]:
        """Hooks on ``model`` for the block; removed on leaving it, also on an error."""
        modules = dict(model.named_modules())
        missing = [name for name in self.names if name not in modules]
        if missing:
            raise KeyError(f"no module named {', '.join(map(repr, missing))} in the model")
        handles = []
        try:
            # A new forward of the whole model: every module's first call is ahead again.
            handles.append(model.register_forward_pre_hook(passive_hook(self._start_forward)))
            for name in self.names:
                handles.append(modules[name].register_forward_hook(self._make_hook(name)))
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self._batch = None
            self._called.clear()

    def _start_forward(self, module: nn.Module, inputs: Any) -> None:
        self._called.clear()
        self._batch = self._pending
        self._pending = None

    def _indices_for(self, n: int) -> np.ndarray:
        if self._batch is None:  # numbered on from the last batch's
            self._batch = np.arange(self._next_index, self._next_index + n, dtype=np.int64)
        if len(self._batch):
            self._next_index = max(self._next_index, int(self._batch.max()) + 1)
        return self._batch

    def _make_hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if name in self._called:
                return
            self._called.add(name)
            if not isinstance(output, torch.Tensor) or output.dim() < 2 or not output.is_floating_point():
                kind = f"{tuple(output.shape)} {output.dtype}" if isinstance(output, torch.Tensor) else type(output).__name__
                self.skipped.setdefault(name, f"output is not a floating (N, C, ...) tensor: {kind}")
                return
            with suspend_recording(), torch.no_grad():
                partial = self.partials.get(name)
                if partial is None:
                    partial = self.partials[name] = ExamplePartial.empty(int(output.shape[1]), self.k)
                update(partial, output, self._indices_for(int(output.shape[0])))

        return passive_hook(hook)
