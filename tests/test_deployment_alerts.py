"""The checks of what lies between a model and its use: probes preprocessed unlike training
(the first BatchNorm's running statistics against the probes), float16 headroom, a model
given in training mode, and what pruning dead and duplicate filters would save.

Each problem model is built here to have its problem, and its alert's figures are derived
in the test: by hand, or in float64 plain torch from the images and weights. The trained
demo, a ResNet whose BatchNorm statistics were gathered on other normalised photos, and a
model without BatchNorm raise none of these alerts.
"""

from __future__ import annotations

import html
import math
import textwrap
from collections import OrderedDict

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import photos_tensor, quick_options
from reference_models import tiny_resnet
from torch import nn

import cnnreport
from cnnreport.datamodel import AlertKind, Severity
from cnnreport.render.views import render_markdown

#: ImageNet's normalisation, written out (the usual published constants).
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64)[:, None, None]
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64)[:, None, None]

NEW_KINDS = {"preprocessing", "fp16_overflow", "fp16_underflow", "training_mode", "prunable"}


def report_of(model: nn.Module, probes, **overrides):
    return cnnreport.build_report(model, probes, quick_options(graph=False, **overrides))


def new_findings(report) -> set[tuple[str, str]]:
    return {(a.kind.value, a.layer) for a in report.alerts if a.kind.value in NEW_KINDS}


def only(report, kind: AlertKind):
    hits = [a for a in report.alerts if a.kind is kind]
    assert len(hits) == 1, [(a.kind.value, a.layer, a.message) for a in report.alerts]
    return hits[0]


@pytest.fixture(scope="module")
def photos01() -> torch.Tensor:
    """Four skimage.data photos, (4, 3, 32, 32) in [0, 1], float64."""
    return photos_tensor(32).double()


def normalised(x01: torch.Tensor) -> torch.Tensor:
    return (x01.double() - IMAGENET_MEAN) / IMAGENET_STD


# ----------------------------------------------------------------------------------------------
# 1. Preprocessing that does not match training


class ColourNet(nn.Module):
    """conv1 (3 -> 4, colour-selective 3x3 box filters: R, G, B and R - B) -> bn1 -> ReLU -> pool -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.relu(self.bn1(self.conv1(x)))), 1))


def colour_weights() -> torch.Tensor:
    w = torch.zeros(4, 3, 3, 3, dtype=torch.float64)
    w[0, 0] = w[1, 1] = w[2, 2] = w[3, 0] = 1 / 9
    w[3, 2] = -1 / 9
    return w


def colour_model(training_images: torch.Tensor) -> ColourNet:
    """The model, its bn1 statistics what training on ``training_images`` (normalised, float64)
    would have recorded: the channel means and variances of conv1's output, in float64."""
    torch.manual_seed(0)
    model = ColourNet()
    w = colour_weights()
    y = torch.nn.functional.conv2d(training_images, w, padding=1)
    with torch.no_grad():
        model.conv1.weight.copy_(w)
        model.bn1.running_mean.copy_(y.mean((0, 2, 3)))
        model.bn1.running_var.copy_(y.var((0, 2, 3), unbiased=False))
        model.bn1.num_batches_tracked.fill_(500)
    return model.eval()


def expected_mismatch(model: ColourNet, probes: torch.Tensor) -> dict[str, float]:
    """The figures of bn1's input on ``probes`` against its running statistics, in float64."""
    y = torch.nn.functional.conv2d(probes.double(), colour_weights(), padding=1)
    mean, var = y.mean((0, 2, 3)), y.var((0, 2, 3), unbiased=False)
    rm, rv = model.bn1.running_mean.double(), model.bn1.running_var.double()
    eps = 1e-5  # BatchNorm2d's default
    z = (mean - rm) / torch.sqrt(rv + eps)
    return {
        "input_mean": float(mean.mean()),
        "training_mean": float(rm.mean()),
        "input_spread": float(var.mean().sqrt()),
        "training_spread": float(rv.mean().sqrt()),
        "mean_shift": float(z.pow(2).mean().sqrt()),
        "spread_ratio": float(torch.exp(torch.log(torch.sqrt(var + eps) / torch.sqrt(rv + eps)).mean())),
    }


