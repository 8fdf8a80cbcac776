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
