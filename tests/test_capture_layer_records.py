"""What ActivationCapture keeps of each module call, on tiny models built here: the records and
their order, the ranges derived from a BatchNorm's or a clamp's input, input RMS, saturation,
float16 counts, tiles per probe limit, the first BatchNorm's input, Grad-CAM, skipped calls.

Expected values are float64 plain torch on the same modules, or literals worked out by hand.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_globals

from cnnreport.capture import activations as act
from cnnreport.capture.activations import ActivationCapture, LayerCapture
from cnnreport.capture.tracing import passive_hook
from cnnreport.errors import ForwardError

NAN = float("nan")


def run(model: nn.Module, batches, detailed=(), grad=False, **kwargs) -> ActivationCapture:
    """Forward each ``(first_probe, tensor)`` batch through ``model`` with a capture."""
    capture = ActivationCapture(model, set(detailed), **kwargs)
    with capture, torch.set_grad_enabled(grad):
        for first, x in batches:
            capture.start_batch(first)
            model(x)
    return capture


def by_name(capture: ActivationCapture) -> dict[str, LayerCapture]:
    return {f"{layer.name}#{layer.call_index}": layer for layer in capture.result().layers}


def stack_model() -> nn.Sequential:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 4))
    with torch.no_grad():
        model[1].running_mean.copy_(torch.tensor([0.3, -0.2, 0.1]))
        model[1].running_var.copy_(torch.tensor([0.5, 2.0, 1.5]))
        model[1].weight.copy_(torch.tensor([1.5, -0.7, 0.9]))
        model[1].bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    return model.eval()


def probes(n: int = 3, seed: int = 4) -> torch.Tensor:
    return torch.randn(n, 2, 4, 4, generator=torch.Generator().manual_seed(seed))


def outputs_of(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's output, float64 copies, by plain torch."""
    found = []
    with torch.no_grad():
        for module in model:
            x = module(x)
            found.append(x.detach().clone().double())
    return found


def rms(t: torch.Tensor) -> list[float]:
    return t.double().flatten(1).pow(2).mean(1).sqrt().tolist()


# -- the records ---------------------------------------------------------------------------------


def test_each_leaf_call_is_one_record_in_execution_order():
    model = stack_model()
    x = probes()
    capture = run(model, [(0, x)], detailed={"0"})
    layers = capture.result().layers
    assert [(l.name, l.type, l.call_index, l.order) for l in layers] == [
        ("0", "Conv2d", 1, 0), ("1", "BatchNorm2d", 1, 1), ("2", "ReLU", 1, 2), ("3", "Flatten", 1, 3), ("4", "Linear", 1, 4)
    ]
    assert [l.output_shape for l in layers] == [[3, 4, 4], [3, 4, 4], [3, 4, 4], [48], [4]]
    assert [l.numel_per_probe for l in layers] == [48, 48, 48, 48, 4]
    assert [l.detailed for l in layers] == [True, False, False, False, False]
    assert capture.completed == ["0", "1", "2", "3", "4"]
    assert [l.name for l in capture.result().detailed()] == ["0"]