def assert_figures(alert, expected: dict[str, float]) -> None:
    for key, value in expected.items():
        assert alert.numbers[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_probes_normalised_as_in_training_raise_no_preprocessing_alert(photos01):
    model = colour_model(normalised(photos01))
    report = report_of(model, normalised(photos01).float())
    assert new_findings(report) == set()


def test_raw_0_255_probes_are_found_at_the_first_batchnorm(photos01):
    model = colour_model(normalised(photos01))
    probes = (photos01 * 255).round().float()
    alert = only(report_of(model, probes), AlertKind.PREPROCESSING)
    expected = expected_mismatch(model, probes)
    assert (alert.severity, alert.layer) == (Severity.WARNING, "bn1")
    assert_figures(alert, expected)
    assert expected["spread_ratio"] > 50  # the figures themselves: 0-255 against unit scale
    assert alert.value == pytest.approx(expected["spread_ratio"], rel=1e-4)
    assert alert.message.startswith(
        f"the input to bn1 has mean {expected['input_mean']:.3g} where training saw {expected['training_mean']:.3g}, "
        f"and spread {expected['input_spread']:.3g} where training saw {expected['training_spread']:.3g}"
    )
    assert f"probes run from 0 to {float(probes.max()):.3g}, like raw 0-255 pixels: were they scaled to [0, 1] and normalised as in training?" in alert.message


def test_0_1_probes_where_training_used_imagenet_normalisation(photos01):
    model = colour_model(normalised(photos01))
    probes = photos01.float()
    alert = only(report_of(model, probes), AlertKind.PREPROCESSING)
    expected = expected_mismatch(model, probes)
    assert_figures(alert, expected)
    # Dividing by ImageNet's std of about 0.226 is what is missing: the spread is that much smaller.
    assert expected["spread_ratio"] == pytest.approx(0.226, abs=0.01)
    assert expected["mean_shift"] < 2.0  # so the spread alone finds it
    assert f"spread {expected['spread_ratio']:.3g}x training's" in alert.message
    assert f"reach the layer {1 / expected['spread_ratio']:.3g}x narrower than in training: was the mean/std normalisation" in alert.message


def test_bgr_probes_where_training_used_rgb(photos01):
    model = colour_model(normalised(photos01))
    probes = normalised(photos01).flip(1).float()  # channels 0 and 2 swapped
    alert = only(report_of(model, probes), AlertKind.PREPROCESSING)
    expected = expected_mismatch(model, probes)
    assert_figures(alert, expected)
    # The means move less than the default threshold of 2 standard deviations, and the spread
    # hardly at all: only the channel swap explains the shift.
    assert 0.25 < expected["mean_shift"] < 2.0
    assert expected["spread_ratio"] == pytest.approx(1.0, abs=0.05)
    assert alert.value == pytest.approx(expected["mean_shift"], rel=1e-4)
    # Swapped back, the probes are the training images themselves: 0, up to the border's padding.
    assert alert.numbers["mean_shift_channels_swapped"] < 0.05
    assert "were they loaded as BGR where training used RGB" in alert.message


def test_bgr_probes_are_not_reported_when_the_swap_must_explain_more(photos01):
    model = colour_model(normalised(photos01))
    probes = normalised(photos01).flip(1).float()
    assert new_findings(report_of(model, probes, preprocess_swap_gain=1e6)) == set()


def input_batchnorm_model() -> nn.Module:
    """A BatchNorm on the input itself (eps 0, so the figures are round), then a 1x1 conv."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, eps=0.0)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -0.5, 0.0]))
        bn.running_var.copy_(torch.tensor([1.0, 4.0, 0.25]))
        bn.num_batches_tracked.fill_(100)
    return nn.Sequential(OrderedDict(bn=bn, conv=nn.Conv2d(3, 2, 1), pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten())).eval()


def checkerboard_probes() -> torch.Tensor:
    """Two probes, (2, 3, 4, 2): channel c is a_c +- d_c in a checkerboard (the second probe
    the opposite one), a = (110, 120, 100), d = (10, 20, 5): mean a_c, variance d_c^2."""
    sign = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])
    a, d = torch.tensor([110.0, 120.0, 100.0]), torch.tensor([10.0, 20.0, 5.0])
    one = a[:, None, None] + d[:, None, None] * sign
    return torch.stack([one, a[:, None, None] - d[:, None, None] * sign])


def test_hand_derived_figures_at_a_batchnorm_on_the_input():
    alert = only(report_of(input_batchnorm_model(), checkerboard_probes()), AlertKind.PREPROCESSING)
    # z = ((110 - 0.5) / 1, (120 + 0.5) / 2, (100 - 0) / 0.5) = (109.5, 60.25, 200); RMS:
    # sqrt((11990.25 + 3630.0625 + 40000) / 3) = 136.162...; spread ratios 10/1, 20/2, 5/0.5.
    assert alert.numbers["mean_shift"] == pytest.approx(math.sqrt((109.5**2 + 60.25**2 + 200**2) / 3), rel=1e-6)
    assert alert.numbers["spread_ratio"] == pytest.approx(10.0, rel=1e-6)
    assert alert.numbers["input_mean"] == pytest.approx(110.0, rel=1e-6)
    assert alert.numbers["training_mean"] == pytest.approx(0.0, abs=1e-9)
    assert alert.numbers["input_spread"] == pytest.approx(math.sqrt((100 + 400 + 25) / 3), rel=1e-6)
    assert alert.numbers["training_spread"] == pytest.approx(math.sqrt((1 + 4 + 0.25) / 3), rel=1e-6)
    assert "mean_shift_channels_swapped" not in alert.numbers  # no convolution before it to swap through
    assert alert.message == (
        "the input to bn has mean 110 where training saw 0, and spread 13.2 where training saw 1.32 "
        "(channel means 136 training standard deviations off, RMS over 3 channels; spread 10x training's): "
        "the probes run from 95 to 140, like raw 0-255 pixels: were they scaled to [0, 1] and normalised as in training?"
    )


def test_preprocessing_thresholds_come_from_the_options():
    probes = checkerboard_probes()
    # shift 136.2 and spread 10x: both under these limits, then each alone over its own.
    assert new_findings(report_of(input_batchnorm_model(), probes, preprocess_max_shift=137, preprocess_max_scale=11)) == set()
    assert new_findings(report_of(input_batchnorm_model(), probes, preprocess_max_shift=136, preprocess_max_scale=11)) == {("preprocessing", "bn")}
    assert new_findings(report_of(input_batchnorm_model(), probes, preprocess_max_shift=137, preprocess_max_scale=9.9)) == {("preprocessing", "bn")}


def test_a_batchnorm_still_at_its_initial_statistics_says_nothing_about_training():
    model = input_batchnorm_model()
    with torch.no_grad():
        model.bn.running_mean.zero_()
        model.bn.running_var.fill_(1.0)
    assert new_findings(report_of(model, checkerboard_probes())) == set()


# ----------------------------------------------------------------------------------------------
# None of the new alerts on healthy models


def test_the_trained_demo_raises_none_of_the_new_alerts(demo_model):
    from cnnreport.io.demo import demo_probe_paths

    report = cnnreport.build_report(demo_model, [str(p) for p in demo_probe_paths()], quick_options(graph=False))
    assert new_findings(report) == set()


def test_a_resnet_with_statistics_from_other_photos_raises_none_on_normalised_probes(photos01):
    # "Training": the BatchNorm statistics gathered in training mode over crops of six other
    # photos, normalised the same way; then eval mode, and the four probe photos.
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    crops = []
    for image in [*load_sample_images().images, skimage.data.hubble_deep_field(), skimage.data.immunohistochemistry(), skimage.data.coffee(), skimage.data.chelsea()]:
        h, w = image.shape[:2]
        side = min(h, w) // 2
        for k in range(6):
            top, left = (k * 37) % (h - side), (k * 53) % (w - side)
            crops.append(np.asarray(Image.fromarray(image[top : top + side, left : left + side]).resize((32, 32))))
    training = normalised(torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).double() / 255).float()
    torch.manual_seed(1)
    model = tiny_resnet()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a plain average over the batches
    model.train()
    with torch.no_grad():
        for start in range(0, len(training), 8):
            model(training[start : start + 8])
    model.eval()
    report = report_of(model, normalised(photos01).float())
    assert new_findings(report) == set()


def test_a_model_without_batchnorm_raises_none_of_the_new_alerts(photos01):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    assert new_findings(report_of(model, (photos01 * 255).float())) == set()
    assert new_findings(report_of(model, normalised(photos01).float())) == set()


# ----------------------------------------------------------------------------------------------
# 2. float16 headroom


def scaled_conv_model(scale: float, channels: int = 1) -> nn.Module:
    """A 1x1 convolution multiplying each channel by ``scale`` (no bias), a ReLU, a pooling."""
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels)[:, :, None, None] * scale)
    return nn.Sequential(OrderedDict(conv=conv, act=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten())).eval()


def peak_probes(peak: float) -> torch.Tensor:
    """(2, 1, 4, 3): values -1 .. 1 except one ``peak`` in the second probe's corner."""
    x = torch.linspace(-1, 1, 24).reshape(2, 1, 4, 3)
    x[1, 0, 3, 0] = peak
    return x


def test_an_activation_beyond_float16_range_overflows_at_its_layer_and_not_after():
    report = report_of(scaled_conv_model(1000.0), peak_probes(100.0))
    alert = only(report, AlertKind.FP16_OVERFLOW)
    # 100 x 1000 = 100,000 > 65,504: a margin of 65504 / 100000; the ReLU after it carries the
    # same peak and is folded into the finding.
    assert (alert.severity, alert.layer) == (Severity.WARNING, "conv")
    assert alert.value == pytest.approx(0.65504, rel=1e-9)
    assert alert.numbers == {"max_abs": 100000.0, "fp16_max": 65504.0, "margin": pytest.approx(0.65504, rel=1e-9)}
    assert "largest |value| 100,000 is 1.53x float16's largest, 65,504" in alert.message
    assert "1 later layer also exceeds it" in alert.message
    assert "bfloat16 (up to 3.4e38) holds it" in alert.message


def test_an_activation_near_float16_range_is_a_warning_with_its_margin():
    alert = only(report_of(scaled_conv_model(400.0), peak_probes(100.0)), AlertKind.FP16_OVERFLOW)
    assert alert.layer == "conv"  # the ReLU after it is the same distance from the limit
    assert alert.value == pytest.approx(65504 / 40000, rel=1e-9)
    assert "largest |value| 40,000 is within 1.64x of float16's largest" in alert.message
    assert "; so does the layer right after it (act);" in alert.message


def test_float16_headroom_boundary_is_strictly_above_half_the_range():
    # 32,752 is exactly 65,504 / 2 (the default headroom 2): not reported; 32,768 is.
    assert new_findings(report_of(scaled_conv_model(1.0), peak_probes(32752.0))) == set()
    assert new_findings(report_of(scaled_conv_model(1.0), peak_probes(32768.0))) == {("fp16_overflow", "conv")}
    assert new_findings(report_of(scaled_conv_model(1.0), peak_probes(32768.0), fp16_headroom=1.5)) == set()


def underflow_model(scales: list[float]) -> nn.Module:
    conv = nn.Conv2d(len(scales), len(scales), 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.diag(torch.tensor(scales))[:, :, None, None])
    return nn.Sequential(OrderedDict(conv=conv, act=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten())).eval()


def positive_probes(channels: int, size: int = 4) -> torch.Tensor:
    """Values in [0.5, 1]: positive everywhere, so a ReLU keeps every one."""
    return 0.5 + 0.5 * torch.rand(3, channels, size, size, generator=torch.Generator().manual_seed(0))


#: The convolution with a section (counted on its histogram sample) and without one (the hook's own count).
SECTIONS = pytest.mark.parametrize("sections", [{}, {"layers": ["pool"]}], ids=["conv-with-section", "conv-without-section"])


@SECTIONS
def test_values_below_float16_smallest_normal_are_counted_among_the_nonzero_ones(sections):
    # Channel 1 scaled by 1e-6: values 5e-7 .. 1e-6, below 6.1e-05; channel 0 untouched and
    # channel 2 zeroed (zeros do not count): 1 of the 2 nonzero channels, 50%.
    report = report_of(underflow_model([1.0, 1e-6, 0.0]), positive_probes(3), **sections)
    alert = only(report, AlertKind.FP16_UNDERFLOW)
    assert (alert.severity, alert.layer, alert.value) == (Severity.INFO, "conv", 0.5)
    assert alert.numbers["below_normal_fraction"] == 0.5
    assert alert.numbers["layers_after"] == 3.0  # the ReLU, the pooling and the flattening carry them on
    assert alert.message.startswith("50% of its nonzero values lie below float16's smallest normal, 6.1e-05")
    assert "; so do the 3 layers right after it (act, pool, flat);" in alert.message
    assert "bfloat16 (normal down to 1.2e-38) holds them" in alert.message


def test_float16_underflow_boundary_is_at_or_above_the_fraction():
    # One of four channels tiny: exactly 25%.
    model, probes = underflow_model([1.0, 1.0, 1e-6, 1.0]), positive_probes(4)
    assert new_findings(report_of(model, probes, fp16_underflow_fraction=0.25)) == {("fp16_underflow", "conv")}
    assert new_findings(report_of(model, probes, fp16_underflow_fraction=0.2500001)) == set()


@SECTIONS
def test_float16_underflow_of_a_large_output_is_counted_on_an_even_sample(sections):
    # 4 channels of 64 x 64 = 16,384 values per probe, one channel tiny: the sample of 4,096
    # takes one value of every 4 in a row, so exactly a quarter of it comes from that channel.
    model = underflow_model([1.0, 1e-6, 1.0, 1.0])
    alert = only(report_of(model, positive_probes(4, 64), **sections), AlertKind.FP16_UNDERFLOW)
    assert (alert.layer, alert.value) == ("conv", 0.25)
    assert "25% of its nonzero values (of an even sample) lie below" in alert.message


# ----------------------------------------------------------------------------------------------
# 3. Training mode


class DropNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.still = nn.Dropout(0.0)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.still(self.drop(torch.relu(self.bn(self.conv(x))).mean((2, 3)))))


