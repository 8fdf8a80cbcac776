"""The capture pass (cnnreport.capture, via build_report): hooks, state, and the numbers captured."""

from __future__ import annotations

import random

import numpy as np
import pytest
import reference_models as rm
import torch
from conftest import quick_options
from torch import nn
from torch.nn.modules import module as module_globals

from cnnreport.capture.activations import (
    ActivationCapture,
    probe_statistics,
    top_channel_tiles,
)
from cnnreport.errors import ForwardError
from cnnreport.model.state import preserved_model_state
from cnnreport.report.pipeline import build_report

# ----------------------------------------------------------------------------------------------
# helpers


def hook_snapshot(model: nn.Module) -> dict[str, dict[str, list[int]]]:
    """Every hook dict of every submodule: module path -> attribute -> the handles' ids."""
    snap = {}
    for name, module in model.named_modules():
        snap[name] = {
            attr: list(value.keys())
            for attr, value in vars(module).items()
            if "hook" in attr and isinstance(value, dict)
        }
    return snap


GLOBAL_HOOK_DICTS = [
    name for name in dir(module_globals) if name.startswith("_global") and isinstance(getattr(module_globals, name), dict)
]


def global_hook_snapshot() -> dict[str, list[int]]:
    return {name: list(getattr(module_globals, name).keys()) for name in GLOBAL_HOOK_DICTS}


def reference_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Each module's output per call, cloned at once by our own hooks in a plain eval forward."""
    outs: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, module in model.named_modules():
        if name:
            handles.append(
                module.register_forward_hook(
                    lambda m, i, o, name=name: outs.setdefault(name, []).append(o.detach().clone().double())
                    if isinstance(o, torch.Tensor)
                    else None
                )
            )
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return outs


def assert_stats_match(stats, t: torch.Tensor, rel: float = 1e-4) -> None:
    t = t.double()
    scale = float(t.abs().max()) or 1.0
    assert stats.mean == pytest.approx(float(t.mean()), abs=rel * scale)
    assert stats.std == pytest.approx(float(t.std(correction=0)), abs=rel * scale)
    assert stats.min == pytest.approx(float(t.min()), abs=1e-6 * scale)
    assert stats.max == pytest.approx(float(t.max()), abs=1e-6 * scale)
    assert stats.frac_zero == pytest.approx(float((t == 0).double().mean()), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# hooks


@pytest.mark.parametrize("arch", sorted(rm.ARCHITECTURES))
def test_no_hook_left_after_a_report(arch, probes):
    model = rm.seeded(rm.ARCHITECTURES[arch]())
    user_handle = model.register_forward_hook(lambda m, i, o: None)  # the user's own stays
    before, global_before = hook_snapshot(model), global_hook_snapshot()
    report = build_report(model, probes, quick_options())
    assert report.sections
    assert hook_snapshot(model) == before
    assert global_hook_snapshot() == global_before
    assert list(model._forward_hooks) == [user_handle.id]
    assert torch._C._len_torch_function_stack() == 0
    user_handle.remove()


def test_hooks_removed_when_the_forward_raises(probes):
    model = rm.seeded(rm.Exploding())
    user_global = nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
    try:
        before, global_before = hook_snapshot(model), global_hook_snapshot()
        assert user_global.id in global_before["_global_forward_hooks"]
        with pytest.raises(ForwardError) as info:
            build_report(model, probes, quick_options())
        # 4 channels x 16 x 16 flattened reach a Linear that wants 7 features
        message = str(info.value)
        assert message.startswith("the forward pass failed in bad (Linear) given input (3, 1024), but it expects Linear(in_features=7): RuntimeError: "), message
        assert "mat1 and mat2 shapes cannot be multiplied (3x1024 and 7x2)" in message
        assert hook_snapshot(model) == before
        assert global_hook_snapshot() == global_before
        for name, attrs in hook_snapshot(model).items():
            for attr, ids in attrs.items():
                if attr.startswith("_forward") or attr.startswith("_backward"):
                    assert ids == [], (name, attr)
        assert torch._C._len_torch_function_stack() == 0
        assert model.training is False  # it was in eval mode (seeded) and stays so
    finally:
        user_global.remove()


def test_activation_capture_removes_hooks_on_exception():
    model = rm.seeded(rm.tiny_resnet())
    capture = ActivationCapture(model, {"conv1"}, max_channels=2, tile_size=8)
    with pytest.raises(RuntimeError, match="boom"):
        with capture:
            assert sum(len(m._forward_hooks) for m in model.modules()) > 0
            raise RuntimeError("boom")
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


# ----------------------------------------------------------------------------------------------
# model state


def full_state(model: nn.Module) -> dict:
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grad": {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()},
        "grad_ids": {n: id(p.grad) for n, p in model.named_parameters()},
    }


