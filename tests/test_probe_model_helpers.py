"""What probes the model asks for, read from its first convolution, and the synthetic input.

Tiny models built here; the expected counts are the ones written in each model.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnreport.errors import OptionError
from cnnreport.io.probes import expected_input_channels, expected_input_ndim, image_channels, synthetic_probes


@pytest.mark.parametrize("channels, expected", [(1, 1), (3, 3), (4, 4), (2, None), (5, None), (6, None)])
def test_image_channels_trusts_only_counts_an_image_can_have(channels, expected):
    assert image_channels(nn.Sequential(nn.Conv2d(channels, 2, 1))) == expected


def test_image_channels_without_a_convolution_is_none():
    assert image_channels(nn.Sequential(nn.Linear(3, 2))) is None


@pytest.mark.parametrize(
    "layer, channels, ndim",
    [
        (nn.Conv1d(2, 4, 3), 2, 2),
        (nn.Conv2d(3, 4, 3), 3, 3),
        (nn.Conv3d(5, 4, 1), 5, 4),
        (nn.ConvTranspose2d(7, 4, 3), 7, 3),
        (nn.ConvTranspose1d(6, 2, 3), 6, 2),
    ],
)
def test_channels_and_sample_dimensions_of_each_kind_of_convolution(layer, channels, ndim):
    model = nn.Sequential(nn.Identity(), layer)
    assert expected_input_channels(model) == channels
    assert expected_input_ndim(model) == ndim


def test_a_lazy_convolution_that_has_run_knows_its_channels():
    lazy = nn.LazyConv2d(4, 3)
    assert expected_input_channels(lazy) is None
    assert expected_input_ndim(lazy) == 3
    lazy(torch.zeros(1, 6, 5, 5))
    assert expected_input_channels(lazy) == 6


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_scripted_model_keeps_in_channels_and_its_kind():
    scripted = torch.jit.script(nn.Sequential(nn.ReLU(), nn.Conv1d(5, 2, 3)))
    assert expected_input_channels(scripted) == 5
    assert expected_input_ndim(scripted) == 2


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_traced_convolution_is_read_from_its_weight():
    model = nn.Sequential(nn.Conv2d(6, 4, 3)).eval()
    traced = torch.jit.trace(model, torch.zeros(1, 6, 5, 5))
    assert expected_input_channels(traced) == 6
    assert expected_input_ndim(traced) == 3


class Stub(nn.Module):
    """A module named like a convolution, as TorchScript shows one, with chosen attributes."""

    def __init__(self, name: str, **attrs):
        super().__init__()
        self.original_name = name
        for key, value in attrs.items():
            setattr(self, key, value)


def test_a_module_named_like_a_convolution_is_read_by_its_attributes():
    weight = torch.zeros(4, 3, 3, 3)
    assert expected_input_channels(Stub("Conv2d", in_channels=8)) == 8
    assert expected_input_channels(Stub("Conv2d", weight=weight, groups=2)) == 6
    assert expected_input_channels(Stub("Conv2d", weight=weight)) == 3  # groups default to 1
    assert expected_input_channels(Stub("Conv2d", weight=weight, groups="2")) == 3
    assert expected_input_channels(Stub("Conv2d", in_channels="8", weight=weight)) == 3
    assert expected_input_channels(Stub("Conv2d", weight=torch.zeros(4, 3))) is None
    assert expected_input_channels(Stub("Conv2d", weight=torch.zeros(4, 3, 3))) == 3
    assert expected_input_channels(Stub("Conv2d")) is None
    assert expected_input_ndim(Stub("LazyConvTranspose3d")) == 4
    assert expected_input_ndim(Stub("Conv4d")) is None
    assert expected_input_ndim(Stub("MyConv2d")) is None
    assert expected_input_ndim(Stub("Conv2dx")) is None


# -- synthetic probes -------------------------------------------------------------------------------


def test_synthetic_probes_are_float32_standard_normal_from_their_own_generator():
    batch = synthetic_probes((2, 3, 4), seed=7, count=2)
    expected = torch.randn((2, 2, 3, 4), generator=torch.Generator().manual_seed(7), dtype=torch.float32)
    assert batch.tensor.dtype == torch.float32
    assert torch.equal(batch.tensor, expected)
    assert batch.inputs == (batch.tensor,)
    assert batch.names == ["synthetic 0", "synthetic 1"]
    assert batch.sources == ["", ""] and batch.sha256 == ["", ""]
    assert batch.synthetic is True
    assert batch.notes == [
        "no probes given: synthetic standard-normal input of shape (2, 3, 4) (seed 7); "
        "activations show the response to noise, not to real images"
    ]
    assert [view.shape for view in batch.display] == [(3, 4), (3, 4)]  # 2 channels: their mean


def test_synthetic_probes_of_one_pixel_and_one_probe():
    batch = synthetic_probes(["1", 1, 1])
    assert batch.tensor.shape == (1, 1, 1, 1) and len(batch) == 1


@pytest.mark.parametrize(
    "size, text",
    [((3, 0, 8), "3 0 8"), ((-1,), "-1"), ((), "()")],
)
def test_synthetic_sizes_must_be_positive(size, text):
    with pytest.raises(OptionError) as info:
        synthetic_probes(size)
    assert info.value.one_line() == f"--input-size {text} must be positive sizes, e.g. 3 224 224"


@pytest.mark.parametrize("size", [("a", 2), 5, None])
def test_synthetic_sizes_must_be_whole_numbers(size):
    with pytest.raises(OptionError) as info:
        synthetic_probes(size)
    assert info.value.one_line() == f"--input-size {size!r} must be whole numbers, e.g. 3 224 224"


@pytest.mark.parametrize("count", [0, -2])
def test_synthetic_probe_count_must_be_positive(count):
    with pytest.raises(OptionError) as info:
        synthetic_probes((3, 4, 4), count=count)
    assert info.value.one_line() == f"synthetic probe count must be positive, got {count}"