def drop_net() -> DropNet:
    torch.manual_seed(0)
    model = DropNet()
    with torch.no_grad():
        model.bn.running_mean.fill_(0.1)
        model.bn.running_var.fill_(0.5)
    return model


def test_a_model_given_in_training_mode_is_named_with_its_dropout_and_batchnorm(probes):
    model = drop_net().train()
    flags = [m.training for m in model.modules()]
    stats = (model.bn.running_mean.clone(), model.bn.running_var.clone(), int(model.bn.num_batches_tracked))
    report = report_of(model, probes)
    alert = only(report, AlertKind.TRAINING_MODE)
    assert (alert.severity, alert.layer) == (Severity.INFO, "")
    assert alert.numbers == {"modules_in_training": 6.0, "dropout_active": 1.0, "batchnorm_updating": 1.0}
    assert alert.message.startswith("the model was given in training mode; the report ran it in eval mode")
    assert "1 dropout layer would drop values at random (drop p=0.5)" in alert.message  # p=0 drops nothing
    assert "1 BatchNorm layer would normalise by each batch's own statistics and update their running ones (bn)" in alert.message
    # Left exactly as it was: every flag, and the statistics a training-mode pass would have moved.
    assert [m.training for m in model.modules()] == flags == [True] * 6
    assert torch.equal(model.bn.running_mean, stats[0]) and torch.equal(model.bn.running_var, stats[1])
    assert int(model.bn.num_batches_tracked) == stats[2]