def test_model_state_and_rng_exactly_as_before(probes):
    model = rm.seeded(rm.FrozenBNNet())
    model.train()
    model.bn.eval()  # a frozen BatchNorm inside a training model
    model.conv.weight.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, 0.25)
    model.fc.bias.grad = torch.arange(3.0)
    before = full_state(model)
    torch.manual_seed(1234)
    np.random.seed(99)
    random.seed(7)
    torch_rng, np_rng, py_rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    threads = torch.get_num_threads()
    import gc

    report = build_report(model, probes, quick_options(attributions=True))

    # Process settings the report changes for its own run come back too.
    assert torch.get_num_threads() == threads
    assert gc.isenabled()

    after = full_state(model)
    assert after["training"] == before["training"]
    assert model.training and model.drop.training and not model.bn.training
    assert after["requires_grad"] == before["requires_grad"] == {
        "conv.weight": False, "conv.bias": True, "bn.weight": True, "bn.bias": True, "fc.weight": True, "fc.bias": True,
    }
    assert after["grad_ids"] == before["grad_ids"]
    for name, grad in before["grad"].items():
        if grad is None:
            assert after["grad"][name] is None, name
        else:
            assert torch.equal(after["grad"][name], grad), name
    for key, value in before["tensors"].items():
        assert torch.equal(after["tensors"][key], value), key  # running stats, num_batches_tracked too
    assert torch.equal(torch.get_rng_state(), torch_rng)
    np_after = np.random.get_state()
    assert np_after[0] == np_rng[0] and np.array_equal(np_after[1], np_rng[1]) and np_after[2:] == np_rng[2:]
    assert random.getstate() == py_rng
    # The pass ran in eval mode: dropout off, so the captured conv stats are deterministic.
    assert report.model.was_training is True


def test_the_forward_ran_in_eval_mode(probes):
    """BatchNorm in train mode would normalise with batch stats; the report must use running stats."""
    model = rm.seeded(rm.FrozenBNNet())
    model.train()
    report = build_report(model, probes, quick_options(layer_types=["BatchNorm2d"], attributions=False))
    model.eval()
    ref = reference_outputs(model, probes)["bn"][0]
    model.train()
    (section,) = report.sections
    assert_stats_match(section.stats, ref)


def test_preserved_model_state_restores_when_the_block_raises():
    model = rm.FrozenBNNet()
    model.train()
    model.bn.eval()
    model.fc.bias.requires_grad_(False)
    with pytest.raises(ValueError):
        with preserved_model_state(model):
            assert not model.training and not any(p.requires_grad for p in model.parameters())
            torch.rand(5)
            raise ValueError
    assert model.training and model.drop.training and not model.bn.training
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, True, True, False]


# ----------------------------------------------------------------------------------------------
# what is captured