def test_every_records_figures_equal_float64():
    model = stack_model()
    x = probes()
    capture = run(model, [(0, x)], detailed={"0", "4"})
    outs = outputs_of(model, x)
    assert [l.detailed for l in capture.result().layers] == [True, False, False, False, True]
    for layer, out in zip(capture.result().layers, outs):
        flat = out.flatten(1)
        np.testing.assert_allclose(layer.probe_min, flat.amin(1).numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(layer.probe_max, flat.amax(1).numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(layer.output_rms, rms(out), rtol=1e-5)
        assert layer.probe_nan == [0, 0, 0] and layer.probe_inf == [0, 0, 0]
        if layer.detailed:
            np.testing.assert_allclose(layer.probe_mean, flat.mean(1).numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(layer.probe_std, flat.std(1, correction=0).numpy(), rtol=1e-4)
            assert layer.probe_zeros == (flat == 0).sum(1).tolist()
        else:
            assert all(math.isnan(v) for v in layer.probe_mean + layer.probe_std)
            assert layer.probe_zeros == [0, 0, 0]
    relu = by_name(capture)["2#1"]
    assert min(relu.probe_min) == 0.0  # derived from the BatchNorm's range, clamped at 0


def test_input_rms_is_each_calls_own_input():
    model = stack_model()
    x = probes()
    capture = run(model, [(0, x)], detailed={"2"})
    outs = outputs_of(model, x)
    inputs = [x.double()] + outs[:-1]
    for layer, inp in zip(capture.result().layers, inputs):
        np.testing.assert_allclose(layer.input_rms, rms(inp), rtol=1e-5)


def test_an_input_changed_in_place_between_two_modules_is_measured_again():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)

        def forward(self, x):
            y = self.a(x)
            y.mul_(3.0)  # no module: the version counter moves on
            return self.b(y)

    torch.manual_seed(0)
    net = Net().eval()
    x = probes(2)
    capture = run(net, [(0, x)])
    with torch.no_grad():
        expected = rms(net.a(x) * 3.0)
    np.testing.assert_allclose(by_name(capture)["b#1"].input_rms, expected, rtol=1e-5)


def test_batches_add_up_and_call_counts_restart():
    model = stack_model()
    x = probes(5, seed=9)
    capture = run(model, [(0, x[:2]), (2, x[2:])], detailed={"0"})
    layers = capture.result().layers
    assert [l.call_index for l in layers] == [1, 1, 1, 1, 1]
    outs = outputs_of(model, x)
    for layer, out in zip(layers, outs):
        assert layer.probes == 5
        np.testing.assert_allclose(layer.probe_max, out.flatten(1).amax(1).numpy(), rtol=1e-6, atol=1e-6)
        if out.dim() >= 3:
            np.testing.assert_allclose(layer.channel_min, out.amin((0, 2, 3)).numpy(), rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(layer.channel_max, out.amax((0, 2, 3)).numpy(), rtol=1e-6, atol=1e-6)
        else:
            assert layer.channel_min is None
    conv = layers[0]
    assert len(conv.channel_means) == 5
    assert [len(sample) for sample in conv.samples] == [48] * 5  # every probe's whole output
    np.testing.assert_allclose(layers[1].input_rms, rms(outs[0]), rtol=1e-5)  # the BatchNorm's, both batches
    np.testing.assert_allclose(np.stack(conv.samples), outs[0].flatten(1).numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.stack(conv.channel_means), outs[0].mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)


def test_a_module_called_twice_has_two_records():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            return self.conv(self.conv(x) + 1.0)

    torch.manual_seed(1)
    net = Twice().eval()
    x = probes(2)
    capture = run(net, [(0, x), (2, x * 2)])
    records = by_name(capture)
    assert sorted(records) == ["conv#1", "conv#2"]
    assert (records["conv#1"].order, records["conv#2"].order) == (0, 1)
    with torch.no_grad():
        first = torch.cat([net.conv(x), net.conv(x * 2)]).double()
        second = torch.cat([net.conv(net.conv(x) + 1.0), net.conv(net.conv(x * 2) + 1.0)]).double()
    np.testing.assert_allclose(records["conv#1"].output_rms, rms(first), rtol=1e-5)
    np.testing.assert_allclose(records["conv#2"].output_rms, rms(second), rtol=1e-5)


def test_largest_output_per_probe_in_bytes():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Flatten(), nn.Linear(48, 2)).eval()
    capture = run(model, [(0, probes(3))])
    assert capture.largest_per_probe == 3 * 4 * 4 * 4  # 48 float32 values
    model = model.double()
    capture = run(model, [(0, probes(2).double())])
    assert capture.largest_per_probe == 48 * 8


def test_samples_per_probe_shrink_with_the_number_of_probes():
    model = nn.Identity()
    assert ActivationCapture(model, set()).samples_per_probe == 4096
    assert ActivationCapture(model, set(), total_probes=8).samples_per_probe == 4096
    assert ActivationCapture(model, set(), total_probes=32).samples_per_probe == 2048
    assert ActivationCapture(model, set(), total_probes=48).samples_per_probe == 1365
    assert ActivationCapture(model, set(), total_probes=100000).samples_per_probe == 1


def test_a_sample_per_probe_is_drawn_for_each_section_layer():
    model = nn.Sequential(nn.Conv2d(2, 4, 1)).eval()
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    capture = run(model, [(0, x)], detailed={"0"}, total_probes=65536 // 50)  # 50 per probe
    (layer,) = capture.result().layers
    assert capture.samples_per_probe == 50
    assert [s.shape for s in layer.samples] == [(50,), (50,), (50,)]
    assert layer.fp16_sampled is True
    with torch.no_grad():
        out = model(x).flatten(1).double()
    for sample, row in zip(layer.samples, out):
        assert set(np.round(sample.astype(np.float64), 5)) <= set(np.round(row.numpy(), 5))


def test_a_small_section_layer_is_sampled_whole():
    model = nn.Sequential(nn.Linear(3, 5)).eval()
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    capture = run(model, [(0, x)], detailed={"0"})
    (layer,) = capture.result().layers
    with torch.no_grad():
        out = model(x)
    assert layer.fp16_sampled is False
    np.testing.assert_array_equal(np.stack(layer.samples), out.numpy())
    # a flat (N, F) output is its own channel means, and its range is theirs
    np.testing.assert_array_equal(np.stack(layer.channel_means), out.numpy())
    np.testing.assert_array_equal(layer.channel_min, out.numpy().min(0))
    np.testing.assert_array_equal(layer.channel_max, out.numpy().max(0))
    assert layer.tiles == [] and layer.tile_note == ""


def test_tiles_only_for_the_first_max_probes():
    model = nn.Sequential(nn.Conv2d(2, 3, 1)).eval()
    x = torch.randn(5, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    capture = run(model, [(0, x[:2]), (2, x[2:4]), (4, x[4:])], detailed={"0"}, max_probes=3, max_channels=2, tile_size=4)
    (layer,) = capture.result().layers
    assert len(layer.tiles) == 3
    assert capture.tile_bytes == 3 * 2 * 4 * 4
    with torch.no_grad():
        out = model(x)
    for i, tiles in enumerate(layer.tiles):
        expected = torch.argsort(out[i].mean((1, 2)), descending=True)[:2].tolist()
        assert tiles.channels == expected
    assert layer.probes == 5


def test_no_tiles_without_channels_to_show():
    model = nn.Sequential(nn.Conv2d(2, 3, 1)).eval()
    capture = run(model, [(0, probes(2))], detailed={"0"}, max_channels=0)
    (layer,) = capture.result().layers
    assert layer.tiles == [] and capture.tile_bytes == 0
    assert len(layer.channel_means) == 2


def test_a_one_dimensional_section_is_tiled_as_strips():
    model = nn.Sequential(nn.Conv1d(2, 3, 1)).eval()
    x = torch.randn(2, 2, 7, generator=torch.Generator().manual_seed(5))
    capture = run(model, [(0, x)], detailed={"0"}, max_channels=3, tile_size=8)
    (layer,) = capture.result().layers
    assert layer.tile_note == "1-D activations: each tile is one channel's signal as a strip"
    assert [t.tiles.shape for t in layer.tiles] == [(3, 1, 7), (3, 1, 7)]
    with torch.no_grad():
        out = model(x).double()
    np.testing.assert_allclose(np.stack(layer.channel_means), out.mean(2).numpy(), rtol=1e-5, atol=1e-6)


def test_a_section_with_nan_takes_channel_means_over_the_finite_values():
    class Holes(nn.Module):
        def forward(self, x):
            y = x.clone()
            y[0, 0, 0, 0] = NAN
            y[1, 1] = NAN  # a whole channel of probe 1
            return y

    model = nn.Sequential(Holes()).eval()
    x = torch.arange(2 * 2 * 2 * 2, dtype=torch.float32).reshape(2, 2, 2, 2)
    capture = run(model, [(0, x)], detailed={"0"}, max_channels=2, tile_size=4)
    (layer,) = capture.result().layers
    means = np.stack(layer.channel_means)
    np.testing.assert_allclose(means[0], [2.0, 5.5])  # (1 + 2 + 3) / 3 and 4..7
    assert means[1, 0] == 9.5 and math.isnan(means[1, 1])
    assert layer.probe_nan == [1, 4]
    np.testing.assert_array_equal(layer.channel_min[0], NAN)  # amin propagates NaN: the alert's cue
    assert [t.channels for t in layer.tiles] == [[1, 0], [0, 1]]
    assert [t.nonfinite for t in layer.tiles] == [[0, 1], [0, 4]]


def test_a_non_section_layer_with_nan_keeps_a_nan_channel_range():
    class Holes(nn.Module):
        def forward(self, x):
            y = x.clone()
            y[0, 1, 0, 0] = NAN
            return y

    model = nn.Sequential(Holes()).eval()
    x = torch.tensor([[[[1.0, 2.0]], [[3.0, -4.0]]], [[[0.5, 6.0]], [[7.0, 8.0]]]])
    capture = run(model, [(0, x)])
    (layer,) = capture.result().layers
    assert layer.channel_min[0] == 0.5 and layer.channel_max[0] == 6.0
    assert math.isnan(layer.channel_min[1]) and math.isnan(layer.channel_max[1])


def test_a_flat_output_outside_a_section_keeps_no_channel_range():
    model = nn.Sequential(nn.Linear(3, 4)).eval()
    capture = run(model, [(0, torch.randn(2, 3))])
    (layer,) = capture.result().layers
    assert layer.channel_min is None and layer.channel_max is None
    assert layer.channel_means == [] and layer.samples == []


# -- ranges derived, not measured ---------------------------------------------------------------


def test_derived_ranges_of_a_batchnorm_and_the_relu_after_it_equal_the_measured_ones():
    model = stack_model()
    x = probes(4, seed=12)
    capture = run(model, [(0, x)])
    outs = outputs_of(model, x)
    records = by_name(capture)
    for key, out in (("1#1", outs[1]), ("2#1", outs[2])):
        np.testing.assert_allclose(records[key].channel_min, out.amin((0, 2, 3)).numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(records[key].channel_max, out.amax((0, 2, 3)).numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(records[key].probe_min, out.flatten(1).amin(1).numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(records[key].probe_max, out.flatten(1).amax(1).numpy(), rtol=1e-6, atol=1e-6)


def batchnorm(weight, bias=(0.5, -1.0), mean=(1.0, -2.0), var=(4.0, 0.25), **kwargs) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(2, **kwargs)
    with torch.no_grad():
        if bn.weight is not None:
            bn.weight.copy_(torch.tensor(weight))
            bn.bias.copy_(torch.tensor(bias))
        bn.running_mean.copy_(torch.tensor(mean))
        bn.running_var.copy_(torch.tensor(var))
    return bn.eval()


def test_batchnorm_affine_maps_the_extremes_and_swaps_them_for_a_negative_weight():
    bn = batchnorm((2.0, -3.0))
    low = torch.tensor([[-1.0, 0.0], [2.0, -4.0]])
    high = torch.tensor([[3.0, 1.0], [5.0, 2.0]])
    with torch.no_grad():
        got_low, got_high = act._batchnorm_affine(bn, (low, high), torch.float32)
    # y = w (x - m) / sqrt(v + eps) + b, in float64 by hand
    def y(x, c):
        w, b, m, v = (2.0, -3.0)[c], (0.5, -1.0)[c], (1.0, -2.0)[c], (4.0, 0.25)[c]
        return w * (x - m) / math.sqrt(v + 1e-5) + b

    expected_low = [[y(-1.0, 0), y(1.0, 1)], [y(2.0, 0), y(2.0, 1)]]
    expected_high = [[y(3.0, 0), y(0.0, 1)], [y(5.0, 0), y(-4.0, 1)]]
    np.testing.assert_allclose(got_low.numpy(), expected_low, rtol=1e-6)
    np.testing.assert_allclose(got_high.numpy(), expected_high, rtol=1e-6)


def test_batchnorm_affine_without_weights_maps_the_extremes_in_order():
    bn = batchnorm(None, affine=False)
    low, high = torch.tensor([[-1.0, 0.0]]), torch.tensor([[3.0, 1.0]])
    got_low, got_high = act._batchnorm_affine(bn, (low, high), torch.float32)
    np.testing.assert_allclose(got_low.numpy(), [[-2.0 / math.sqrt(4 + 1e-5), 2.0 / math.sqrt(0.25 + 1e-5)]], rtol=1e-6)
    np.testing.assert_allclose(got_high.numpy(), [[2.0 / math.sqrt(4 + 1e-5), 3.0 / math.sqrt(0.25 + 1e-5)]], rtol=1e-6)


@pytest.mark.parametrize("dims, cls", [(1, nn.BatchNorm1d), (3, nn.BatchNorm3d)])
def test_batchnorm_affine_of_each_rank(dims, cls):
    bn = cls(2).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([-1.0, 2.0]))
        bn.running_mean.copy_(torch.tensor([1.0, 0.0]))
    low, high = torch.tensor([[0.0, -1.0]]), torch.tensor([[2.0, 4.0]])
    with torch.no_grad():
        got_low, got_high = act._batchnorm_affine(bn, (low, high), torch.float32)
    s = math.sqrt(1 + 1e-5)
    np.testing.assert_allclose(got_low.numpy(), [[-1.0 / s, -2.0 / s]], rtol=1e-6)
    np.testing.assert_allclose(got_high.numpy(), [[1.0 / s, 8.0 / s]], rtol=1e-6)


def test_batchnorm_affine_of_half_precision_rounds_as_the_module_does():
    bn = batchnorm((2.0, -3.0)).half()
    x = torch.tensor([[[[0.1]], [[0.3]]], [[[0.7]], [[-0.9]]]], dtype=torch.float16)
    low = high = x.reshape(2, 2).float()
    got_low, got_high = act._batchnorm_affine(bn, (low, high), torch.float16)
    with torch.no_grad():
        expected = bn(x).reshape(2, 2).float()
    assert torch.equal(got_low, expected) and torch.equal(got_high, expected)


def test_batchnorm_affine_is_none_where_it_is_no_fixed_map():
    low, high = torch.zeros(1, 2), torch.ones(1, 2)
    training = batchnorm((1.0, 1.0)).train()
    assert act._batchnorm_affine(training, (low, high), torch.float32) is None
    untracked = nn.BatchNorm2d(2, track_running_stats=False).eval()
    assert act._batchnorm_affine(untracked, (low, high), torch.float32) is None
    bn = batchnorm((1.0, 1.0))
    bn.running_var = None
    assert act._batchnorm_affine(bn, (low, high), torch.float32) is None
    bn = batchnorm((1.0, 1.0))
    bn.running_mean = None
    assert act._batchnorm_affine(bn, (low, high), torch.float32) is None
    bn = batchnorm((1.0, 1.0))
    assert act._batchnorm_affine(bn, (torch.zeros(2), torch.ones(2)), torch.float32) is None
    assert act._batchnorm_affine(bn, (torch.zeros(1, 3), torch.ones(1, 3)), torch.float32) is None


def reduced(low, high, shape):
    return act._Reduced(None, 0, shape, [1.0], (torch.tensor(low), torch.tensor(high)))


def test_derived_range_of_clamps():
    seen = reduced([[-2.0, 0.5]], [[3.0, 9.0]], (1, 2, 1, 1))
    out = torch.zeros(1, 2, 1, 1)
    relu = act.RANGE_FROM_INPUT[nn.ReLU]
    low, high = act._derived_range(nn.ReLU(), seen, out, relu, None)
    assert (low.tolist(), high.tolist()) == ([[0.0, 0.5]], [[3.0, 9.0]])
    hardtanh = nn.Hardtanh(-1.0, 4.0)
    low, high = act._derived_range(hardtanh, seen, out, act.RANGE_FROM_INPUT[nn.Hardtanh], None)
    assert (low.tolist(), high.tolist()) == ([[-1.0, 0.5]], [[3.0, 4.0]])
    low, high = act._derived_range(nn.ReLU6(), seen, out, act.RANGE_FROM_INPUT[nn.ReLU6], None)
    assert (low.tolist(), high.tolist()) == ([[0.0, 0.5]], [[3.0, 6.0]])
    above = reduced([[7.0, -3.0]], [[9.0, -1.0]], (1, 2, 1, 1))  # a channel above the limit, one below zero
    low, high = act._derived_range(nn.ReLU6(), above, out, act.RANGE_FROM_INPUT[nn.ReLU6], None)
    assert (low.tolist(), high.tolist()) == ([[6.0, 0.0]], [[6.0, 0.0]])


def test_derived_range_of_a_batchnorm():
    bn = batchnorm((2.0, -3.0))
    seen = reduced([[-1.0, 0.0]], [[3.0, 1.0]], (1, 2, 1, 1))
    with torch.no_grad():
        low, high = act._derived_range(bn, seen, torch.zeros(1, 2, 1, 1), None, act._batchnorm_affine)
    np.testing.assert_allclose(low.numpy(), [[2.0 * (-2.0) / math.sqrt(4 + 1e-5) + 0.5, -3.0 * 3.0 / math.sqrt(0.25 + 1e-5) - 1.0]], rtol=1e-6)
    np.testing.assert_allclose(high.numpy(), [[2.0 * 2.0 / math.sqrt(4 + 1e-5) + 0.5, -3.0 * 2.0 / math.sqrt(0.25 + 1e-5) - 1.0]], rtol=1e-6)


def test_derived_range_is_none_where_it_must_be_measured():
    relu = act.RANGE_FROM_INPUT[nn.ReLU]
    seen = reduced([[-2.0, 0.5]], [[3.0, 9.0]], (1, 2, 1, 1))
    out = torch.zeros(1, 2, 1, 1)
    assert act._derived_range(nn.Identity(), seen, out, None, None) is None
    assert act._derived_range(nn.ReLU(), None, out, relu, None) is None
    assert act._derived_range(nn.ReLU(), act._Reduced(None, 0, (1, 2, 1, 1), [1.0], None), out, relu, None) is None
    assert act._derived_range(nn.ReLU(), seen, torch.zeros(1, 2, 1, 2), relu, None) is None
    hooked = nn.ReLU()
    hooked.register_forward_hook(lambda m, i, o: o * 2)
    assert act._derived_range(hooked, seen, out, relu, None) is None


def test_only_passive_hooks_tells_ours_from_a_users():
    module = nn.ReLU()
    assert act._only_passive_hooks(module) is True
    module.register_forward_pre_hook(passive_hook(lambda m, i: None))
    module.register_forward_hook(passive_hook(lambda m, i, o: None))
    assert act._only_passive_hooks(module) is True
    handle = module.register_forward_pre_hook(lambda m, i: None)
    assert act._only_passive_hooks(module) is False
    handle.remove()
    handle = module.register_forward_hook(lambda m, i, o: None)
    assert act._only_passive_hooks(module) is False
    handle.remove()
    for register in (module_globals.register_module_forward_pre_hook, module_globals.register_module_forward_hook):
        handle = register(lambda *args: None)
        try:
            assert act._only_passive_hooks(module) is False
        finally:
            handle.remove()
    assert act._only_passive_hooks(module) is True


def test_a_users_hook_on_a_batchnorm_makes_its_range_measured():
    model = stack_model()
    model[1].register_forward_hook(lambda m, i, o: o + 100.0)
    x = probes(2)
    capture = run(model, [(0, x)])
    with torch.no_grad():
        out = model[1](model[0](x)).double()  # the hook runs here too
    records = by_name(capture)
    np.testing.assert_allclose(records["1#1"].channel_min, out.amin((0, 2, 3)).numpy(), rtol=1e-6)
    assert min(records["1#1"].probe_min) > 90.0


def test_a_batchnorm_in_a_section_measures_its_range():
    model = stack_model()
    x = probes(2)
    capture = run(model, [(0, x)], detailed={"1"})
    out = outputs_of(model, x)[1]
    records = by_name(capture)
    np.testing.assert_allclose(records["1#1"].channel_max, out.amax((0, 2, 3)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(records["1#1"].probe_mean, out.flatten(1).mean(1).numpy(), rtol=1e-5, atol=1e-6)


def test_version_of_a_tensor_and_of_an_inference_tensor():
    t = torch.zeros(3)
    before = act._version_of(t)
    t.add_(1.0)
    assert act._version_of(t) == before + 1
    with torch.inference_mode():
        frozen = torch.zeros(3)
    assert act._version_of(frozen) is None


def test_inference_mode_outputs_are_captured_too():
    model = stack_model()
    x = probes(2)
    capture = ActivationCapture(model, set())
    with capture, torch.inference_mode():
        capture.start_batch()
        model(x)
    outs = outputs_of(model, x)
    for layer, out in zip(capture.result().layers, outs):
        np.testing.assert_allclose(layer.probe_max, out.flatten(1).amax(1).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(by_name(capture)["2#1"].input_rms, rms(outs[1]), rtol=1e-5)


# -- saturation -----------------------------------------------------------------------------------


def test_saturation_counts_values_within_a_thousandth_of_the_range_from_a_limit():
    layer = LayerCapture("t", "Hardtanh", 1, 0, [6], False)
    lo, hi = -1.0, 3.0
    tol = 0.001 * (hi - lo)
    x = torch.tensor([[lo, lo + tol, lo + 2 * tol, 0.0, hi - 2 * tol, hi - tol]], dtype=torch.float64)
    act._record_saturation(layer, x, (lo, hi))
    assert layer.limits == (-1.0, 3.0)
    assert (layer.saturated_low, layer.saturated_high) == (2, 1)
    act._record_saturation(layer, torch.tensor([[hi, hi, lo]], dtype=torch.float64), (lo, hi))
    assert (layer.saturated_low, layer.saturated_high) == (3, 3)


def test_a_sigmoid_and_a_hardtanh_record_their_limits_and_saturation():
    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.same, self.sig, self.ht = nn.Identity(), nn.Sigmoid(), nn.Hardtanh(-0.5, 0.25)

        def forward(self, x):
            return self.sig(self.same(x)), self.ht(x)

    model = Both().eval()
    x = torch.tensor([[-20.0, -0.1, 0.0, 0.2, 20.0, 0.1, -0.4995, 0.24975]])
    capture = run(model, [(0, x)])
    records = by_name(capture)
    assert records["same#1"].limits is None
    sig = records["sig#1"]
    assert sig.limits == (0.0, 1.0)
    y = torch.sigmoid(x.double())
    assert (sig.saturated_low, sig.saturated_high) == (int((y <= 0.001).sum()), int((y >= 0.999).sum())) == (1, 1)
    ht = records["ht#1"]
    assert ht.limits == (-0.5, 0.25)
    # tol 0.00075: low at y <= -0.49925 (-20 clamped, -0.4995), high at y >= 0.24925 (20 clamped, 0.24975)
    assert (ht.saturated_low, ht.saturated_high) == (2, 2)


# -- float16 counts --------------------------------------------------------------------------------


def test_float16_counts_of_a_layer_outside_a_section():
    model = nn.Sequential(nn.Identity()).eval()
    x = torch.tensor([[0.0, 1e-5, 2.0**-14, 1.0, -3e-5, NAN, -0.0, 6.0e-05]])
    capture = run(model, [(0, x)])
    (layer,) = capture.result().layers
    assert (layer.fp16_nonzero, layer.fp16_tiny, layer.fp16_sampled) == (5, 3, False)


def test_float16_counts_of_a_bfloat16_layer():
    model = nn.Sequential(nn.Identity()).eval()
    x = torch.tensor([[0.0, 1e-5, 2.0**-14, 1.0, -3e-5]], dtype=torch.bfloat16)
    capture = run(model, [(0, x)])
    (layer,) = capture.result().layers
    assert (layer.fp16_nonzero, layer.fp16_tiny) == (4, 2)


def test_float16_counts_of_a_section_layer_on_its_sample():
    model = nn.Sequential(nn.Identity()).eval()
    x = torch.tensor([[0.0, 1e-5, 2.0**-14, 1.0], [-3e-5, 0.0, 0.0, 5.0]])
    capture = run(model, [(0, x)], detailed={"0"})
    (layer,) = capture.result().layers
    assert (layer.fp16_nonzero, layer.fp16_tiny, layer.fp16_sampled) == (5, 2, False)


def test_float16_counts_of_a_large_layer_are_a_sample():
    model = nn.Sequential(nn.Identity()).eval()
    x = torch.full((2, 5000), 1e-6)
    capture = run(model, [(0, x)])
    (layer,) = capture.result().layers
    assert layer.fp16_sampled is True
    assert (layer.fp16_nonzero, layer.fp16_tiny) == (2 * 4096, 2 * 4096)


# -- the first BatchNorm's input -------------------------------------------------------------------


def test_the_first_batchnorms_input_per_probe_and_channel():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 1)
            self.bn1, self.bn2 = nn.BatchNorm2d(3), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn2(self.bn1(self.conv(x)) + 1.0)

    torch.manual_seed(6)
    net = Two().eval()
    x = probes(3, seed=7)
    capture = run(net, [(0, x[:2]), (2, x[2:])])
    records = by_name(capture)
    with torch.no_grad():
        inp = net.conv(x).double()
    bn1 = records["bn1#1"]
    assert len(bn1.input_channel_mean) == 3
    np.testing.assert_allclose(np.stack(bn1.input_channel_mean), inp.mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.stack(bn1.input_channel_var), inp.var((2, 3), correction=0).numpy(), rtol=1e-5, atol=1e-7)
    assert records["bn2#1"].input_channel_mean == [] and records["bn2#1"].input_channel_var == []
    assert records["conv#1"].input_channel_mean == []


def test_the_first_batchnorms_second_call_adds_nothing():
    class Again(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(2)

        def forward(self, x):
            return self.bn(self.bn(x) * 2.0)

    net = Again().eval()
    x = torch.tensor([[1.0, 2.0], [3.0, 5.0], [-1.0, 0.5]])
    capture = run(net, [(0, x)])
    records = by_name(capture)
    # a (N, C) input: one position per channel, variance 0
    np.testing.assert_allclose(np.stack(records["bn#1"].input_channel_mean), x.numpy())
    np.testing.assert_array_equal(np.stack(records["bn#1"].input_channel_var), np.zeros((3, 2)))
    assert records["bn#2"].input_channel_mean == []


# -- calls that keep nothing -------------------------------------------------------------------------


def test_why_a_module_kept_nothing_in_words():
    assert act._unrecorded_output(None, None) == "returned None"
    assert act._unrecorded_output("text", None) == "returned no tensor (a str)"
    assert act._unrecorded_output(torch.tensor(2.0), torch.tensor(2.0)) == "returned a scalar (a 0-dimensional tensor)"
    ints = torch.zeros(2, 3, dtype=torch.int16)
    assert act._unrecorded_output(ints, ints) == "returned a int16 tensor, not a floating-point one"
    empty = torch.zeros(2, 0, 5)
    assert act._unrecorded_output(empty, empty) == "returned an empty tensor of shape (2, 0, 5)"


def test_first_tensor_searches_lists_tuples_and_dicts_in_order():
    a, b = torch.zeros(1), torch.ones(1)
    assert act._first_tensor(a) is a
    assert act._first_tensor([None, (1, {"k": b}), a]) is b
    assert act._first_tensor({"x": "no", "y": [a], "z": b}) is a
    assert act._first_tensor(({"x": None}, [], (b,))) is b
    assert act._first_tensor([1, "two", {"three": 3}]) is None
    assert act._first_tensor(None) is None


def test_skipped_modules_say_why_once_and_record_nothing():
    class Odd(nn.Module):
        def __init__(self, kind):
            super().__init__()
            self.kind = kind
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.kind == "first none then text":
                return None if self.calls == 1 else "text"
            if self.kind == "ints":
                return x.long()
            if self.kind == "scalar":
                return x.sum()
            return x[:, :0]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c, self.d = Odd("first none then text"), Odd("ints"), Odd("scalar"), Odd("empty")
            self.keep = nn.Identity()

        def forward(self, x):
            self.a(x)
            self.a(x)
            self.b(x)
            self.c(x)
            self.d(x)
            return self.keep({"out": [x]})

    net = Net()
    x = torch.ones(2, 3)
    capture = run(net, [(0, x)], detailed={"a", "b"})
    assert capture.result().skipped == {
        "a": "returned None",
        "b": "returned a int64 tensor, not a floating-point one",
        "c": "returned a scalar (a 0-dimensional tensor)",
        "d": "returned an empty tensor of shape (2, 0)",
    }
    assert [l.name for l in capture.result().layers] == ["keep"]
    assert capture.completed == ["keep"]


def test_a_module_with_an_integer_input_records_no_input_rms():
    class Embed(nn.Module):
        def forward(self, idx):
            return idx.float() * 0.5

    model = nn.Sequential(Embed(), nn.Identity()).eval()
    capture = run(model, [(0, torch.tensor([[1, 2], [3, 4]]))])
    records = by_name(capture)
    assert records["0#1"].input_rms == []
    np.testing.assert_allclose(records["1#1"].input_rms, [math.sqrt(1.25 / 2), math.sqrt((2.25 + 4.0) / 2)], rtol=1e-6)


def test_a_module_called_with_a_scalar_or_nothing_records_no_input_rms():
    class FromScalar(nn.Module):
        def forward(self, s=None):
            return torch.ones(2, 2) * (2.0 if s is None else s)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = FromScalar(), FromScalar()

        def forward(self, x):
            return self.a(torch.tensor(3.0)) + self.b() + x

    capture = run(Net(), [(0, torch.zeros(2, 2))])
    records = by_name(capture)
    assert records["a#1"].input_rms == [] and records["b#1"].input_rms == []
    assert records["a#1"].output_rms == pytest.approx([3.0, 3.0], rel=1e-6)


# -- hooks on and off ------------------------------------------------------------------------------


def test_hooks_go_on_leaves_sections_and_the_cam_layer_and_come_off():
    inner = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU())
    model = nn.Sequential(inner, nn.Sequential(nn.Identity()), nn.Flatten()).eval()
    capture = ActivationCapture(model, {"0"}, cam_layer="1")
    with capture:
        hooked = {name for name, m in model.named_modules() if m._forward_hooks}
        pre = {name for name, m in model.named_modules() if m._forward_pre_hooks}
    assert hooked == pre == {"0", "0.0", "0.1", "1", "1.0", "2"}
    assert [n for n, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks] == []


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_a_scripted_submodule_is_not_hooked():
    scripted = torch.jit.script(nn.Linear(2, 2))
    model = nn.Sequential(scripted, nn.ReLU()).eval()
    capture = run(model, [(0, torch.randn(3, 2))])
    assert [l.name for l in capture.result().layers] == ["1"]


def test_a_failure_while_hooking_removes_the_hooks_already_on(monkeypatch):
    model = nn.Sequential(nn.ReLU(), nn.ReLU(), nn.ReLU())
    calls = []
    real = nn.Module.register_forward_hook

    def failing(self, hook, *args, **kwargs):
        calls.append(self)
        if len(calls) == 3:
            raise RuntimeError("no more hooks")
        return real(self, hook, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "register_forward_hook", failing)
    with pytest.raises(RuntimeError, match="no more hooks"):
        with ActivationCapture(model, set()):
            pass
    assert [n for n, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks] == []


# -- Grad-CAM ------------------------------------------------------------------------------------


def gradcam_reference(features: nn.Module, head: nn.Module, x: torch.Tensor, targets: list[int]) -> np.ndarray:
    features, head = copy.deepcopy(features).double(), copy.deepcopy(head).double()
    a = features(x.double()).detach().requires_grad_(True)
    scores = head(a)
    (g,) = torch.autograd.grad(scores.gather(1, torch.tensor(targets)[:, None]).sum(), a)
    if a.dim() == 3:
        a, g = a.unsqueeze(2), g.unsqueeze(2)
    elif a.dim() == 5:
        a, g = a.mean(2), g.mean(2)
    cam = torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1)).detach()
    return (cam / cam.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]).numpy()


@pytest.mark.parametrize(
    "features, head, shape",
    [
        (nn.Conv2d(2, 3, 3), nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 3, 4)), (3, 2, 6, 5)),
        (nn.Conv1d(2, 3, 2), nn.Sequential(nn.Flatten(), nn.Linear(3 * 4, 4)), (2, 2, 5)),
        (nn.Conv3d(2, 3, 1), nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 3 * 3, 4)), (2, 2, 2, 3, 3)),
    ],
    ids=["2d", "1d", "3d"],
)
def test_gradcam_of_the_cam_layer_equals_float64(features, head, shape):
    torch.manual_seed(8)
    for p in list(features.parameters()) + list(head.parameters()):
        nn.init.normal_(p)
    model = nn.Sequential(features, head).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(9))
    capture = ActivationCapture(model, set(), cam_layer="0")
    with capture, torch.enable_grad():
        capture.start_batch()
        scores = model(x)
        targets = [1, 3, 0][: shape[0]]
        assert capture.gradcam_backward(scores, targets) is True
    result = capture.result()
    expected = gradcam_reference(features, head, x, targets)
    assert result.gradcam_layer == "0"
    assert result.gradcam_targets == targets
    assert len(result.gradcam) == shape[0]
    np.testing.assert_allclose(np.stack(result.gradcam), expected, rtol=1e-4, atol=1e-5)