def test_an_eval_model_with_one_dropout_left_in_training_mode(probes):
    model = drop_net().eval()
    model.drop.train()  # Monte Carlo dropout, say
    alert = only(report_of(model, probes), AlertKind.TRAINING_MODE)
    assert alert.message.startswith("the model is in eval mode, but 1 of its modules is in training mode (drop)")
    assert alert.numbers == {"modules_in_training": 1.0, "dropout_active": 1.0, "batchnorm_updating": 0.0}
    assert model.drop.training is True and model.training is False


def test_modules_whose_mode_changes_nothing_are_not_named(probes):
    model = drop_net().eval()
    model.conv.train()
    model.fc.train()
    assert new_findings(report_of(model, probes)) == set()


# ----------------------------------------------------------------------------------------------
# 4. What pruning would save


def prunable_conv_model() -> nn.Module:
    """conv (3 -> 8, 3x3, bias, padding 1) with filters 0 and 1 zero (dead), 5 = 2 x filter 4
    and 7 = filter 4 (one group of three duplicates: two of them redundant)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight[:2] = 0.0
        conv.weight[5] = 2.0 * conv.weight[4]
        conv.weight[7] = conv.weight[4]
    return nn.Sequential(OrderedDict(conv=conv, act=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(8, 2))).eval()


def test_pruning_savings_per_layer_and_in_all(probes):
    # Each filter: 3 x 3 x 3 = 27 weights and a bias; applied at 16 x 16 = 256 output positions.
    report = report_of(prunable_conv_model(), probes)
    dead = only(report, AlertKind.DEAD_FILTERS)
    assert dead.numbers == {"filters": 2.0, "params": 2 * 28.0, "mult_adds": 2 * 27 * 256.0}
    assert "removing them would save 56 parameters and 13,824 mult-adds per probe" in dead.message
    duplicates = only(report, AlertKind.DUPLICATE_FILTERS)
    assert duplicates.numbers == {"filters": 2.0, "params": 56.0, "mult_adds": 13824.0}
    assert "keeping one filter of each group of duplicates would remove 2 and save 56 parameters" in duplicates.message
    total = only(report, AlertKind.PRUNABLE)
    params = 8 * 28 + 8 * 2 + 2  # conv, fc
    assert (total.severity, total.layer) == (Severity.INFO, "")
    assert total.numbers == {"layers": 1.0, "filters": 4.0, "params": 112.0, "mult_adds": 27648.0}
    assert total.message == (
        f"removing the 4 dead and duplicate filters of 1 layer would save 112 parameters ({100 * 112 / params:.0f}% of the model's) "
        "and 27,648 mult-adds per probe, before the inputs the layers after them would lose"
    )


def test_pruning_counts_every_call_of_a_layer(probes):
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = prunable_conv_model().conv
            self.down = nn.Conv2d(8, 3, 1)

        def forward(self, x):
            y = self.conv(x)  # 16 x 16 positions
            return self.conv(self.down(y)[:, :, ::2, ::2]).mean((2, 3))  # then 8 x 8

    total = only(report_of(Twice().eval(), probes), AlertKind.PRUNABLE)
    assert total.numbers["mult_adds"] == 4 * 27 * (256 + 64.0)


def test_no_pruning_line_without_dead_or_duplicate_filters(probes):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    assert [a for a in report_of(model, probes).alerts if a.kind is AlertKind.PRUNABLE] == []


# ----------------------------------------------------------------------------------------------
# The page, the JSON, the Markdown and --fail-on


def test_new_alerts_and_thresholds_on_the_page_in_json_and_markdown():
    report = report_of(input_batchnorm_model(), checkerboard_probes(), preprocess_max_shift=150.5)
    data = report.to_dict()
    [alert] = [a for a in data["alerts"] if a["kind"] == "preprocessing"]
    assert alert["numbers"]["spread_ratio"] == pytest.approx(10.0, rel=1e-6)
    assert data["options"]["preprocess_max_shift"] == 150.5
    page = html.unescape(report.to_html())
    assert "more than 150.5 training standard deviations off its running means" in page
    assert "(channel means 136 training standard deviations off, RMS over 3 channels; spread 10x training's)" in page
    markdown = render_markdown(report)
    assert "| **warning** | `bn` | the input to bn has mean 110 where training saw 0, and spread 13.2" in markdown


MODEL_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4, 2)
            with torch.no_grad():
                self.bn.running_var.fill_(0.5)
            {mode}

        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))
    """
)