def test_inplace_relu_does_not_change_the_captured_conv_output(probes):
    model = rm.seeded(rm.ConvInplaceRelu())
    report = build_report(model, probes, quick_options(layers=["conv", "relu"]))
    by_name = {s.name: s for s in report.sections}
    with torch.no_grad():
        plain = model.conv(probes)  # the conv alone: no ReLU ran on it
    assert float(plain.min()) < 0  # so the ReLU would have changed it
    assert_stats_match(by_name["conv"].stats, plain)
    assert by_name["conv"].stats.min < 0
    assert by_name["conv"].stats.frac_zero == 0.0
    assert_stats_match(by_name["relu"].stats, torch.relu(plain))
    for probe_stats, sample in zip(by_name["conv"].per_probe_stats, plain):
        assert_stats_match(probe_stats, sample)


def test_inplace_relu_in_a_resnet_block(photo_probes):
    model = rm.seeded(rm.tiny_resnet())
    report = build_report(model, photo_probes, quick_options())
    ref = reference_outputs(model, photo_probes)
    sections = {s.name: s for s in report.sections}
    assert set(sections) == {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    for name, section in sections.items():
        assert section.call_index == 1
        assert_stats_match(section.stats, ref[name][0])
        assert section.output_shape == list(ref[name][0].shape[1:])


def test_module_called_twice_gets_two_sections(probes):
    model = rm.seeded(rm.SharedConv())
    report = build_report(model, probes, quick_options(batch_size=2))  # call numbers restart per batch
    shared = [s for s in report.sections if s.name == "shared"]
    assert [s.call_index for s in shared] == [1, 2]
    assert [s.label for s in shared] == ["shared", "shared (call 2)"]
    assert len({s.id for s in report.sections}) == len(report.sections)
    ref = reference_outputs(model, probes)["shared"]
    assert len(ref) == 2
    for section, out in zip(shared, ref):
        assert_stats_match(section.stats, out)
        assert len(section.per_probe_stats) == 3 and len(section.mosaics) == 3
    # Only the first call draws the filters (they are the same weights).
    assert shared[0].filters is not None and shared[1].filters is None


@pytest.mark.parametrize(
    "factory, has_predictions",
    [(rm.TupleOutput, True), (rm.DictOutput, True), (rm.SegmentationOutput, False)],
)
def test_tuple_dict_and_map_outputs(factory, has_predictions, probes):
    model = rm.seeded(factory())
    report = build_report(model, probes, quick_options())
    assert len(report.sections) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert len(report.probes) == 3
    if has_predictions:
        with torch.no_grad():
            out = model(probes)
        logits = out[0] if isinstance(out, tuple) else out["logits"] if isinstance(out, dict) else out
        top = torch.softmax(logits, 1).topk(3, 1)
        for probe, values, indices in zip(report.probes, top.values, top.indices):
            assert [p.class_index for p in probe.predictions] == indices.tolist()
            assert [p.probability for p in probe.predictions] == pytest.approx(values.tolist(), abs=1e-6)
    else:
        assert all(p.predictions == [] for p in report.probes)


@pytest.mark.parametrize("arch", sorted(rm.ARCHITECTURES))
def test_statistics_equal_a_direct_reference_over_several_batches(arch, photo_probes):
    model = rm.seeded(rm.ARCHITECTURES[arch]())
    # batch_size 3 over 4 probes: two batches of unequal size, pooled afterwards.
    report = build_report(model, photo_probes, quick_options(batch_size=3, attributions=False))
    ref = reference_outputs(model, photo_probes)
    assert report.sections
    for section in report.sections:
        out = ref[section.name][section.call_index - 1]
        assert_stats_match(section.stats, out)
        assert len(section.per_probe_stats) == 4
        for probe_stats, sample in zip(section.per_probe_stats, out):
            assert_stats_match(probe_stats, sample)
        means = out.mean(dim=(0, 2, 3))
        assert section.channels is not None
        np.testing.assert_allclose(section.channels.means, means.numpy(), rtol=1e-4, atol=1e-5)


class _InPlaceBetweenModules(nn.Module):
    """Modules whose inputs are the previous output as it is, after an in-place ReLU module,
    after an in-place functional op, and after a view: the cases the input-RMS reuse must tell apart."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.conv3 = nn.Conv2d(6, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.relu(self.bn(self.conv1(x)))
        x = self.conv2(x)
        x.mul_(3.0)  # in place, outside any module: conv3 sees other values than conv2 gave
        x = self.conv3(x)
        return self.fc(self.pool(x).flatten(1))


def test_input_rms_of_every_call_is_the_input_it_really_got(probes):
    """Each leaf's input RMS (the health checks' explode/vanish ratio) equals the RMS of the
    input tensor as the module received it, also where it is reused from the previous output."""
    model = rm.seeded(_InPlaceBetweenModules())
    seen: dict[str, list[float]] = {}

    def record(module, inputs, name):
        x = inputs[0].detach().double()
        seen.setdefault(name, []).extend((x.flatten(1).norm(dim=1) / x[0].numel() ** 0.5).tolist())

    handles = [m.register_forward_pre_hook(lambda m, i, name=name: record(m, i, name)) for name, m in model.named_modules() if name]
    try:
        with preserved_model_state(model), torch.no_grad():
            model(probes)
    finally:
        for h in handles:
            h.remove()
    with preserved_model_state(model), ActivationCapture(model, {"conv2", "conv3"}) as capture, torch.no_grad():
        capture.start_batch()
        model(probes)
    layers = {layer.name: layer for layer in capture.result().layers}
    assert set(layers) == set(seen)
    for name, expected in seen.items():
        np.testing.assert_allclose(layers[name].input_rms, expected, rtol=1e-5, err_msg=name)
    # conv3's input is conv2's output tripled in place: a stale reuse would be off by 3x.
    np.testing.assert_allclose(layers["conv3"].input_rms, 3 * np.asarray(layers["conv2"].output_rms), rtol=1e-5)


class _Clamps(nn.Module):
    """Clamp-like activations after outputs the pass just reduced (their range is derived from
    their input's), in place and not, and one after an op outside any module (not derived)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.relu = nn.ReLU(inplace=True)
        self.relu6 = nn.ReLU6()
        self.tanh_clamp = nn.Hardtanh(-0.3, 0.4)
        self.conv2 = nn.Conv2d(5, 4, 1)
        self.after_op = nn.ReLU()

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        x = self.tanh_clamp(self.relu6(x * 7.0))
        return self.after_op(self.conv2(x) - 0.1)


def test_every_layers_channel_range_equals_a_direct_reference(probes):
    """Per-channel minima and maxima of every leaf (the dead-channel check reads them), also
    where a BatchNorm's or a clamp-like activation's range is derived from its input's
    instead of measured: exactly equal, not approximately."""
    model = rm.seeded(_Clamps())
    with torch.no_grad():
        model.bn.weight[2] = 0.0  # a constant channel: min == max must survive the derivation
        model.bn.weight[3] = -1.7  # a negative scale swaps minimum and maximum
        model.bn.running_var.uniform_(0.2, 3.0)
        model.bn.running_mean.uniform_(-0.5, 0.5)
    ref = reference_outputs(model, probes)
    with preserved_model_state(model), ActivationCapture(model, set()) as capture, torch.no_grad():
        capture.start_batch()
        model(probes)
    layers = {layer.name: layer for layer in capture.result().layers}
    for name in ["conv", "bn", "relu", "relu6", "tanh_clamp", "conv2", "after_op"]:
        out = ref[name][0].float()
        np.testing.assert_array_equal(layers[name].channel_min, out.amin(dim=(0, 2, 3)).numpy(), err_msg=name)
        np.testing.assert_array_equal(layers[name].channel_max, out.amax(dim=(0, 2, 3)).numpy(), err_msg=name)
        np.testing.assert_array_equal(layers[name].probe_min, out.flatten(1).amin(1).tolist(), err_msg=name)
        np.testing.assert_array_equal(layers[name].probe_max, out.flatten(1).amax(1).tolist(), err_msg=name)
    assert layers["relu"].channel_min[2] == layers["relu"].channel_max[2]


def test_top_channels_are_the_highest_mean_channels():
    gen = torch.Generator().manual_seed(3)
    model = rm.seeded(rm.ConvInplaceRelu(cin=3, cout=10))
    x = torch.randn(3, 3, 12, 12, generator=gen)
    capture = ActivationCapture(model, {"conv"}, max_channels=4, tile_size=64)
    with preserved_model_state(model), capture, torch.no_grad():
        capture.start_batch()
        model(x)
    (layer,) = capture.result().detailed()
    with torch.no_grad():
        out = model.conv(x)
    means = out.mean(dim=(2, 3))
    assert len(layer.tiles) == 3
    for i, tiles in enumerate(layer.tiles):
        expected = torch.argsort(means[i], descending=True)[:4].tolist()
        assert tiles.channels == expected
        assert tiles.tiles.shape == (4, 12, 12) and tiles.tiles.dtype == np.uint8
        chosen = out[i, expected]
        assert tiles.vmin == pytest.approx(float(chosen.min()), abs=1e-6)
        assert tiles.vmax == pytest.approx(float(chosen.max()), abs=1e-6)
        # Tiles are the values quantised linearly onto 0..254 over [vmin, vmax].
        back = tiles.vmin + tiles.tiles.astype(np.float64) / 254 * (tiles.vmax - tiles.vmin)
        np.testing.assert_allclose(back, chosen.double().numpy(), atol=(tiles.vmax - tiles.vmin) / 254)
        np.testing.assert_allclose(layer.channel_means[i], means[i].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("h, w, oh, ow", [(56, 56, 48, 48), (112, 112, 48, 48), (7, 9, 3, 4), (100, 3, 17, 2), (5, 5, 5, 5), (224, 100, 48, 21)])
def test_area_downsample_has_adaptive_pooling_windows(h, w, oh, ow):
    from cnnreport.capture.activations import area_downsample

    x = torch.randn(3, 4, h, w, generator=torch.Generator().manual_seed(h * w))
    expected = torch.nn.functional.adaptive_avg_pool2d(x, (oh, ow))
    torch.testing.assert_close(area_downsample(x, (oh, ow)), expected, atol=1e-5, rtol=1e-5)


def test_top_channel_tiles_are_area_downsampled():
    images = torch.zeros(1, 2, 8, 8)
    images[0, 1, :4, :4] = 1.0  # top-left quarter of channel 1
    images[0, 0] = 0.01
    tiles = top_channel_tiles(images, images.mean((2, 3)), k=2, tile_size=4)
    (probe,) = tiles
    assert probe.channels == [1, 0]
    assert probe.tiles.shape == (2, 4, 4)
    assert probe.tiles[0, :2, :2].tolist() == [[254, 254], [254, 254]]
    assert probe.tiles[0, 2:, 2:].tolist() == [[0, 0], [0, 0]]


def test_memory_stays_small_nothing_float_kept(photo_probes):
    """Detailed layers keep uint8 tiles and small arrays only, no full float activations."""
    model = rm.seeded(rm.tiny_resnet())
    capture = ActivationCapture(model, {"conv1", "layer1.0.conv1"}, max_channels=3, tile_size=8)
    with preserved_model_state(model), capture, torch.no_grad():
        capture.start_batch()
        model(photo_probes)
    for layer in capture.result().detailed():
        assert all(t.tiles.dtype == np.uint8 and t.tiles.shape[0] == 3 and max(t.tiles.shape[1:]) <= 8 for t in layer.tiles)
        assert all(s.size <= 4096 for s in layer.samples)


@pytest.mark.parametrize("grad_enabled", [True, False])
def test_grad_mode_and_function_modes_restored(grad_enabled, probes):
    model = rm.seeded(rm.tiny_resnet())
    with torch.set_grad_enabled(grad_enabled):
        report = build_report(model, probes, quick_options(attributions=True))
        assert torch.is_grad_enabled() is grad_enabled
    assert torch._C._len_torch_function_stack() == 0
    # Grad-CAM ran (it needs gradients) even when the caller had them off, and left no .grad.
    assert sum(a.method == "Grad-CAM" for a in report.attributions) == 3
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# What the shortcuts of the capture must not change (found by review)


def test_one_nan_pixel_does_not_blank_its_tile():
    """Downsampling by matrix products would spread one NaN over the whole tile (then cleaned
    to a flat 0); the pooling windows keep it local, so the tile still shows the map."""
    images = torch.linspace(0, 1, 2 * 3 * 56 * 56).reshape(2, 3, 56, 56).clone()
    images[0, 1, 10, 10] = float("nan")
    images[0, 2, 30, 5] = float("inf")
    tiles = top_channel_tiles(images, torch.nan_to_num(images.mean((2, 3))), k=3, tile_size=48)
    for tile in tiles[0].tiles:
        assert len(np.unique(tile)) > 20  # a gradient (about 43 levels), not one flat level


def test_cyclic_garbage_of_each_forward_batch_is_reclaimed(probes):
    """The cyclic GC's full walks are held off during a report, but a model that makes cyclic
    garbage on every batch (a common accident: a list holding itself, a closure over self)
    must not pile it up over a long run of batches: each batch's cycles are gone by the next."""
    import gc
    import weakref

    alive_at_call: list[int] = []
    refs: list[weakref.ref] = []

    class Junk:
        pass

    class Cyclic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            alive_at_call.append(sum(r() is not None for r in refs))
            junk = Junk()
            junk.self = junk  # a reference cycle, unreachable once forward returns
            junk.payload = torch.zeros(1000)
            refs.append(weakref.ref(junk))
            return self.conv(x)

    was_enabled = gc.isenabled()
    gc.enable()
    try:
        build_report(rm.seeded(Cyclic()), probes, quick_options(batch_size=1))
    finally:
        if not was_enabled:
            gc.disable()
    assert len(alive_at_call) == 1 + len(probes)  # torchinfo's pass, then one per probe
    assert alive_at_call[2:] == [0] * (len(probes) - 1)  # each batch's cycles gone by the next


def test_reports_in_parallel_threads_leave_torch_threads_as_they_were(probes):
    import threading

    before = torch.get_num_threads()
    after: dict[int, int] = {}
    # Each thread reads its count once every report is over: while another thread's report is
    # inside its single-threaded block, the process default reads 1 by design (passes.py).
    all_done = threading.Barrier(3, timeout=600)

    def run(key: int) -> None:
        model = rm.seeded(rm.ConvInplaceRelu(cin=3, cout=6))
        for _ in range(3):
            build_report(model, probes, quick_options())
        all_done.wait()
        after[key] = torch.get_num_threads()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fresh: list[int] = []
    t = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert after == {0: before, 1: before, 2: before} and fresh == [before]
    assert torch.get_num_threads() == before


class _ReluAfterBn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.relu(self.bn(self.conv(x)))).flatten(1)


@pytest.mark.parametrize("inplace", [False, True])
def test_a_users_hook_that_changes_a_relu_output_is_measured_not_derived(probes, inplace):
    """A ReLU's range may be taken from its input's only when no one else's hook can have
    changed its output (steering, fake quantisation)."""
    model = rm.seeded(_ReluAfterBn())
    hook = (lambda m, i, o: o.mul_(0.5)) if inplace else (lambda m, i, o: o * 10)
    handle = model.relu.register_forward_hook(hook)
    try:
        ref = reference_outputs(model, probes)["relu"][0].float()
        with preserved_model_state(model), ActivationCapture(model, set()) as capture, torch.no_grad():
            capture.start_batch()
            model(probes)
    finally:
        handle.remove()
    relu = next(layer for layer in capture.result().layers if layer.name == "relu")
    np.testing.assert_allclose(relu.channel_max, ref.amax(dim=(0, 2, 3)).numpy(), rtol=1e-6)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_batchnorm_ranges_of_every_dimension_equal_the_measured_ones(dims):
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](6)
    model = nn.Sequential(nn.Identity(), bn, nn.ReLU()).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.1, 3)
        bn.weight.uniform_(-2, 2)
        bn.bias.uniform_(-1, 1)
    x = torch.randn(3, 6, *([5] * dims))
    ref = reference_outputs(model, x)
    with preserved_model_state(model), ActivationCapture(model, set()) as capture, torch.no_grad():
        capture.start_batch()
        model(x)
    layers = {layer.name: layer for layer in capture.result().layers}
    for name in ["1", "2"]:
        out = ref[name][0].float()
        reduce = (0, *range(2, out.dim()))
        np.testing.assert_array_equal(layers[name].channel_min, out.amin(dim=reduce).numpy(), err_msg=name)
        np.testing.assert_array_equal(layers[name].channel_max, out.amax(dim=reduce).numpy(), err_msg=name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_clamp_reports_the_limits_its_dtype_holds(dtype):
    model = nn.Sequential(nn.Identity(), nn.Hardtanh(-0.1, 0.1)).to(dtype)
    x = (torch.randn(2, 3, 5, 5) * 3).to(dtype)
    with preserved_model_state(model), ActivationCapture(model, set()) as capture, torch.no_grad():
        capture.start_batch()
        out = model(x)
    clamp = next(layer for layer in capture.result().layers if layer.name == "1")
    assert max(clamp.probe_max) == float(out.float().max()) == float(torch.tensor(0.1, dtype=dtype))
    assert min(clamp.probe_min) == float(out.float().min())


def test_histogram_sample_is_not_one_pixel_of_each_channel():
    # 2,048 samples of 2,048 channels of 7x7: a plain stride would take pixel (0, 0) of every
    # channel. The sample must spread over the positions.
    from cnnreport.capture.activations import histogram_sample

    x = torch.arange(49, dtype=torch.float32).repeat(2, 2048, 1).reshape(2, 2048, 7, 7)  # value = pixel index
    (first, second) = histogram_sample(x, per_probe=2048)
    assert first.shape == (2048,) and np.array_equal(first, second)
    assert len(np.unique(first)) == 49  # every pixel position appears
    assert np.array_equal(histogram_sample(x, per_probe=2048)[0], first)  # deterministic
    small = torch.randn(3, 10)
    assert np.array_equal(np.stack(histogram_sample(small, per_probe=64)), small.numpy())  # all when few


def test_stored_channel_means_are_copies_not_views_of_the_activation():
    # A Linear's (N, F) output is its own channel means; an in-place ReLU after it must not
    # change what the capture stored.
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(inplace=True)).eval()
    x = torch.randn(4, 6)
    with torch.no_grad():
        expected = model[0](x).numpy().copy()
    with preserved_model_state(model), ActivationCapture(model, {"0"}) as capture, torch.no_grad():
        capture.start_batch()
        model(x)
    (layer,) = [layer for layer in capture.result().layers if layer.name == "0"]
    assert expected.min() < 0
    np.testing.assert_allclose(np.stack(layer.channel_means), expected, rtol=1e-6)
    assert all(row.base is None or row.base.size == expected.size for row in layer.channel_means)