def test_gradcam_with_nan_keeps_the_nan_pixel_and_scales_on_the_rest():
    class Hole(nn.Module):
        def forward(self, x):
            y = x.clone()
            y[:, :, 0, 0] = NAN
            return y

    features = nn.Sequential(nn.Conv2d(1, 2, 1), Hole())
    with torch.no_grad():
        features[0].weight.copy_(torch.tensor([[[[1.0]]], [[[2.0]]]]))
        features[0].bias.zero_()
    head = nn.Sequential(nn.Flatten(), nn.Linear(2 * 2 * 2, 2))
    with torch.no_grad():
        head[1].weight.copy_(torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0], [1.0] * 8]))
        head[1].bias.zero_()
    model = nn.Sequential(features, head).eval()
    x = torch.tensor([[[[5.0, 1.0], [2.0, 4.0]]]])
    capture = ActivationCapture(model, set(), cam_layer="0")
    with capture, torch.enable_grad():
        capture.start_batch()
        scores = model(x)
        assert capture.gradcam_backward(scores, [0]) is True
    (cam,) = capture.result().gradcam
    # grads 0.75 per channel, act (x, 2x), cam 0.75 * 3x with (0, 0) NaN; peak 0.75 * 3 * 4
    assert math.isnan(cam[0, 0])
    np.testing.assert_allclose([cam[0, 1], cam[1, 0], cam[1, 1]], [0.25, 0.5, 1.0], rtol=1e-6)