@pytest.mark.parametrize(
    ("mode", "scale", "fail_on", "code"),
    [
        ("self.eval()", 1.0, "info", 0),
        ("pass", 1.0, "info", 4),  # constructed in training mode: the info line gates
        ("pass", 1.0, "warning", 0),
        ("self.eval()", 255.0, "warning", 4),  # raw pixel values: the preprocessing warning gates
    ],
    ids=["eval-clean", "training-mode-gated-at-info", "training-mode-not-a-warning", "preprocessing-gated"],
)
def test_fail_on_gates_the_new_alerts(tmp_path, mode, scale, fail_on, code):
    from cnnreport.cli.main import main

    (tmp_path / "net.py").write_text(MODEL_FILE.format(mode=mode))
    probes = tmp_path / "x.npy"
    values = np.random.default_rng(0).standard_normal((3, 3, 12, 12))
    if scale != 1.0:
        values = np.random.default_rng(0).integers(0, 256, (3, 3, 12, 12))
    np.save(probes, values.astype(np.float32))
    out = tmp_path / "report.html"
    args = ["generate", f"{tmp_path / 'net.py'}:Net", "--probes", str(probes), "-o", str(out), "--no-graph", "-q", "--fail-on", fail_on]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, result.output
    if code == 4:
        assert f"--fail-on {fail_on}" in result.output


