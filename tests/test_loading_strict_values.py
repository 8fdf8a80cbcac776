"""Loading stays safe and strict whatever the environment or the model does: a pickled model
is refused without trust even when ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` asks torch to unpickle
everything, a model whose load hook drops or adds a key fails the strict load, and whether a
cast between two float8 formats of the same width is exact is decided by their ranges.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from cnnreport.errors import ModelSpecError, WeightsError
from cnnreport.io.loading import apply_state_dict, load_model, read_checkpoint


def test_a_pickled_model_stays_refused_when_the_environment_turns_weights_only_off(tmp_path, monkeypatch):
    path = tmp_path / "whole.pt"
    torch.save(nn.Linear(1, 1), path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ModelSpecError) as info:
        load_model(str(path))
    assert info.value.message == (
        f"{path} is a pickled Python object, not a TorchScript archive; unpickling it can run "
        "arbitrary code (it needs torch.nn.modules.linear.Linear)"
    )
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path)
    assert info.value.message == (
        f"weights file {path} holds Python objects beyond tensors (it needs torch.nn.modules.linear.Linear), "
        "and unpickling them can run arbitrary code"
    )


class Hooked(nn.Linear):
    """A Linear(1, 1) whose load pre-hook drops its bias or adds a key of its own."""

    def __init__(self, change: str) -> None:
        super().__init__(1, 1)
        self.change = change
        self._register_load_state_dict_pre_hook(self._hook)

    def _hook(self, state_dict, prefix, *args) -> None:
        if self.change == "drop":
            del state_dict[prefix + "bias"]
        else:
            state_dict[prefix + "extra"] = torch.zeros(1)


@pytest.mark.parametrize("change", ["drop", "add"])
def test_a_key_a_load_hook_drops_or_adds_fails_the_strict_load(change):
    model = Hooked(change)
    weights = OrderedDict([("weight", torch.full((1, 1), 2.0)), ("bias", torch.full((1,), -3.0))])
    with pytest.raises(WeightsError) as info:
        apply_state_dict(model, weights, source="w.pt")
    assert info.value.message == "loading weights w.pt into Hooked failed: RuntimeError: Error(s) in loading state_dict for Hooked:"


def every_finite(dtype: torch.dtype) -> torch.Tensor:
    """All finite values of a one-byte float format, from its 256 bit patterns, as float64."""
    values = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype).to(torch.float64)
    return values[torch.isfinite(values)]


def test_float8_e5m2_weights_are_copied_exactly_into_float8_e5m2fnuz():
    # same width, epsilon and max; fnuz's exponent bias is one more, so it reaches one binade lower
    finite = every_finite(torch.float8_e5m2)
    assert torch.equal(finite.to(torch.float8_e5m2fnuz).to(torch.float64), finite)
    model = nn.Linear(1, 1).to(torch.float8_e5m2fnuz)
    weights = {"weight": torch.tensor([[2.0**-16]]).to(torch.float8_e5m2), "bias": torch.tensor([-57344.0]).to(torch.float8_e5m2)}
    assert apply_state_dict(model, weights) == [
        "loaded 2 tensors into Linear",
        "the checkpoint's dtype is not the model's: 2 float8_e5m2 tensors copied exactly into the model's float8_e5m2fnuz",
    ]
    assert (model.weight.double().item(), model.bias.double().item()) == (2.0**-16, -57344.0)


def test_float8_e5m2fnuz_weights_are_rounded_into_float8_e5m2():
    finite = every_finite(torch.float8_e5m2fnuz)
    assert not torch.equal(finite.to(torch.float8_e5m2).to(torch.float64), finite)  # 2**-17 has no e5m2 value
    model = nn.Linear(1, 1).to(torch.float8_e5m2)
    weights = {"weight": torch.tensor([[0.5]]).to(torch.float8_e5m2fnuz), "bias": torch.tensor([1.0]).to(torch.float8_e5m2fnuz)}
    assert apply_state_dict(model, weights)[1] == (
        "the checkpoint's dtype is not the model's: 2 float8_e5m2fnuz tensors rounded to the model's float8_e5m2"
    )


F8 = (torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.float8_e5m2, torch.float8_e5m2fnuz, torch.float8_e8m0fnu)
WIDER = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Worked out from the formats (exponent bits, mantissa bits, exponent bias, what the top codes
# mean): every finite value of the first is a value of the second only for these pairs. e4m3's
# 3 mantissa bits do not fit e5m2fnuz's 2 (1.125 has no e5m2fnuz value); e5m2fnuz reaches down
# to 2**-17, a float16 subnormal; e8m0fnu's 2**-127 .. 2**127 is past float16 but inside
# bfloat16's exponent range.
EXACT = {
    (torch.float8_e4m3fn, w) for w in WIDER
} | {(torch.float8_e4m3fnuz, w) for w in WIDER} | {(torch.float8_e5m2, w) for w in WIDER + (torch.float8_e5m2fnuz,)} | {
    (torch.float8_e5m2fnuz, w) for w in WIDER
} | {(torch.float8_e8m0fnu, w) for w in (torch.bfloat16, torch.float32, torch.float64)}


@pytest.mark.parametrize("have, want", [(h, w) for h in F8 for w in F8 + WIDER if h != w], ids=str)
def test_whether_a_float8_cast_is_exact_follows_the_formats_values(have, want):
    model = nn.Linear(1, 1).to(want)
    weights = {"weight": torch.tensor([[1.0]]).to(have), "bias": torch.tensor([2.0]).to(have)}
    name = lambda dtype: str(dtype).replace("torch.", "")
    how = f"copied exactly into the model's {name(want)}" if (have, want) in EXACT else f"rounded to the model's {name(want)}"
    assert apply_state_dict(model, weights)[1] == f"the checkpoint's dtype is not the model's: 2 {name(have)} tensors {how}"


def test_float8_e4m3fn_weights_are_rounded_into_float8_e5m2fnuz():
    model = nn.Linear(1, 1).to(torch.float8_e5m2fnuz)
    weights = {"weight": torch.tensor([[1.125]]).to(torch.float8_e4m3fn), "bias": torch.tensor([1.0]).to(torch.float8_e4m3fn)}
    assert weights["weight"].double().item() == 1.125  # 1 + 1/8: three mantissa bits
    assert apply_state_dict(model, weights)[1] == (
        "the checkpoint's dtype is not the model's: 2 float8_e4m3fn tensors rounded to the model's float8_e5m2fnuz"
    )
    assert model.weight.double().item() == 1.0  # two mantissa bits: 1.125 lies halfway, ties to even