def test_gradcam_is_refused_where_there_is_nothing_to_backpropagate():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Flatten(), nn.Linear(3 * 2 * 2, 2)).eval()
    x = torch.randn(2, 2, 2, 2)

    capture = ActivationCapture(model, set(), cam_layer="0")
    with capture:
        capture.start_batch()
        with torch.no_grad():
            scores = model(x)  # no graph: the layer's output is no leaf
        assert capture.gradcam_backward(scores, [0, 1]) is False

    flat = ActivationCapture(model, set(), cam_layer="2")  # a (N, F) layer has no map
    with flat, torch.enable_grad():
        flat.start_batch()
        assert flat.gradcam_backward(model(x), [0, 1]) is False

    unused = ActivationCapture(model, set(), cam_layer="0")
    with unused, torch.enable_grad():
        unused.start_batch()
        model(x)
        other = torch.randn(2, 2, requires_grad=True) * 2.0  # scores that never saw the layer
        assert unused.gradcam_backward(other, [0, 1]) is False

    none_ran = ActivationCapture(model, set(), cam_layer="0")
    with none_ran, torch.enable_grad():
        none_ran.start_batch()
        assert none_ran.gradcam_backward(torch.randn(2, 2, requires_grad=True), [0, 1]) is False
    for c in (capture, flat, unused, none_ran):
        assert c.result().gradcam == [] and c.result().gradcam_targets == []


