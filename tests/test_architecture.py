"""torchinfo -> table rows and totals (cnnreport.architecture)."""

from __future__ import annotations

import pytest
import reference_models as rm
import torch
from conftest import quick_options
from torch import nn
from torchinfo import summary

from cnnreport.analysis.architecture import count_parameters, inspect_model, shared_parameters
from cnnreport.report.pipeline import build_report


def torchinfo_of(model: nn.Module, x: torch.Tensor):
    model.eval()
    return summary(model, input_data=[x], verbose=0, depth=1000, mode="eval")


@pytest.mark.parametrize("arch", sorted(rm.ARCHITECTURES))
def test_rows_and_totals_equal_torchinfo(arch):
    model = rm.seeded(rm.ARCHITECTURES[arch]())
    x = torch.randn(1, 3, 32, 32)
    ref = torchinfo_of(model, x)
    arch_info = inspect_model(model, (x,))
    rows = arch_info.rows
    assert len(rows) == len(ref.summary_list)
    names = {id(m): n for n, m in model.named_modules()}
    for row, info in zip(rows, ref.summary_list):
        assert row.name == (names[id(info.module)] or "(model)")
        assert row.type == info.class_name == type(info.module).__name__
        assert row.depth == info.depth
        assert row.output_shape == list(info.output_size)
        assert row.input_shape == list(info.input_size)
        assert row.is_leaf == info.is_leaf_layer
        if row.call_index == 1:
            assert row.params == max(info.num_params, 0)
        if row.is_leaf:
            assert row.mult_adds == info.macs
        if isinstance(info.module, nn.Conv2d):
            assert row.kernel_size == list(info.module.kernel_size)
    total = sum(p.numel() for p in model.parameters())
    s = arch_info.summary
    assert s.total_params == total == ref.total_params
    assert s.trainable_params == ref.trainable_params == total
    assert s.non_trainable_params == 0
    assert s.mult_adds == ref.total_mult_adds
    assert s.param_bytes == total * 4
    assert s.input_shape == [3, 32, 32]
    assert s.output_shape == [1, 10]
    assert s.num_conv_layers == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    leaf_params = sum(r.params for r in rows if r.is_leaf)
    assert leaf_params == total
    assert sum(r.param_percent for r in rows if r.is_leaf) == pytest.approx(100.0)
    # A container's mult-adds are the sum of the leaves inside it.
    top = rows[0]
    assert top.depth == 0 and top.mult_adds == sum(r.mult_adds for r in rows if r.is_leaf)


def test_resnet50_like_has_resnet50s_parameter_count():
    model = rm.resnet50_like()
    total, trainable, nbytes = count_parameters(model)
    assert total == trainable == 25_557_032
    assert nbytes == 4 * 25_557_032
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 53


def test_frozen_layers_are_counted_non_trainable():
    model = rm.tiny_resnet()
    for p in model.conv1.parameters():
        p.requires_grad_(False)
    model.fc.bias.requires_grad_(False)
    rows = {r.name: r for r in inspect_model(model, (torch.randn(1, 3, 16, 16),)).rows}
    assert rows["conv1"].trainable == "no"
    assert rows["fc"].trainable == "partial"
    assert rows["layer1.0.conv1"].trainable == "yes"
    assert rows["layer1.0.relu"].trainable == ""
    arch = inspect_model(model, (torch.randn(1, 3, 16, 16),))
    frozen = model.conv1.weight.numel() + model.fc.bias.numel()
    assert arch.summary.non_trainable_params == frozen
    assert arch.summary.trainable_params == rm.count_params(model) - frozen
    assert model.conv1.weight.requires_grad is False  # inspect_model left the flags alone
    assert model.layer1[0].conv1.weight.requires_grad is True


def test_module_called_twice_gets_two_rows_params_counted_once():
    model = rm.SharedConv()
    arch = inspect_model(model, (torch.randn(1, 3, 8, 8),))
    shared = [r for r in arch.rows if r.name == "shared"]
    assert [r.call_index for r in shared] == [1, 2]
    assert shared[0].params == 4 * 4 * 9 + 4 and shared[1].params == 0
    assert shared[0].row_id != shared[1].row_id
    assert arch.summary.total_params == rm.count_params(model)
    assert sum(r.params for r in arch.rows if r.is_leaf) == rm.count_params(model)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 3, 3, padding=1)
        self.b = nn.Conv2d(3, 3, 3, padding=1)
        self.b.weight = self.a.weight  # tied weights, different modules

    def forward(self, x):
        return self.b(self.a(x))