def test_an_empty_activation_is_skipped_not_an_error():
    class Crop(nn.Module):
        def forward(self, x):
            return x[:, :, :0]  # a crop that came out empty

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.crop, self.fc = nn.Conv2d(3, 4, 3), Crop(), nn.Linear(4, 2)

        def forward(self, x):
            y = self.conv(x)
            self.crop(y)
            return self.fc(y.mean((2, 3)))

    report = build_report(Net().eval(), torch.randn(2, 3, 12, 12), quick_options())
    assert [s.name for s in report.sections] == ["conv"]


# ----------------------------------------------------------------------------------------------
# A spread far smaller than the mean: std must not come from rms^2 - mean^2


@pytest.mark.parametrize("shape", [(3, 4, 16, 16), (3, 1024)], ids=["per-channel", "flat"])
@pytest.mark.parametrize("mean, spread", [(1e4, 0.5), (-3e4, 2.0)])
def test_std_of_a_large_mean_activation_equals_float64(shape, mean, spread):
    # float32 carries ~7 digits: at mean 1e4, rms^2 ~ 1e8 and its rounding (~10) dwarfs a
    # variance of 0.25, so the shortcut gives 0 or a few units; the exact pass gives ~1e-6
    gen = torch.Generator().manual_seed(5)
    x = (mean + spread * torch.randn(shape, generator=gen, dtype=torch.float64)).float()
    reference = x.double().flatten(1).std(1, correction=0)  # two-pass, in float64
    stats = probe_statistics(x)
    np.testing.assert_allclose(stats["std"], reference.numpy(), rtol=1e-4, atol=0)
    np.testing.assert_allclose(stats["mean"], x.double().flatten(1).mean(1).numpy(), rtol=1e-6, atol=0)


