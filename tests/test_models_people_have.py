"""Issue 3's "models people really have": each kind still gets a complete, honest report."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from cnnreport import build_report


def _report(model, probes, **kw):
    kw.setdefault("progress", False)
    return build_report(model, probes, **kw)


def test_conv1d_network_sections_show_strips():
    model = nn.Sequential(nn.Conv1d(2, 6, 5, padding=2), nn.ReLU(), nn.Conv1d(6, 4, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3))
    report = _report(model, torch.randn(3, 2, 40))
    assert [s.name for s in report.sections] == ["0", "2"]
    first = report.sections[0]
    assert first.output_shape == [6, 40]
    assert len(first.mosaics) == 3
    assert any("1-D" in note for note in first.notes)
    assert report.model.total_params == sum(p.numel() for p in model.parameters())
    assert len(report.probes[0].predictions) == 3


def test_conv3d_network_uses_a_stated_projection():
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 3, padding=1))
    report = _report(model, torch.randn(2, 1, 6, 12, 12), attributions=False)
    assert len(report.sections) == 2
    assert report.sections[0].output_shape == [4, 6, 12, 12]
    assert any("projection" in note for note in report.sections[0].notes)
    assert report.sections[0].filters is not None
    assert "middle depth slice" in report.sections[0].filters.note


def test_depthwise_and_grouped_convolutions():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise
        nn.Conv2d(8, 12, 3, padding=1, groups=4),  # grouped
        nn.Conv2d(12, 6, 1),  # pointwise
    )
    report = _report(model, torch.rand(2, 3, 16, 16))
    notes = [s.filters.note for s in report.sections]
    assert "depthwise" in notes[1]
    assert "4 groups" in notes[2]
    assert "1x1 kernels as a matrix" in notes[3]
    assert report.model.total_params == sum(p.numel() for p in model.parameters())


def test_model_without_convolution_is_reported_and_says_so():
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.ReLU(), nn.Linear(16, 4))
    report = _report(model, torch.rand(2, 3, 4, 4))
    assert report.sections == []
    assert any("no convolution" in note for note in report.notes)
    assert report.model.total_params == sum(p.numel() for p in model.parameters())
    assert len(report.layers) >= 5
    assert report.to_html().count("<section") >= 3


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.relu(self.conv(self.stem(x))))


def test_module_called_twice_gets_two_sections():
    report = _report(Twice(), torch.rand(2, 3, 8, 8))
    labels = [s.label for s in report.sections]
    assert labels == ["stem", "conv", "conv (call 2)"]
    assert report.sections[1].filters is not None and report.sections[2].filters is None
    assert report.model.total_params == sum(p.numel() for p in Twice().parameters())


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y, y.mean((2, 3))


class DictOut(TupleOut):
    def forward(self, x):
        y = self.conv(x)
        return {"mask": y, "logits": y.mean((2, 3))}


@dataclass
class SegOutput:
    mask: torch.Tensor
    aux: torch.Tensor


class DataclassOut(TupleOut):
    def forward(self, x):
        y = self.conv(x)
        return SegOutput(mask=y, aux=y.sum())


@pytest.mark.parametrize("cls, predicts", [(TupleOut, False), (DictOut, True), (DataclassOut, False)])
def test_structured_outputs(cls, predicts):
    report = _report(cls(), torch.rand(2, 3, 8, 8))
    assert len(report.sections) == 1
    assert bool(report.probes[0].predictions) is predicts


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, image, depth):
        fa, fb = self.a(image).mean((2, 3)), self.b(depth).mean((2, 3))
        return self.head(torch.cat([fa, fb], 1))


def test_model_with_two_inputs_via_the_python_api():
    report = _report(TwoInputs(), (torch.rand(3, 3, 8, 8), torch.rand(3, 1, 8, 8)))
    assert [s.name for s in report.sections] == ["a", "b"]
    assert len(report.probes) == 3 and len(report.probes[0].predictions) == 2


def test_training_model_reported_in_eval_then_restored_with_frozen_batchnorm():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Conv2d(4, 2, 3))
    model.train()
    model[1].eval()  # frozen BatchNorm inside a training model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = _report(model, torch.rand(4, 3, 10, 10))
    b = _report(model, torch.rand(4, 3, 10, 10))
    assert [m.training for m in model.modules()] == [True, True, False, True, True]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert a.model.was_training
    assert b.sections[0].stats.numel == 4 * 4 * 8 * 8


def test_batchnorm_with_a_single_probe():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).train()
    report = _report(model, torch.rand(1, 3, 8, 8))
    assert len(report.probes) == 1
    assert report.probes[0].predictions


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_reports_statistics_in_float32(dtype):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).to(dtype)
    probes = torch.rand(2, 3, 12, 12)
    report = _report(model, probes)
    assert report.model.dtype == str(dtype).replace("torch.", "")
    with torch.no_grad():
        reference = model[0](probes.to(dtype)).float()
    assert report.sections[0].stats.mean == pytest.approx(reference.mean().item(), rel=1e-3)
    assert isinstance(report.sections[0].stats.mean, float)
    assert all(p.dtype == dtype for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_on_gpu_reports_and_stays_there():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).cuda()
    report = _report(model, torch.rand(2, 3, 16, 16))
    assert report.model.device.startswith("cuda")
    assert len(report.sections) == 2 and report.attributions
    assert all(p.is_cuda for p in model.parameters())


def test_monai_metatensor_networks_2d_and_3d():
    monai = pytest.importorskip("monai")
    from monai.data import MetaTensor
    from monai.networks.nets import DenseNet121, UNet

    torch.manual_seed(0)
    unet = UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    report = _report(unet, MetaTensor(torch.rand(2, 1, 32, 32)))
    assert report.model.output_shape == [1, 2, 32, 32]
    assert len(report.sections) == sum(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in unet.modules())
    assert report.graph_svg and report.probes[0].predictions == []  # a segmentation map, no classes
    dense = DenseNet121(spatial_dims=3, in_channels=1, out_channels=3, init_features=8, growth_rate=4, block_config=(2, 2, 2, 2))
    report = _report(dense, MetaTensor(torch.rand(2, 1, 32, 32, 32)))
    assert any("projection over depth" in note for note in report.sections[0].notes)
    assert report.model.total_params == sum(p.numel() for p in dense.parameters())
    assert report.attributions and len(report.probes[0].predictions) == 3
    assert monai.__version__


def test_without_probes_every_section_says_its_input_is_synthetic():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    report = build_report(model, None, input_size=(3, 16, 16), progress=False)
    assert report.synthetic_input and [a.kind.value for a in report.alerts].count("synthetic_input") == 1
    html = report.to_html()
    assert "Synthetic input." in html  # the overview banner
    assert html.count('class="badge badge-synthetic"') == len(report.sections) == 2
