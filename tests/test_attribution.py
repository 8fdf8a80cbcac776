"""Attributions: Captum saliency, the capture pass's Grad-CAM against Captum's LayerGradCam, and a
model trained here to find a bright corner square looks at that corner."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import quick_options
from reference_models import seeded
from torch import nn

import cnnreport
from cnnreport.capture import attribution
from cnnreport.errors import OptionError
from cnnreport.io.probes import ProbeBatch
from cnnreport.report import pipeline
from cnnreport.support.progress import Progress


class TwoConv(nn.Module):
    def __init__(self, classes: int = 4, inplace: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def state_of(model: nn.Module):
    return (
        [m.training for m in model.modules()],
        [(p.requires_grad, p.grad) for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def assert_same_state(before, after):
    assert before[0] == after[0]
    assert [(rg, g is None) for rg, g in before[1]] == [(rg, g is None) for rg, g in after[1]]
    assert all(torch.equal(before[2][k], after[2][k]) for k in before[2])


# ----------------------------------------------------------------------------------------------
# Saliency


class OnePixel(nn.Module):
    """Class 1's score depends on pixel (row 2, column 5) of channel 1 only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 3.0 * x[:, 1, 2, 5]
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_saliency_finds_the_only_pixel_that_matters():
    x = torch.rand(2, 3, 6, 8)
    maps = attribution.saliency_maps(OnePixel(), (x,), [1, 1])
    assert len(maps) == 2
    for m in maps:
        assert m.shape == (6, 8) and m.dtype == np.float32
        assert m[2, 5] == pytest.approx(1.0)
        assert np.count_nonzero(m) == 1


def test_saliency_is_batched_normalised_and_leaves_the_model_alone(probes):
    model = seeded(TwoConv())
    model.train()  # the pass must use eval mode and restore this
    model.fc.weight.requires_grad_(False)  # a frozen layer stays frozen, the others trainable
    before = state_of(model)
    inputs = probes.clone()
    maps = attribution.saliency_maps(model, (inputs,), [0, 1, 2], batch_size=2)
    assert_same_state(before, state_of(model))
    assert torch.equal(inputs, probes) and not inputs.requires_grad
    assert [m.shape for m in maps] == [(16, 16)] * 3
    for m in maps:
        assert m.min() >= 0 and m.max() == pytest.approx(1.0)
    # Batching changes nothing: the same maps one probe at a time.
    single = [attribution.saliency_maps(model, (probes[i : i + 1],), [t])[0] for i, t in enumerate([0, 1, 2])]
    for a, b in zip(maps, single):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_saliency_matches_a_plain_autograd_gradient(probes):
    model = seeded(TwoConv())
    x = probes[:1].clone().requires_grad_(True)
    model(x)[0, 2].backward()
    expected = x.grad.abs().amax(1)[0]
    expected = (expected / expected.max()).numpy()
    model.zero_grad(set_to_none=True)
    (got,) = attribution.saliency_maps(model, (probes[:1],), [2])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_target_count_must_match_inputs(probes):
    with pytest.raises(OptionError, match="3 inputs"):
        attribution.saliency_maps(seeded(TwoConv()), (probes,), [0])


def test_missing_captum_names_the_extra(monkeypatch, probes):
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # import captum.attr now raises
    with pytest.raises(OptionError, match=r'pip install "cnnreport\[attributions\]"'):
        attribution.saliency_maps(seeded(TwoConv()), (probes,), [0, 0, 0])


# ----------------------------------------------------------------------------------------------
# Grad-CAM of the capture pass against Captum's LayerGradCam


def capture_gradcam(model: nn.Module, probes: torch.Tensor, cam_layer: str, **overrides):
    options = quick_options(graph=False, **overrides)
    batch = ProbeBatch(inputs=(probes,), names=[f"p{i}" for i in range(len(probes))], display=[])
    result = pipeline.capture_pass(model, batch, options, [], cam_layer, Progress(total=len(probes), enabled=False))
    return result.capture