def test_report_std_of_a_layer_offset_by_1e4_equals_float64(probes):
    model = rm.seeded(rm.ConvInplaceRelu())
    with torch.no_grad():
        model.conv.bias.fill_(1e4)  # every output near 1e4, spread ~0.5
    report = build_report(model, probes, quick_options(layers=["conv"]))
    (section,) = [s for s in report.sections if s.name == "conv"]
    ref = reference_outputs(model, probes)["conv"][0]  # float64 copy of the float32 output
    assert float(ref.std(correction=0)) < 5  # the case in question: spread tiny next to 1e4
    assert section.stats.std == pytest.approx(float(ref.std(correction=0)), rel=1e-4)
    per_probe = [p.std for p in section.per_probe_stats]
    np.testing.assert_allclose(per_probe, ref.flatten(1).std(1, correction=0).numpy(), rtol=1e-4, atol=0)


# ----------------------------------------------------------------------------------------------
# A channel with no finite mean is never chosen as a top channel ahead of a measured one


def test_a_nan_channel_mean_is_ranked_last_not_first():
    # channel means 1, NaN, 3, 2, -inf: the NaN is below every number, -inf included
    values = [1.0, float("nan"), 3.0, 2.0, float("-inf")]
    images = torch.stack([torch.full((4, 4), v) for v in values])[None]
    means = torch.tensor([values])
    (top2,) = top_channel_tiles(images, means, k=2, tile_size=4)
    assert top2.channels == [2, 3]
    (every,) = top_channel_tiles(images, means, k=5, tile_size=4)
    assert every.channels == [2, 3, 0, 4, 1]
    # the finite tiles keep their shared scale (1 .. 3), on 128 even levels: 3 -> 2 * 127,
    # 2 -> 2 * round(63.5) = 2 * 64 (half to even), 1 -> 0; the non-finite ones are drawn grey
    assert (every.vmin, every.vmax) == (1.0, 3.0)
    assert every.tiles[:, 0, 0].tolist() == [254, 128, 0, 255, 255]


def test_capture_never_shows_an_all_nan_channel_first():
    model = rm.seeded(rm.ConvInplaceRelu(cin=3, cout=4))
    with torch.no_grad():
        model.conv.bias.copy_(torch.tensor([0.0, float("nan"), 5.0, 1.0]))  # channel 1 all NaN
        model.conv.weight.mul_(0.01)  # the bias sets the order: 2, 3, 0
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(7))
    capture = ActivationCapture(model, {"conv"}, max_channels=2, tile_size=8)
    with preserved_model_state(model), capture, torch.no_grad():
        capture.start_batch()
        model.conv(x)
    (layer,) = capture.result().detailed()
    assert [t.channels for t in layer.tiles] == [[2, 3], [2, 3]]