@SECTIONS
def test_float16_counts_add_up_over_batches(sections):
    # Batches of one probe, each its own share: probes 0 and 1 have 3 nonzero channels, one
    # tiny; probe 2 only the tiny one. Over the even samples: 3 tiny thirds of 7 nonzero thirds.
    model = underflow_model([1.0, 1e-6, 1.0])
    probes = positive_probes(3, 64)
    probes[2, [0, 2]] = 0.0
    alert = only(report_of(model, probes, batch_size=1, **sections), AlertKind.FP16_UNDERFLOW)
    assert alert.value == pytest.approx(3 / 7, abs=0.005)


def test_float16_sample_runs_cover_each_stratum_once():
    from cnnreport.capture.activations import FP16_SAMPLE_RUN, FP16_SAMPLES_PER_PROBE, _fp16_sample_index

    for count in (FP16_SAMPLES_PER_PROBE + 1, 3 * 64 * 64, 1_000_003):
        index = _fp16_sample_index(count)
        assert index.dtype == torch.int64 and index.numel() == FP16_SAMPLES_PER_PROBE
        runs = index.reshape(-1, FP16_SAMPLE_RUN)
        step = count // (FP16_SAMPLES_PER_PROBE // FP16_SAMPLE_RUN)
        # consecutive values, each run wholly inside its own stratum, offsets not all zero
        assert bool((runs[:, 1:] - runs[:, :-1] == 1).all())
        stratum = torch.arange(runs.shape[0]) * step
        assert bool((runs[:, 0] >= stratum).all()) and bool((runs[:, -1] < stratum + step).all())
        if step > FP16_SAMPLE_RUN:
            assert bool((runs[:, 0] > stratum).any())
        assert int(index.max()) < count


@SECTIONS
def test_float16_smallest_normal_itself_is_not_tiny(sections):
    # 2**-14 is float16's smallest normal, exact in float32: a layer of only that value is normal.
    model = underflow_model([2.0**-14, 2.0**-14])
    probes = torch.ones(2, 2, 64, 64)
    assert not [a for a in report_of(model, probes, **sections).alerts if a.kind == AlertKind.FP16_UNDERFLOW]
    halved = underflow_model([2.0**-15, 2.0**-14])  # one channel just below: half the values tiny
    assert only(report_of(halved, probes, **sections), AlertKind.FP16_UNDERFLOW).value == 0.5


def test_float16_counts_of_a_bfloat16_model():
    # bfloat16 tensors are counted in torch (numpy has no bfloat16): the same figure.
    model = underflow_model([1.0, 2.0**-20, 1.0, 1.0]).to(torch.bfloat16)
    alert = only(report_of(model, positive_probes(4, 64)), AlertKind.FP16_UNDERFLOW)
    assert alert.value == 0.25