def test_gradcam_leaf_is_used_once_and_cleared_each_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(3 * 2 * 2, 2)).eval()
    x = torch.randn(2, 2, 2, 2)
    capture = ActivationCapture(model, set(), cam_layer="0")
    with capture, torch.enable_grad():
        capture.start_batch()
        scores = model(x)
        assert capture.gradcam_backward(scores, [0, 0]) is True
        assert capture.gradcam_backward(scores, [0, 0]) is False  # the leaf was taken
        capture.start_batch(2)
        model(x)
        capture.start_batch(4)  # a new batch forgets the last one's leaf
        assert capture.gradcam_backward(scores, [1, 1]) is False
    assert len(capture.result().gradcam) == 2
    assert capture.result().gradcam_targets == [0, 0]


def test_without_a_cam_layer_the_result_names_none():
    assert ActivationCapture(nn.Identity(), set()).result().gradcam_layer == ""


# -- run_forward -------------------------------------------------------------------------------------


def test_run_forward_returns_the_output_and_names_a_failure_in_one_line():
    model = nn.Linear(3, 2)
    x = torch.zeros(4, 3)
    assert run_forward_output(model, x).shape == (4, 2)

    class Bad(nn.Module):
        def forward(self, a, b):
            raise ValueError("shapes   do not\n  match")

    with pytest.raises(ForwardError) as caught:
        act.run_forward(Bad(), (torch.zeros(2, 3), torch.zeros(1, 5, 5)), where=" in batch 2")
    assert str(caught.value) == "the model's forward pass failed in batch 2 on input (2, 3), (1, 5, 5): ValueError: shapes do not match"
    assert isinstance(caught.value.__cause__, ValueError)