@pytest.mark.parametrize("inplace", [False, True], ids=["relu", "inplace-relu"])
@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_capture_gradcam_matches_captum(probes, layer, inplace):
    model = seeded(TwoConv(inplace=inplace))
    capture = capture_gradcam(model, probes, layer, batch_size=2)
    targets = capture.gradcam_targets
    assert targets == model(probes).argmax(1).tolist()
    reference = attribution.gradcam_reference(model, getattr(model, layer), (probes,), targets)
    assert len(capture.gradcam) == len(reference) == 3
    for ours, theirs in zip(capture.gradcam, reference):
        assert ours.shape == theirs.shape == (16, 16)
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_capture_gradcam_follows_target_class(probes):
    model = seeded(TwoConv())
    capture = capture_gradcam(model, probes, "conv2", target_class=3)
    assert capture.gradcam_targets == [3, 3, 3]
    reference = attribution.gradcam_reference(model, model.conv2, (probes,), [3, 3, 3])
    for ours, theirs in zip(capture.gradcam, reference):
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# A model trained here looks where the evidence is

SIZE, SQUARE = 16, 4


def corner_data(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey noise; label 1 images carry a bright square in the top-left corner."""
    x = 0.3 * torch.rand(n, 1, SIZE, SIZE, generator=gen)
    y = torch.arange(n) % 2
    x[y == 1, :, 1 : 1 + SQUARE, 1 : 1 + SQUARE] = 1.0
    return x, y


class CornerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def corner_model() -> CornerNet:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = CornerNet()
    x, y = corner_data(64, gen)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread hand-offs cost more than they give on shared cores
    try:
        for _ in range(40):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.zero_grad(set_to_none=True)
    x_test, y_test = corner_data(32, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(x_test).argmax(1) == y_test).float().mean() > 0.95  # it did learn the task
    return model.eval()


def test_gradcam_peak_is_in_the_square_corner(corner_model):
    x, _ = corner_data(8, torch.Generator().manual_seed(2))
    positives = x[1::2]  # the four with the square
    report = cnnreport.build_report(corner_model, positives, quick_options(graph=False))
    cams = [a for a in report.attributions if a.method == "Grad-CAM"]
    assert len(cams) == 4
    for a in cams:
        assert a.layer == "conv2" and a.target_class == 1
        px, py = a.peak_xy
        # The square spans pixels 1..4; the CAM grid is the 16x16 image grid (no pooling).
        assert 0 <= px <= SQUARE + 1 and 0 <= py <= SQUARE + 1, a.peak_xy


def test_saliency_mass_sits_on_the_square(corner_model):
    x, _ = corner_data(4, torch.Generator().manual_seed(3))
    positives = x[1::2]
    maps = attribution.saliency_maps(corner_model, (positives,), [1, 1])
    for m in maps:
        inside = m[1 : 1 + SQUARE, 1 : 1 + SQUARE].mean()
        outside = (m.sum() - m[1 : 1 + SQUARE, 1 : 1 + SQUARE].sum()) / (m.size - SQUARE * SQUARE)
        assert inside > 3 * outside


def test_report_has_saliency_per_probe_on_the_square(corner_model):
    x, _ = corner_data(8, torch.Generator().manual_seed(4))
    report = cnnreport.build_report(corner_model, x[1::2], quick_options(graph=False, saliency=True))
    sal = [a for a in report.attributions if a.method == "Saliency"]
    assert [a.probe for a in sal] == [p.name for p in report.probes]
    for a in sal:
        assert a.target_class == 1 and a.layer == "input"
        assert a.figure.png.startswith(b"\x89PNG")
        px, py = a.peak_xy  # in the input's pixel grid
        assert 0 <= px <= SQUARE + 1 and 0 <= py <= SQUARE + 1, a.peak_xy
    without = cnnreport.build_report(corner_model, x[1::2], quick_options(graph=False, saliency=False))
    assert [a.method for a in without.attributions] == ["Grad-CAM"] * 4  # saliency=False: Grad-CAM only


# ----------------------------------------------------------------------------------------------
# The peak's (x, y) on a map whose peak is known by construction


class BrightestPixel(nn.Module):
    """A 1x1 identity conv, then class 1 = the spatial mean, class 0 = minus it. Grad-CAM of
    ``conv`` for class 1: every channel weight is 1 / (H*W) > 0, so the map is the input
    itself (ReLU'd) and its peak is the brightest input pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.fc.weight.copy_(torch.tensor([[-1.0], [1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def test_gradcam_peak_xy_is_column_then_row():
    # 6 rows x 8 columns; the bright pixel sits at (row 1, column 6) and (row 4, column 2):
    # off the diagonal and in a non-square grid, so swapped x and y cannot pass
    x = torch.full((2, 1, 6, 8), 0.1)
    x[0, 0, 1, 6] = 1.0
    x[1, 0, 4, 2] = 1.0
    report = cnnreport.build_report(BrightestPixel(), x, quick_options(graph=False))
    cams = [a for a in report.attributions if a.method == "Grad-CAM"]
    assert [(a.layer, a.target_class) for a in cams] == [("conv", 1), ("conv", 1)]
    assert [a.peak_xy for a in cams] == [(6, 1), (2, 4)]


class PixelScore(nn.Module):
    """Class 1's score is 3x the 1x1 conv's output at (row 2, column 5): the saliency map is
    one-hot there."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 3.0 * self.conv(x)[:, 0, 2, 5]
        return torch.stack([-score, score], dim=1)


def test_saliency_peak_xy_is_column_then_row():
    x = torch.full((1, 1, 6, 8), 0.5)
    report = cnnreport.build_report(PixelScore(), x, quick_options(graph=False, saliency=True))
    (sal,) = [a for a in report.attributions if a.method == "Saliency"]
    assert (sal.target_class, sal.peak_xy) == (1, (5, 2))


# ----------------------------------------------------------------------------------------------
# Saliency and the Captum Grad-CAM reference: exact values on models with known gradients


class Weighted(nn.Module):
    """Class 1's score is sum(w * x) over the image, so its gradient is exactly ``w``."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x * self.w).flatten(1).sum(1)
        return torch.stack([-score, score], dim=1)


def test_saliency_of_a_1d_input_is_a_one_row_strip_of_the_channel_maximum():
    # |gradient| per (channel, position); max over channels: [3, 4, 2, 1, 0.5], peak 4.
    w = torch.tensor([[1.0, -4.0, 0.0, 1.0, 0.5], [-3.0, 2.0, 2.0, 0.0, 0.25]], dtype=torch.float64)
    x = torch.rand(2, 2, 5, dtype=torch.float64)
    maps = attribution.saliency_maps(Weighted(w), (x,), [1, 0])
    assert len(maps) == 2
    for m in maps:
        assert m.shape == (1, 5)
        np.testing.assert_allclose(m, [[0.75, 1.0, 0.5, 0.25, 0.125]], atol=1e-6)


def test_saliency_of_a_3d_input_is_the_maximum_over_channels_and_depth():
    # (C=2, D=3, H=2, W=4): the max of |w| over channel and depth is w's [1, 0, 1] slice of channel
    # 0 in row 0 except where channel 1's depth-2 slice is larger.
    w = torch.zeros(2, 3, 2, 4, dtype=torch.float64)
    w[0, 1, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    w[1, 2, 1] = torch.tensor([-8.0, 0.0, 6.0, 2.0])
    w[1, 0, 0, 3] = -5.0
    x = torch.rand(3, 2, 3, 2, 4, dtype=torch.float64)
    maps = attribution.saliency_maps(Weighted(w), (x,), [1, 1, 0])
    assert len(maps) == 3
    expected = np.array([[1.0, 2.0, 3.0, 5.0], [8.0, 0.0, 6.0, 2.0]]) / 8.0
    for m in maps:
        assert m.shape == (2, 4)
        np.testing.assert_allclose(m, expected, atol=1e-6)


def test_saliency_of_a_flat_input_is_one_row_per_input():
    # (N=2, F=5) features: the map is |w| as one row, scaled by its maximum 5.
    w = torch.tensor([2.0, -5.0, 0.0, 1.0, 4.0], dtype=torch.float64)
    x = torch.rand(2, 5, dtype=torch.float64)
    maps = attribution.saliency_maps(Weighted(w), (x,), [1, 1])
    assert len(maps) == 2
    for m in maps:
        assert m.shape == (1, 5)
        np.testing.assert_allclose(m, [[0.4, 1.0, 0.0, 0.2, 0.8]], atol=1e-6)


class NonFinite(nn.Module):
    """Class 1's score is ``c * x[0, 1, 2] + 2 * x[0, 3, 0]``: a non-finite gradient at (1, 2)."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = self.c * x[:, 0, 1, 2] + 2.0 * x[:, 0, 3, 0]
        return torch.stack([torch.zeros_like(score), score], dim=1)


@pytest.mark.parametrize("c", [float("inf"), float("-inf"), float("nan")], ids=["inf", "-inf", "nan"])
def test_saliency_non_finite_gradients_count_as_zero(c):
    (m,) = attribution.saliency_maps(NonFinite(c), (torch.rand(1, 1, 4, 3),), [1])
    expected = np.zeros((4, 3), dtype=np.float32)
    expected[3, 0] = 1.0  # the only finite gradient, 2, is the maximum; (1, 2) is 0
    np.testing.assert_array_equal(m, expected)


class Recorder(nn.Module):
    """Class 0's score is 5 * x[:, 0, 1, 2], class 1's is 2 * x[:, 0, 0, 1]; ``recorder(seen)`` adds
    a hook that appends every forward's batch size to ``seen`` (a list the model does not own, so
    restoring the model's state leaves it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([5.0 * x[:, 0, 1, 2], 2.0 * x[:, 0, 0, 1]], dim=1)


def recorder(seen: list[int]) -> Recorder:
    model = Recorder()
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    return model


def test_saliency_runs_in_batches_of_32_by_default():
    seen: list[int] = []
    maps = attribution.saliency_maps(recorder(seen), (torch.rand(33, 1, 2, 3),), [1] * 33)
    assert seen == [32, 1]
    assert len(maps) == 33


def test_saliency_batch_size_one_visits_every_input():
    seen: list[int] = []
    x = torch.rand(3, 1, 2, 3)
    maps = attribution.saliency_maps(recorder(seen), (x,), [1, 0, 1], batch_size=1)
    assert seen == [1, 1, 1]
    one = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    zero = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    assert len(maps) == 3
    for m, e in zip(maps, [one, zero, one]):
        np.testing.assert_array_equal(m, e)


class TwoInputs(nn.Module):
    """Image (N, 1, 3, 4) and a second input (N, 2) of another shape; class 1's score mixes both."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))

    def forward(self, x: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        feats = self.conv(x)  # (N, 2, 3, 4): x and -x
        score = 3.0 * x[:, 0, 2, 1] + 1.5 * x[:, 0, 0, 3] + 7.0 * extra[:, 0] + feats[:, 0].sum((1, 2)) * extra[:, 1]
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_saliency_with_two_inputs_maps_the_first():
    x = torch.rand(2, 1, 3, 4)
    extra = torch.tensor([[1.0, 0.0], [2.0, 0.0]])  # extra[:, 1] = 0: the conv term adds nothing
    maps = attribution.saliency_maps(TwoInputs(), (x, extra), [1, 1])
    expected = np.zeros((3, 4), dtype=np.float32)
    expected[2, 1] = 1.0
    expected[0, 3] = 0.5
    assert len(maps) == 2
    for m in maps:
        assert m.shape == (3, 4)
        np.testing.assert_allclose(m, expected, atol=1e-6)


def plain_gradcam(model: nn.Module, layer: nn.Module, inputs: tuple, targets: list[int]) -> list[np.ndarray]:
    """Grad-CAM in float64 by hand: channel weights = gradients averaged over every spatial axis,
    ReLU of the weighted channel sum, a 3-D map averaged over depth, each map over its maximum."""
    model = model.double()
    saved = {}
    handle = layer.register_forward_hook(lambda m, i, o: saved.__setitem__("a", o))
    out = model(*[t.double() for t in inputs])
    handle.remove()
    a = saved["a"]
    score = out[torch.arange(len(targets)), torch.tensor(targets)].sum()
    (g,) = torch.autograd.grad(score, a)
    spatial = tuple(range(2, a.dim()))
    cam = torch.relu((g.mean(spatial, keepdim=True) * a).sum(1))
    if cam.dim() == 2:
        cam = cam[:, None, :]
    elif cam.dim() == 4:
        cam = cam.mean(1)
    model.float()
    return [(c / c.max()).detach().numpy() for c in cam]


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(2))


class Conv3dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3, 4)))


def test_gradcam_reference_of_a_conv1d_layer_is_a_one_row_strip():
    model = seeded(Conv1dNet())
    x = torch.randn(2, 2, 7, generator=torch.Generator().manual_seed(3))
    got = attribution.gradcam_reference(model, model.conv, (x,), [2, 0])
    expected = plain_gradcam(model, model.conv, (x,), [2, 0])
    assert len(got) == 2
    for ours, theirs in zip(got, expected):
        assert ours.shape == (1, 7)
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_gradcam_reference_of_a_conv3d_layer_averages_depth():
    model = seeded(Conv3dNet())
    x = torch.randn(2, 1, 3, 4, 5, generator=torch.Generator().manual_seed(4))  # D=3, H=4, W=5
    got = attribution.gradcam_reference(model, model.conv, (x,), [1, 3])
    expected = plain_gradcam(model, model.conv, (x,), [1, 3])
    assert len(got) == 2
    for ours, theirs in zip(got, expected):
        assert ours.shape == (4, 5)
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_gradcam_reference_with_two_inputs():
    model = TwoInputs()
    x = torch.rand(2, 1, 3, 4, generator=torch.Generator().manual_seed(5))
    extra = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    # Class 1's gradient w.r.t. the conv's channels is extra[:, 1] * (1, 0): the map is relu(extra[:, 1] * x).
    got = attribution.gradcam_reference(model, model.conv, (x, extra), [1, 1])
    assert len(got) == 2
    np.testing.assert_allclose(got[0], (x[0, 0] / x[0, 0].max()).numpy(), atol=1e-6)
    np.testing.assert_array_equal(got[1], np.zeros((3, 4), dtype=np.float32))


# ----------------------------------------------------------------------------------------------
# Error messages, word for word


def test_missing_captum_message_in_full(monkeypatch, probes):
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(OptionError) as info:
        attribution.gradcam_reference(seeded(TwoConv()), nn.Identity(), (probes,), [0, 0, 0])
    assert str(info.value) == (
        'saliency maps need Captum, which is not installed: pip install "cnnreport[attributions]" (or leave out --saliency)'
    )


class StringOutput(nn.Module):
    def forward(self, x: torch.Tensor) -> str:
        return "not scores"


def test_non_classification_output_message_names_the_output_type():
    with pytest.raises(OptionError) as info:
        attribution.saliency_maps(StringOutput(), (torch.rand(1, 1, 2, 2),), [0])
    assert str(info.value) == "attributions need a classification output (an (N, classes) tensor); the model returned str"


def test_no_inputs_message():
    with pytest.raises(OptionError) as info:
        attribution.saliency_maps(StringOutput(), (), [])
    assert str(info.value) == "attributions need at least one input tensor"


# One probe's Grad-CAM entry from given maps: its label, alt text and peak (maps written by hand)


def gradcam_entries(maps: list[np.ndarray], targets: list[int], class_names):
    from types import SimpleNamespace

    from cnnreport.report.sections import gradcam_attributions

    n = len(maps)
    batch = ProbeBatch(
        inputs=(torch.zeros(n, 3, 4, 6),),
        names=[f"probe-{chr(97 + i)}" for i in range(n)],
        display=[np.full((4, 6, 3), 40 * (i + 1), dtype=np.uint8) for i in range(n)],
    )
    capture = SimpleNamespace(gradcam=maps, gradcam_targets=targets, gradcam_layer="conv")
    return gradcam_attributions(capture, batch, quick_options(class_names=class_names))


def test_gradcam_entry_is_labelled_with_the_class_name_in_its_alt_text():
    heat = np.zeros((2, 3))
    heat[1, 2] = 1.0
    entries = gradcam_entries([heat, heat], [1, 0], ["cat", "dog"])
    assert [(e.probe, e.target_class, e.target_label) for e in entries] == [("probe-a", 1, "dog"), ("probe-b", 0, "cat")]
    assert [e.figure.alt for e in entries] == [
        "Grad-CAM of conv for class dog on probe-a",
        "Grad-CAM of conv for class cat on probe-b",
    ]
    assert [e.peak_xy for e in entries] == [(2, 1), (2, 1)]


def test_a_target_past_the_class_names_is_labelled_by_its_number():
    heat = np.zeros((2, 3))
    # one name, target 1: exactly one past the end
    (entry,) = gradcam_entries([heat], [1], ["only"])
    assert (entry.target_label, entry.figure.alt) == ("1", "Grad-CAM of conv for class 1 on probe-a")
    (entry,) = gradcam_entries([heat], [2], None)
    assert entry.target_label == "2"


def test_the_peak_skips_nan_and_inf_pixels():
    # the largest finite value 0.9 sits at row 1, column 0; NaN and +Inf elsewhere are no peak
    heat = np.array([[0.2, np.nan, 0.3], [0.9, 0.1, np.inf]])
    (entry,) = gradcam_entries([heat], [0], None)
    assert entry.peak_xy == (0, 1)


def test_a_map_without_finite_values_has_no_peak():
    heat = np.full((2, 3), np.nan)
    (entry,) = gradcam_entries([heat], [0], None)
    assert entry.peak_xy is None
