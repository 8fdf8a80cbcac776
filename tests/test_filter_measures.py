"""The weights the filter checks read, and the dead and duplicate filters they find.

Filters are literal rows whose norms and cosines are worked out by hand (3-4-5 triangles,
rows of equal entries whose unit vectors are exact in binary), or random rows checked against
float64 cosines computed here.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnnreport.analysis.statistics import (
    conv_weight,
    dead_filter_indices,
    duplicate_filter_pairs,
    filter_matrix,
    filter_norms,
    finite_or_none,
)

NAN, INF = float("nan"), float("inf")


def _numbered(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        module.weight.copy_(torch.arange(module.weight.numel(), dtype=torch.float32).reshape(module.weight.shape))
    return module


# ---------------------------------------------------------------------------- conv_weight(), finite_or_none()


@pytest.mark.parametrize(
    "module, has",
    [
        (nn.Conv1d(2, 3, 1), True),  # 3-D weight: the smallest that counts
        (nn.Conv2d(2, 3, 2), True),
        (nn.Conv3d(1, 2, 1), True),
        (nn.ConvTranspose2d(2, 3, 2), True),
        (nn.Linear(2, 3), False),  # 2-D
        (nn.BatchNorm2d(2), False),  # 1-D
        (nn.BatchNorm2d(2, affine=False), False),  # weight None
        (nn.ReLU(), False),  # no weight at all
    ],
    ids=["conv1d", "conv2d", "conv3d", "convtranspose2d", "linear", "batchnorm", "batchnorm-no-affine", "relu"],
)
def test_conv_weight_is_a_weight_of_three_or_more_dimensions(module, has):
    got = conv_weight(module)
    if has:
        assert got is module.weight
    else:
        assert got is None


def test_conv_weight_is_none_for_a_weight_that_is_not_a_tensor():
    module = nn.Module()
    module.weight = [[[1.0]]]
    assert conv_weight(module) is None


@pytest.mark.parametrize("value, expected", [(1.5, 1.5), (-0.0, -0.0), (-3e38, -3e38), (NAN, None), (INF, None), (-INF, None)])
def test_finite_or_none(value, expected):
    assert finite_or_none(value) == expected


# ---------------------------------------------------------------------------- filter_matrix()


def test_filter_matrix_of_a_convolution_is_one_row_per_output_channel():
    conv = _numbered(nn.Conv2d(2, 3, 2, bias=False))  # weight (3, 2, 2, 2): 0..23
    got = filter_matrix(conv)
    assert got.shape == (3, 8)
    assert got.tolist() == [list(range(8 * j, 8 * j + 8)) for j in range(3)]


def test_filter_matrix_of_a_half_precision_convolution_is_float32():
    conv = nn.Conv1d(2, 2, 1, bias=False).to(torch.float16)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[0.5], [-2.0]], [[1024.0], [0.125]]]))
    got = filter_matrix(conv)
    assert got.dtype == torch.float32
    assert got.tolist() == [[0.5, -2.0], [1024.0, 0.125]]


@pytest.mark.parametrize(
    "module",
    [
        nn.ConvTranspose2d(4, 6, (1, 2), groups=2, bias=False),
        nn.ConvTranspose2d(3, 2, 2, bias=False),
        nn.ConvTranspose1d(6, 3, 2, groups=3, bias=False),
        nn.ConvTranspose3d(2, 4, 1, groups=2, bias=False),
    ],
    ids=["2d-groups-2", "2d", "1d-groups-3", "3d-groups-2"],
)
def test_filter_matrix_of_a_transposed_convolution_gathers_each_output_filter(module):
    # weight (in, out / groups, k...): output filter g * out_g + j reads the inputs of its group,
    # w[g * in_g + i, j] for i < in_g, in that order
    module = _numbered(module)
    w = module.weight.detach()
    groups, cin, cout_g = module.groups, w.shape[0], w.shape[1]
    in_g = cin // groups
    expected = []
    for g in range(groups):
        for j in range(cout_g):
            row = []
            for i in range(in_g):
                row += w[g * in_g + i, j].flatten().tolist()
            expected.append(row)
    got = filter_matrix(module)
    assert got.tolist() == expected
    assert got.shape[0] == module.out_channels


def test_filter_matrix_of_a_layer_without_a_convolution_weight_is_none():
    assert filter_matrix(nn.Linear(3, 2)) is None


# ---------------------------------------------------------------------------- filter_norms(), dead_filter_indices()


def test_filter_norms_are_each_rows_l2_norm():
    rows = torch.tensor([[3.0, 4.0, 0.0], [1.0, -2.0, 2.0], [0.0, 0.0, 0.0], [NAN, 1.0, 0.0]], dtype=torch.float16)
    got = filter_norms(rows)
    assert got.dtype == torch.float32
    assert got[:3].tolist() == [5.0, 3.0, 0.0]
    assert math.isnan(got[3].item())


def test_dead_filters_are_those_with_a_norm_below_the_threshold():
    # norms 5, 3, 0, 0.5, 2 (a threshold of exactly 2 keeps the norm-2 row alive)
    rows = torch.tensor([[3.0, 4.0, 0.0], [1.0, -2.0, 2.0], [0.0, 0.0, 0.0], [0.0, 0.3, -0.4], [0.0, 0.0, -2.0]])
    assert dead_filter_indices(rows, 2.0) == [2, 3]
    assert dead_filter_indices(rows, 3.0) == [2, 3, 4]
    assert dead_filter_indices(rows, 0.5) == [2]
    assert dead_filter_indices(rows, 0.0) == []
    got = dead_filter_indices(rows, 2.0)
    assert [type(i) for i in got] == [int, int]


def test_dead_filters_with_precomputed_norms():
    rows = torch.tensor([[3.0, 4.0], [0.0, 0.1], [0.6, 0.8]])
    assert dead_filter_indices(rows, 1.0, norms=filter_norms(rows)) == [1]
    # the norms given are the ones used (they are filter_norms of the rows by contract)
    assert dead_filter_indices(rows, 1.0, norms=torch.tensor([5.0, 0.1, 0.5])) == [1, 2]


def test_dead_filters_count_nan_and_inf_weights_as_zero_only_for_nan():
    # NaN weights count as 0: row 0 is [0, 0.1] (norm 0.1, dead) and row 1 [0, 3] (alive);
    # an Inf weight becomes the largest float: row 2 is alive
    rows = torch.tensor([[NAN, 0.1], [NAN, 3.0], [INF, 0.0], [-INF, NAN], [0.0, 0.5]])
    assert dead_filter_indices(rows, 1.0) == [0, 4]
    assert dead_filter_indices(rows, 1.0, norms=filter_norms(rows)) == [0, 4]


# ---------------------------------------------------------------------------- duplicate_filter_pairs()


def test_duplicate_pairs_worked_by_hand():
    # unit vectors: 0 = e1, 1 = 2 e1 (cosine 1 with 0), 2 = e2, 3 = (1, 1, 1, 1) / 2 (cosine 0.5
    # with 0, 1 and 2), 4 = -e1 (cosine -1), 5 = zero (no direction: left out)
    rows = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0],
            [2.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [1.0, 1.0, 1.0, 1.0],
            [-1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    pairs, compared = duplicate_filter_pairs(rows, 0.4)
    assert compared == 6
    assert pairs == [(0, 1, 1.0), (0, 3, 0.5), (1, 3, 0.5), (2, 3, 0.5)]
    assert [tuple(type(v) for v in p) for p in pairs] == [(int, int, float)] * 4
    # a cosine exactly at the threshold is not above it
    pairs, _ = duplicate_filter_pairs(rows, 0.5)
    assert pairs == [(0, 1, 1.0)]
    # -1 is above a threshold of -1.5: every live pair, but not the zero filter
    pairs, _ = duplicate_filter_pairs(rows, -1.5)
    assert [(i, j) for i, j, _ in pairs] == [(i, j) for i in range(5) for j in range(i + 1, 5)]


def test_duplicate_pairs_leave_out_filters_below_min_norm():
    # norms 0.5 (exactly min_norm: live), 0.25 (below it), 1, 2
    rows = torch.tensor([[0.5, 0.0], [0.25, 0.0], [1.0, 0.0], [2.0, 0.0]])
    pairs, compared = duplicate_filter_pairs(rows, 0.9, min_norm=0.5)
    assert compared == 4
    assert pairs == [(0, 2, 1.0), (0, 3, 1.0), (2, 3, 1.0)]
    # with the default (1e-6) every one of them is live
    pairs, _ = duplicate_filter_pairs(rows, 0.9)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_duplicate_pairs_of_tiny_live_filters_have_their_true_cosine():
    # norms 2e-6 and 4e-6, above the default min_norm: normalised by their own norm, cosine 1
    rows = torch.tensor([[2e-6, 0.0], [0.0, 4e-6], [4e-6, 0.0]])
    pairs, _ = duplicate_filter_pairs(rows, 0.9)
    assert [(i, j) for i, j, _ in pairs] == [(0, 2)]
    assert pairs[0][2] == pytest.approx(1.0, abs=1e-6)


def test_duplicate_pairs_compare_only_the_first_cap_filters():
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    pairs, compared = duplicate_filter_pairs(rows, 0.9, cap=3)
    assert (pairs, compared) == ([(0, 2, 1.0)], 3)
    pairs, compared = duplicate_filter_pairs(rows, 0.9, cap=3, norms=filter_norms(rows))
    assert (pairs, compared) == ([(0, 2, 1.0)], 3)
    pairs, compared = duplicate_filter_pairs(rows, 0.9, cap=4)
    assert ([(i, j) for i, j, _ in pairs], compared) == ([(0, 2), (0, 3), (2, 3)], 4)


@pytest.mark.parametrize(
    "rows, compared",
    [
        (torch.tensor([[1.0], [2.0], [3.0]]), 3),  # one weight per filter: a scalar, no direction
        (torch.tensor([[1.0, 2.0, 3.0]]), 1),  # a single filter
        (torch.zeros(0, 4), 0),
    ],
    ids=["width-1", "one-filter", "no-filter"],
)
def test_duplicate_pairs_need_two_filters_of_two_weights(rows, compared):
    assert duplicate_filter_pairs(rows, 0.5) == ([], compared)


def test_duplicate_pairs_of_two_filters_of_two_weights():
    # (3, 4) and (6, 8): cosine 1; (4, -3) is orthogonal to both
    pairs, compared = duplicate_filter_pairs(torch.tensor([[3.0, 4.0], [6.0, 8.0], [4.0, -3.0]]), 0.99)
    assert compared == 3
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    assert pairs[0][2] == pytest.approx(1.0, abs=1e-6)
    pairs, _ = duplicate_filter_pairs(torch.tensor([[3.0, 4.0], [6.0, 8.0]]), 0.99)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]


def test_duplicate_pairs_count_nan_and_inf_weights_as_zero():
    # row 0's NaN counts as 0: (0, 1, 0) is row 2's direction; -Inf in row 3 becomes the most
    # negative float: row 3 points along -e1, opposite row 4
    rows = torch.tensor([[NAN, 1.0, 0.0], [3.0, 0.0, 4.0], [0.0, 2.0, 0.0], [-INF, 0.0, 0.0], [1.0, 0.0, 0.0]])
    pairs, compared = duplicate_filter_pairs(rows, 0.9)
    assert compared == 5
    assert [(i, j) for i, j, _ in pairs] == [(0, 2)]
    assert pairs[0][2] == pytest.approx(1.0, abs=1e-6)
    # the same with the norms given (NaN there too)
    pairs, _ = duplicate_filter_pairs(rows, 0.9, norms=filter_norms(rows))
    assert [(i, j) for i, j, _ in pairs] == [(0, 2)]


def _float64_pairs(rows: torch.Tensor, threshold: float, min_norm: float = 1e-6) -> list[tuple[int, int, float]]:
    f = rows.double()
    norms = f.norm(dim=1)
    out = []
    for i in range(f.shape[0]):
        for j in range(i + 1, f.shape[0]):
            if norms[i] >= min_norm and norms[j] >= min_norm:
                cos = float(f[i] @ f[j] / (norms[i] * norms[j]))
                if cos > threshold:
                    out.append((i, j, cos))
    return out


@pytest.mark.parametrize("width", [255, 256, 257, 300, 1153])
def test_duplicate_pairs_of_long_filters_match_float64_cosines(width):
    # 24 filters: random, plus near-copies of filter 0 and 5 at several distances, a scaled
    # copy, a negated copy and a zero filter; long filters go through the sketch first
    g = torch.Generator().manual_seed(width)
    rows = torch.randn(24, width, generator=g, dtype=torch.float64)
    rows[3] = 2.5 * rows[0]
    rows[7] = rows[0] + 0.05 * torch.randn(width, generator=g, dtype=torch.float64)  # cosine ~0.9988
    rows[9] = rows[0] + 0.2 * torch.randn(width, generator=g, dtype=torch.float64)  # ~0.98
    rows[11] = -rows[5]
    rows[12] = rows[5] + 0.1 * torch.randn(width, generator=g, dtype=torch.float64)
    rows[20] = 0.0
    rows = rows.float()
    want = _float64_pairs(rows, 0.99)
    pairs, compared = duplicate_filter_pairs(rows, 0.99)
    assert compared == 24
    assert [(i, j) for i, j, _ in pairs] == [(i, j) for i, j, _ in want]
    assert [c for _, _, c in pairs] == pytest.approx([c for _, _, c in want], abs=1e-5)
    assert (0, 3) in [(i, j) for i, j, _ in pairs]


def test_long_filters_whose_differences_sit_in_the_sketch_columns():
    # 300 weights; the sketch reads 128 evenly spaced columns, 0 and 299 among them. Filters 0
    # and 1 are ones with 1 + d at column 0 and at column 299 respectively: the same norm, so
    # their unit vectors differ only there and the sketch sees their whole distance. Cosine
    # (300 + 2d) / (300 + 2d + d^2) = 0.99002 for d = 1.749: 2e-5 above the threshold, so the
    # pair must pass the sketch's bound 2 (1 - 0.99) with its slack.
    d = 1.749
    first, second = torch.ones(300, dtype=torch.float64), torch.ones(300, dtype=torch.float64)
    first[0] += d
    second[299] += d
    rows = torch.stack([first, second, torch.zeros(300, dtype=torch.float64)]).float()
    want = _float64_pairs(rows, 0.99)
    assert [(i, j) for i, j, _ in want] == [(0, 1)]
    assert want[0][2] == pytest.approx((300 + 2 * d) / (300 + 2 * d + d * d), rel=1e-7)
    assert want[0][2] - 0.99 < 3e-5  # the premise: close to the threshold
    pairs, _ = duplicate_filter_pairs(rows, 0.99)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    assert pairs[0][2] == pytest.approx(want[0][2], abs=1e-6)
    # a hair further apart (d = 1.752: cosine 0.98998) is not a pair
    second[299] = 1.0 + 1.752
    first[0] = 1.0 + 1.752
    pairs, _ = duplicate_filter_pairs(torch.stack([first, second]).float(), 0.99)
    assert pairs == []


def test_many_near_duplicates_among_long_filters():
    # 10 copies of one direction, each slightly perturbed: 45 candidate pairs among 10 filters,
    # more than 4 per filter, so the full comparison decides; all are above 0.99
    g = torch.Generator().manual_seed(7)
    base = torch.randn(400, generator=g, dtype=torch.float64)
    rows = torch.stack([base * (1 + k) + 0.01 * torch.randn(400, generator=g, dtype=torch.float64) for k in range(10)]).float()
    want = _float64_pairs(rows, 0.99)
    assert len(want) == 45
    pairs, compared = duplicate_filter_pairs(rows, 0.99)
    assert compared == 10
    assert [(i, j) for i, j, _ in pairs] == [(i, j) for i, j, _ in want]
    assert [c for _, _, c in pairs] == pytest.approx([c for _, _, c in want], abs=1e-5)


def test_long_filters_at_exactly_the_threshold_are_not_pairs():
    # 300 weights: filter 0 is e1, filter 1 is ones on columns 0..3 (norm 2), filter 2 is 3 e1:
    # cosines 0.5 (0, 1), 1 (0, 2) and 0.5 (1, 2), exact in binary
    rows = torch.zeros(3, 300)
    rows[0, 0] = 1.0
    rows[1, :4] = 1.0
    rows[2, 0] = 3.0
    pairs, compared = duplicate_filter_pairs(rows, 0.5)
    assert (pairs, compared) == ([(0, 2, 1.0)], 3)
    pairs, _ = duplicate_filter_pairs(rows, 0.4999)
    assert pairs == [(0, 1, 0.5), (0, 2, 1.0), (1, 2, 0.5)]


@pytest.mark.parametrize("threshold", [0.1, -0.5])
def test_long_filters_opposed_on_the_sketch_columns_but_alike_overall(threshold):
    # 300 weights: filter 0 is all ones; filter 1 is -1 on the 128 evenly spaced columns the
    # sketch reads and +1 elsewhere. Overall cosine (172 - 128) / 300 = 0.1467, above both
    # thresholds; on the sketch alone the unit vectors point apart (dot -128/300), so the
    # sketch's bound on the distance, 2 (1 - threshold), is all that keeps the pair.
    columns = torch.linspace(0, 299, 128).round().long().unique()
    assert columns.numel() == 128  # the premise
    second = torch.ones(300)
    second[columns] = -1.0
    rows = torch.stack([torch.ones(300), second, torch.zeros(300)])
    want = _float64_pairs(rows, threshold)
    assert [(i, j) for i, j, _ in want] == [(0, 1)]
    assert want[0][2] == pytest.approx(44 / 300, rel=1e-12)
    pairs, compared = duplicate_filter_pairs(rows, threshold)
    assert compared == 3
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    assert pairs[0][2] == pytest.approx(44 / 300, rel=1e-6)