def run_forward_output(model, x):
    return act.run_forward(model, (x,))


def test_run_forward_lets_a_forward_error_through_unchanged():
    original = ForwardError("already said")

    class Inner(nn.Module):
        def forward(self, x):
            raise original

    with pytest.raises(ForwardError) as caught:
        act.run_forward(Inner(), (torch.zeros(1),))
    assert caught.value is original


# -- edges of the hooks ------------------------------------------------------------------------------


def test_an_output_of_another_batch_size_takes_no_input_rms():
    class Pool(nn.Module):
        def forward(self, x):
            return x.sum(0, keepdim=True)  # (1, ...) from (N, ...)

    model = nn.Sequential(nn.Identity(), Pool()).eval()
    capture = run(model, [(0, torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 1.0]]))])
    records = by_name(capture)
    assert records["1#1"].input_rms == []
    assert records["1#1"].output_rms == pytest.approx([math.sqrt((16.0 + 49.0) / 2)], rel=1e-6)
    assert records["0#1"].input_rms == pytest.approx([math.sqrt(2.5), math.sqrt(12.5), math.sqrt(0.5)], rel=1e-6)


def test_in_inference_mode_an_input_changed_in_place_is_measured_again():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Identity(), nn.Identity()

        def forward(self, x):
            y = self.a(x * 1.0)
            y.mul_(4.0)  # an inference tensor has no version counter to show this
            return self.b(y)

    capture = ActivationCapture(Net(), set())
    with capture, torch.inference_mode():
        capture.start_batch()
        capture.model(torch.tensor([[1.0, 1.0], [2.0, 0.0]]))
    records = by_name(capture)
    assert records["b#1"].input_rms == pytest.approx([4.0, 8.0 / math.sqrt(2.0)], rel=1e-6)