def test_tied_weights_counted_once_with_a_note():
    model = Tied()
    arch = inspect_model(model, (torch.randn(1, 3, 8, 8),))
    assert arch.summary.total_params == sum(p.numel() for p in model.parameters()) == 81 + 3 + 3
    assert shared_parameters(model) == {"a": ["b"], "b": ["a"]}
    assert {r.name: r.shared_with for r in arch.rows if r.is_leaf} == {"a": ["b"], "b": ["a"]}
    assert any("once" in note for note in arch.notes)


def test_report_layers_are_the_architecture_rows(probes):
    model = rm.seeded(rm.tiny_mobilenet())
    report = build_report(model, probes, quick_options())
    ref = torchinfo_of(model, probes[:1])
    assert len(report.layers) == len(ref.summary_list)
    assert report.model.total_params == ref.total_params == rm.count_params(model)
    assert report.model.input_shape == [3, 16, 16]
    # Each conv row links to its section and each section has a row.
    linked = {r.section_id for r in report.layers if r.section_id}
    assert linked == {s.id for s in report.sections}
    depthwise = next(r for r in report.layers if r.name == "blocks.0.depthwise")
    assert depthwise.kernel_size == [3, 3] and depthwise.params == 8 * 9


def test_inspect_model_keeps_training_flags():
    model = rm.FrozenBNNet()
    model.train()
    model.bn.eval()
    arch = inspect_model(model, (torch.randn(1, 3, 8, 8),))
    assert arch.summary.was_training is True
    assert model.training and model.drop.training and not model.bn.training


def test_report_does_not_keep_the_model_alive():
    # torchinfo caches every summary (which references the modules) in a global dict; a user
    # who deletes the model after its report must get the memory back.
    import gc
    import weakref

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    alive = weakref.ref(model)
    report = build_report(model, torch.randn(2, 3, 16, 16), quick_options())
    assert report.sections
    del model, report
    gc.collect()
    assert alive() is None



# ----------------------------------------------------------------------------------------------
# Bytes follow each tensor's own dtype (counted by hand)


def _small_bn_net() -> nn.Module:
    # parameters: conv 4*3*3*3 + 4 = 112, batchnorm 4 + 4 = 8, linear 4*2 + 2 = 10: 130 in all
    # buffers: running_mean 4 + running_var 4 in the model's dtype, num_batches_tracked 1 int64
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


@pytest.mark.parametrize(
    "dtype, param_bytes, buffer_bytes",
    [
        (torch.float16, 130 * 2, 8 * 2 + 8),
        (torch.bfloat16, 130 * 2, 8 * 2 + 8),
        (torch.float64, 130 * 8, 8 * 8 + 8),
        (torch.float32, 130 * 4, 8 * 4 + 8),
    ],
    ids=["float16", "bfloat16", "float64", "float32"],
)
def test_parameter_and_buffer_bytes_follow_the_dtype(dtype, param_bytes, buffer_bytes):
    model = _small_bn_net().to(dtype).eval()
    assert count_parameters(model) == (130, 130, param_bytes)
    summary = inspect_model(model, (torch.rand(1, 3, 8, 8, dtype=dtype),)).summary
    assert (summary.total_params, summary.param_bytes, summary.buffer_bytes) == (130, param_bytes, buffer_bytes)
    assert summary.dtype == str(dtype).replace("torch.", "")


def test_bytes_of_a_mixed_precision_model_add_up_per_tensor():
    model = _small_bn_net()
    model[0].half()  # 112 parameters x 2 bytes = 224
    model[4].double()  # 10 x 8 = 80; the batchnorm stays float32: 8 x 4 = 32
    assert count_parameters(model) == (130, 130, 224 + 32 + 80)
    # a half-precision weight tied into two modules is counted, and its bytes, once
    tied = Tied().half()
    assert count_parameters(tied) == (87, 87, 87 * 2)


# ----------------------------------------------------------------------------------------------
# Containers, depth, sharing and the summary's fields (values worked out by hand)


def _nested() -> nn.Module:
    # A container after a leaf and a leaf four levels down: torchinfo's default depth is 3.
    return nn.Sequential(
        nn.Linear(4, 3, bias=False),
        nn.Sequential(nn.Linear(3, 2, bias=False), nn.Sequential(nn.Sequential(nn.Linear(2, 5, bias=False)))),
    )


def test_container_mult_adds_are_the_sum_of_their_leaves_at_every_depth():
    # bias-free Linear at batch 1: in * out mult-adds: 4*3 = 12, 3*2 = 6, 2*5 = 10
    arch = inspect_model(_nested(), (torch.randn(1, 4),))
    assert [(r.name, r.depth, r.is_leaf, r.mult_adds) for r in arch.rows] == [
        ("(model)", 0, False, 28),
        ("0", 1, True, 12),
        ("1", 1, False, 16),
        ("1.0", 2, True, 6),
        ("1.1", 2, False, 10),
        ("1.1.0", 3, False, 10),
        ("1.1.0.0", 4, True, 10),
    ]


def test_summary_prints_nothing(capsys):
    inspect_model(_nested(), (torch.randn(1, 4),))
    assert capsys.readouterr().out == ""


class OneLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x):
        return self.lin(x)


def test_a_module_shared_with_two_others_lists_both():
    # a.weight is also b's, a.bias is also c's: a shares with b and c, b and c only with a;
    # d holds its own tensors and shares nothing
    model = nn.Module()
    model.a, model.b, model.c, model.d = (nn.Linear(2, 2) for _ in range(4))
    model.b.weight = model.a.weight
    model.c.bias = model.a.bias
    assert shared_parameters(model) == {"a": ["b", "c"], "b": ["a"], "c": ["a"]}


def test_a_module_registered_under_two_paths_shares_with_its_alias():
    model = nn.Module()
    model.first = nn.Linear(2, 2)
    model.second = model.first
    model.other = nn.Linear(2, 2)
    assert shared_parameters(model) == {"first": ["second"], "second": ["first"]}


def test_count_parameters_skips_uninitialised_ones_and_counts_the_rest():
    model = nn.Sequential(nn.LazyLinear(3), nn.Linear(3, 2, dtype=torch.float64))
    # only the float64 Linear: 3*2 + 2 = 8 values of 8 bytes
    assert count_parameters(model) == (8, 8, 64)


def test_second_call_row_has_no_share_of_the_parameters_and_ids_follow_the_path():
    model = rm.SharedConv()
    arch = inspect_model(model, (torch.randn(1, 3, 8, 8),))
    shared = [r for r in arch.rows if r.name == "shared"]
    assert [r.row_id for r in shared] == ["row-shared", "row-shared-call2"]
    assert shared[0].param_percent > 0.0
    assert shared[1].param_percent == 0.0
    assert [r.shared_with for r in arch.rows if r.name != "(model)"] == [[] for r in arch.rows if r.name != "(model)"]
    assert [r.executed for r in arch.rows] == [True] * len(arch.rows)


def test_a_model_without_parameters_defaults_to_cpu_float32():
    model = nn.Sequential(nn.ReLU(), nn.Flatten())
    arch = inspect_model(model, (torch.randn(1, 2, 3),))
    s = arch.summary
    assert (s.total_params, s.device, s.dtype, s.class_name) == (0, "cpu", "float32", "Sequential")
    assert [r.param_percent for r in arch.rows] == [0.0, 0.0, 0.0]


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 2, dtype=torch.float64)

    def forward(self, x, y):
        return x.mean() + self.lin(y)


def test_summary_of_a_float64_model_with_two_inputs():
    arch = inspect_model(TwoInputs(), (torch.randn(1, 3, 8, 7, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)))
    s = arch.summary
    assert s.input_shape == [[3, 8, 7], [5]]
    assert (s.device, s.dtype, s.class_name) == ("cpu", "float64", "TwoInputs")


def test_only_this_calls_cache_entry_is_dropped(monkeypatch):
    # Another summary of a model of the same class stored its entry after ours: it stays.
    import torchinfo
    from torchinfo import torchinfo as torchinfo_module

    real = torchinfo.summary
    other: list = ["another summary"]

    def summary_then_another(*args, **kwargs):
        stats = real(*args, **kwargs)
        torchinfo_module._cached_forward_pass["OneLinear"] = other
        return stats

    monkeypatch.setattr(torchinfo, "summary", summary_then_another)
    monkeypatch.setattr(torchinfo_module, "_cached_forward_pass", {})
    inspect_model(OneLinear(), (torch.randn(1, 2),))
    assert torchinfo_module._cached_forward_pass == {"OneLinear": other}


def test_a_pooling_layer_with_a_kernel_pair_shows_it():
    model = nn.Sequential(nn.MaxPool2d((2, 3)), nn.Flatten(), nn.Linear(6, 2))
    arch = inspect_model(model, (torch.randn(1, 1, 4, 9),))
    # (4, 9) pooled by (2, 3): 2 x 3 = 6 values
    assert [(r.name, r.kernel_size) for r in arch.rows] == [("(model)", None), ("0", [2, 3]), ("1", None), ("2", None)]