def test_gradcam_of_detached_scores_is_refused():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Flatten(), nn.Linear(12, 2)).eval()
    capture = ActivationCapture(model, set(), cam_layer="0")
    with capture, torch.enable_grad():
        capture.start_batch()
        scores = model(torch.randn(2, 2, 2, 2))
        assert capture.gradcam_backward(scores.detach(), [0, 1]) is False


def test_gradcam_asked_under_no_grad_still_backpropagates_and_a_small_map_reaches_one():
    features = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        features.weight.fill_(1e-3)
        features.bias.zero_()
    head = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    with torch.no_grad():
        head[1].weight.fill_(1e-3)
        head[1].bias.zero_()
    model = nn.Sequential(features, head).eval()
    x = torch.tensor([[[[1.0, 2.0], [4.0, 3.0]]]])
    capture = ActivationCapture(model, set(), cam_layer="0")
    with capture:
        capture.start_batch()
        with torch.enable_grad():
            scores = model(x)
        with torch.no_grad():
            assert capture.gradcam_backward(scores, [0]) is True
    (cam,) = capture.result().gradcam
    # raw map 1e-3 * 1e-3 * x: peak 4e-6, far below 1; normalised it is x / 4
    np.testing.assert_allclose(cam, [[0.25, 0.5], [1.0, 0.75]], rtol=1e-5)


def test_a_cam_layer_returning_a_tuple_gives_no_map():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1)

        def forward(self, x):
            y = self.conv(x)
            return y, y * 2

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            a, _ = self.pair(x)
            return self.fc(a.flatten(1))

    net = Net().eval()
    capture = ActivationCapture(net, {"pair"}, cam_layer="pair")
    with capture, torch.enable_grad():
        capture.start_batch()
        scores = net(torch.randn(2, 1, 2, 2))
        assert capture.gradcam_backward(scores, [0, 1]) is False
    assert [l.name for l in capture.result().layers] == ["pair.conv", "pair", "fc"]


def test_a_section_exactly_the_size_of_its_sample_is_not_called_sampled():
    model = nn.Sequential(nn.Identity()).eval()
    x = torch.tensor([[0.0, 1e-5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1.0] * 8])
    capture = run(model, [(0, x)], detailed={"0"}, total_probes=8192)  # 65,536 // 8,192 = 8 per probe
    (layer,) = capture.result().layers
    assert capture.samples_per_probe == 8
    assert layer.fp16_sampled is False
    assert (layer.fp16_nonzero, layer.fp16_tiny) == (15, 1)


def test_one_finite_value_among_nan_is_the_probes_figures():
    x = torch.tensor([[NAN, 4.0, NAN, float("inf")], [1.0, 2.0, 3.0, NAN]])
    stats = act.probe_statistics(x)
    assert stats["mean"] == [4.0, 2.0]
    assert stats["std"] == pytest.approx([0.0, math.sqrt(2.0 / 3.0)], rel=1e-12)
    assert (stats["min"], stats["max"]) == ([4.0, 1.0], [4.0, 3.0])
    assert (stats["nan"], stats["inf"]) == ([2, 1], [1, 0])


def test_the_cam_layers_output_is_let_go_when_the_capture_ends():
    import gc
    import weakref

    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(8, 2)).eval()
    capture = ActivationCapture(model, set(), cam_layer="0")
    with capture, torch.enable_grad():
        capture.start_batch()
        model(torch.randn(1, 1, 2, 2))
        leaf = weakref.ref(capture._cam_leaf)
    gc.collect()
    assert leaf() is None


# -- what is derived instead of measured (RANGE_FROM_INPUT, _known): no second pass -------------------


def spy_ranges(monkeypatch) -> list:
    """Whether each call's statistics were handed a known range (derived, no pass of their own)."""
    given = []
    real = act.probe_statistics

    def spy(x, **kwargs):
        given.append(kwargs.get("channel_range") is not None)
        return real(x, **kwargs)

    monkeypatch.setattr(act, "probe_statistics", spy)
    return given


def spy_rms(monkeypatch) -> list:
    """The shapes of the tensors whose RMS a pre-hook measured itself (not known from the last output)."""
    measured = []
    real = act._rms

    def spy(t):
        measured.append(tuple(t.shape))
        return real(t)

    monkeypatch.setattr(act, "_rms", spy)
    return measured


def test_an_eval_batchnorm_and_the_relu_after_it_take_their_range_from_their_input(monkeypatch):
    given = spy_ranges(monkeypatch)
    model = stack_model()
    run(model, [(0, probes(2))])
    assert given == [False, True, True, False, False]  # conv, bn, relu, flatten, linear


def test_relu6_and_hardtanh_after_a_conv_derive_theirs_and_a_sigmoid_does_not(monkeypatch):
    given = spy_ranges(monkeypatch)
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU6(), nn.Hardtanh(-0.5, 0.5), nn.Sigmoid(), nn.ReLU()).eval()
    x = probes(2)
    capture = run(model, [(0, x)])
    assert given == [False, True, True, False, True]
    outs = outputs_of(model, x)
    for layer, out in zip(capture.result().layers, outs):
        np.testing.assert_allclose(layer.channel_min, out.amin((0, 2, 3)).numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(layer.channel_max, out.amax((0, 2, 3)).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", ["section", "training", "users hook", "untracked"])
def test_a_batchnorm_range_is_measured_where_it_cannot_be_derived(monkeypatch, case):
    given = spy_ranges(monkeypatch)
    model = stack_model()
    detailed = set()
    if case == "section":
        detailed = {"1"}
    elif case == "training":
        model[1].train()
    elif case == "users hook":
        model[1].register_forward_pre_hook(lambda m, i: None)
    else:
        model[1] = nn.BatchNorm2d(3, track_running_stats=False).eval()
    x = probes(2)
    capture = run(model, [(0, x)], detailed=detailed)
    assert given[:2] == [False, False]
    with torch.no_grad():
        out = model[1](model[0](x)).double()
    np.testing.assert_allclose(by_name(capture)["1#1"].channel_max, out.amax((0, 2, 3)).numpy(), rtol=1e-5, atol=1e-6)


def test_a_relu_whose_input_changed_in_place_measures_its_range(monkeypatch):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu = nn.Conv2d(2, 2, 1), nn.ReLU()

        def forward(self, x):
            y = self.conv(x)
            y.add_(5.0)
            return self.relu(y)

    given = spy_ranges(monkeypatch)
    torch.manual_seed(2)
    net = Net().eval()
    x = probes(2)
    capture = run(net, [(0, x)])
    assert given == [False, False]
    with torch.no_grad():
        out = torch.relu(net.conv(x) + 5.0).double()
    np.testing.assert_allclose(by_name(capture)["relu#1"].channel_min, out.amin((0, 2, 3)).numpy(), rtol=1e-6)


def test_the_next_modules_input_rms_is_known_not_measured_again(monkeypatch):
    measured = spy_rms(monkeypatch)
    model = stack_model()
    run(model, [(0, probes(2)), (2, probes(1))])
    assert measured == [(2, 2, 4, 4), (1, 2, 4, 4)]  # only the model's input, once a batch


def test_an_input_changed_in_place_has_its_rms_measured(monkeypatch):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Identity(), nn.Identity()

        def forward(self, x):
            y = self.a(x * 1.0)
            y.mul_(2.0)
            return self.b(y)

    measured = spy_rms(monkeypatch)
    run(Net(), [(0, torch.ones(2, 3))])
    assert measured == [(2, 3), (2, 3)]


def test_a_fresh_capture_has_measured_nothing():
    capture = ActivationCapture(nn.Identity(), set())
    assert (capture.largest_per_probe, capture.tile_bytes, capture.completed, capture.skipped) == (0, 0, [], {})
    result = capture.result()
    assert (result.layers, result.gradcam, result.gradcam_targets, result.skipped) == ([], [], [], {})


def test_without_start_batch_the_first_batch_is_probe_zero():
    model = nn.Sequential(nn.Conv2d(2, 3, 1)).eval()
    capture = ActivationCapture(model, {"0"}, max_probes=1, max_channels=1, tile_size=4)
    with capture, torch.no_grad():
        model(probes(2))
    (layer,) = capture.result().layers
    assert len(layer.tiles) == 1


def test_gradcam_maps_and_targets_add_up_over_batches():
    torch.manual_seed(5)
    features = nn.Conv2d(2, 3, 1)
    head = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    model = nn.Sequential(features, head).eval()
    x = torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(6))
    capture = ActivationCapture(model, set(), cam_layer="0")
    with capture, torch.enable_grad():
        capture.start_batch(0)
        assert capture.gradcam_backward(model(x[:2]), [2, 0]) is True
        capture.start_batch(2)
        assert capture.gradcam_backward(model(x[2:]), [1]) is True
    result = capture.result()
    assert result.gradcam_targets == [2, 0, 1]
    expected = gradcam_reference(features, head, x, [2, 0, 1])
    np.testing.assert_allclose(np.stack(result.gradcam), expected, rtol=1e-4, atol=1e-5)


def test_batchnorm_affine_uses_the_modules_own_eps():
    bn = batchnorm((2.0, -3.0), eps=0.5)
    low, high = torch.tensor([[-1.0, 0.0]]), torch.tensor([[3.0, 1.0]])
    with torch.no_grad():
        got_low, got_high = act._batchnorm_affine(bn, (low, high), torch.float32)
    np.testing.assert_allclose(got_low.numpy(), [[2.0 * (-2.0) / math.sqrt(4.5) + 0.5, -3.0 * 3.0 / math.sqrt(0.75) - 1.0]], rtol=1e-6)
    np.testing.assert_allclose(got_high.numpy(), [[2.0 * 2.0 / math.sqrt(4.5) + 0.5, -3.0 * 2.0 / math.sqrt(0.75) - 1.0]], rtol=1e-6)


def test_run_forward_without_a_where_says_nothing_more():
    class Bad(nn.Module):
        def forward(self, x):
            raise RuntimeError("no")

    with pytest.raises(ForwardError) as caught:
        act.run_forward(Bad(), (torch.zeros(2, 3),))
    assert str(caught.value) == "the model's forward pass failed on input (2, 3): RuntimeError: no"


def test_a_sections_channel_means_with_nan_are_summed_in_float64():
    model = nn.Sequential(nn.Identity()).eval()
    x = torch.tensor([2.0**24] + [1.0] * 8 + [NAN]).reshape(1, 1, 1, 10)  # float32 would drop the ones
    capture = run(model, [(0, x)], detailed={"0"}, max_channels=1, tile_size=16)
    (layer,) = capture.result().layers
    assert layer.channel_means[0].tolist() == [(2.0**24 + 8.0) / 9.0]
    assert layer.probe_mean == [(2.0**24 + 8.0) / 9.0]


def test_without_a_probe_limit_every_probe_gets_tiles_whatever_the_channels():
    model = nn.Sequential(nn.Conv2d(2, 1, 1)).eval()
    capture = run(model, [(0, probes(3))], detailed={"0"}, max_channels=4, tile_size=4)
    (layer,) = capture.result().layers
    assert [t.channels for t in layer.tiles] == [[0], [0], [0]]
    assert capture.tile_bytes == 3 * 1 * 4 * 4


def test_a_single_probe_larger_than_its_sample_is_called_sampled():
    model = nn.Sequential(nn.Identity()).eval()
    capture = run(model, [(0, torch.full((1, 9), 1e-6))], detailed={"0"}, total_probes=65536 // 8)  # 8 per probe
    (layer,) = capture.result().layers
    assert [len(s) for s in layer.samples] == [8]
    assert (layer.fp16_sampled, layer.fp16_nonzero, layer.fp16_tiny) == (True, 8, 8)


def test_float16_counts_add_up_over_batches():
    model = nn.Sequential(nn.Identity()).eval()
    x = torch.tensor([[1e-5, 1.0], [0.0, -2e-5], [3.0, 4.0]])
    capture = run(model, [(0, x[:2]), (2, x[2:])])
    (layer,) = capture.result().layers
    assert (layer.fp16_nonzero, layer.fp16_tiny) == (5, 2)


def test_start_batch_without_an_index_is_the_first_probe():
    model = nn.Sequential(nn.Conv2d(2, 3, 1)).eval()
    capture = ActivationCapture(model, {"0"}, max_probes=1, max_channels=1, tile_size=4)
    with capture, torch.no_grad():
        capture.start_batch()
        model(probes(2))
    (layer,) = capture.result().layers
    assert len(layer.tiles) == 1


def test_a_per_probe_scalar_output_is_recorded_and_its_bytes_are_an_int():
    class Total(nn.Module):
        def forward(self, x):
            return x.sum(1)  # (N,)

    model = nn.Sequential(Total()).eval()
    capture = run(model, [(0, torch.tensor([[1.0, 2.0], [3.0, -7.0]]))])
    (layer,) = capture.result().layers
    assert (layer.output_shape, layer.numel_per_probe) == ([], 1)
    assert (layer.probe_min, layer.probe_max) == ([3.0, -4.0], [3.0, -4.0])
    assert capture.largest_per_probe == 4
    assert type(capture.largest_per_probe) is int


def test_a_module_returning_text_is_skipped_saying_so():
    class Text(nn.Module):
        def forward(self, x):
            return "not a tensor"

    model = nn.Sequential(Text())
    capture = run(model, [(0, torch.ones(1, 2))], detailed={"0"})
    assert capture.result().skipped == {"0": "returned no tensor (a str)"}


def test_a_half_precision_batchnorms_derived_range_is_the_measured_one():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)).eval()
    with torch.no_grad():
        model[1].running_mean.copy_(torch.tensor([0.3, -0.1]))
        model[1].running_var.copy_(torch.tensor([0.7, 1.9]))
        model[1].weight.copy_(torch.tensor([1.3, -0.6]))
    model = model.half()
    x = probes(2).half()
    capture = run(model, [(0, x)])
    with torch.no_grad():
        out = model(x).float()
    bn = by_name(capture)["1#1"]
    assert bn.channel_min.tolist() == out.amin((0, 2, 3)).tolist()
    assert bn.channel_max.tolist() == out.amax((0, 2, 3)).tolist()


def test_by_default_sixteen_channels_are_tiled_at_most_sixty_four_pixels():
    model = nn.Sequential(nn.Conv2d(1, 20, 1)).eval()
    capture = run(model, [(0, torch.randn(1, 1, 128, 96, generator=torch.Generator().manual_seed(1)))], detailed={"0"})
    (layer,) = capture.result().layers
    (tiles,) = layer.tiles
    assert tiles.tiles.shape == (16, 64, 48)


def test_gradcam_before_any_forward_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(8, 2))
    capture = ActivationCapture(model, set(), cam_layer="0")
    assert capture.gradcam_backward(torch.randn(1, 2, requires_grad=True), [0]) is False
