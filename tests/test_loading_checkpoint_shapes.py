"""Checkpoints of less common shapes, read and put into tiny models built here: integer keys
beside the named ones, whole modules inside a trusted checkpoint, dotted ``--weights-key``
paths that stop two levels down or inside a module, class names after a bad entry, exactly
eight top-level keys, several entries that do not fit, version metadata through a file
(a wrapper's own entry included), strip sequences of equal score, and ``load_model`` passing
``--weights-key``, ``--trust-checkpoint`` and ``keep_stored_weights`` on.
"""

from __future__ import annotations

import textwrap
from collections import OrderedDict

import pytest
import torch
from torch import nn

from cnnreport.errors import WeightsError
from cnnreport.io.loading import (
    apply_state_dict,
    load_model,
    load_weights,
    read_checkpoint,
)


def save(tmp_path, obj, name="c.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def linear_state(weight: float, bias: float, dtype=torch.float32) -> OrderedDict:
    return OrderedDict([("weight", torch.full((1, 1), weight, dtype=dtype)), ("bias", torch.full((1,), bias, dtype=dtype))])


def filled_linear(weight: float, bias: float) -> nn.Linear:
    layer = nn.Linear(1, 1)
    with torch.no_grad():
        layer.weight.fill_(weight)
        layer.bias.fill_(bias)
    return layer


# -- integer keys --------------------------------------------------------------------------------


def test_an_integer_key_makes_the_top_level_no_state_dict(tmp_path):
    path = save(tmp_path, {1: torch.zeros(1), "state_dict": linear_state(2.0, 3.0)})
    checkpoint = read_checkpoint(path)
    assert checkpoint.notes == ["used checkpoint key 'state_dict'"]
    assert list(checkpoint.state_dict) == ["weight", "bias"]


def test_a_state_dict_under_an_integer_key_is_not_offered(tmp_path):
    path = save(tmp_path, {"model": linear_state(1.0, 0.0), 5: linear_state(9.0, 9.0)})
    checkpoint = read_checkpoint(path)
    assert checkpoint.notes == ["used checkpoint key 'model'"]
    assert checkpoint.alternatives == {}
    only_integer = save(tmp_path, {7: linear_state(1.0, 0.0), "step": 3}, "int.pt")
    with pytest.raises(WeightsError) as info:
        read_checkpoint(only_integer)
    assert info.value.message == f"no state dict found in weights file {only_integer} (top-level keys: 7, step)"


# -- whole modules inside a trusted checkpoint ---------------------------------------------------------


def test_a_whole_module_under_a_known_key_gives_its_state_dict(tmp_path):
    path = save(tmp_path, {"model": filled_linear(0.5, -0.5), "epoch": 4})
    checkpoint = read_checkpoint(path, trust_checkpoint=True)
    assert checkpoint.notes == ["used checkpoint key 'model'"]
    assert {k: v.item() for k, v in checkpoint.state_dict.items()} == {"weight": 0.5, "bias": -0.5}


def test_a_weights_key_naming_a_whole_module_gives_its_state_dict(tmp_path):
    path = save(tmp_path, {"model": filled_linear(0.5, -0.5), "ema": filled_linear(1.5, -1.5)})
    checkpoint = read_checkpoint(path, key="ema", trust_checkpoint=True)
    assert checkpoint.notes == ["used checkpoint key 'ema'"]
    assert {k: v.item() for k, v in checkpoint.state_dict.items()} == {"weight": 1.5, "bias": -1.5}


def test_a_dotted_weights_key_past_a_whole_module_lists_the_modules_keys(tmp_path):
    path = save(tmp_path, {"model": filled_linear(0.5, -0.5)})
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path, key="model.head", trust_checkpoint=True)
    assert info.value.message == (
        f"--weights-key 'model.head': {path} has no 'head' at model (keys there: weight, bias)"
    )


def test_a_weights_key_missing_two_levels_down_names_the_dotted_place(tmp_path):
    path = save(tmp_path, {"run": {"best": {"model": linear_state(1.0, 0.0)}}})
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path, key="run.best.ema")
    assert info.value.message == f"--weights-key 'run.best.ema': {path} has no 'ema' at run.best (keys there: model)"


# -- class names and key lists ---------------------------------------------------------------------


def test_class_names_come_from_labels_after_a_class_to_idx_that_is_no_index(tmp_path):
    path = save(tmp_path, {"state_dict": linear_state(1.0, 0.0), "class_to_idx": {"cat": "x"}, "labels": ["ant", "bee"]})
    assert read_checkpoint(path).class_names == ["ant", "bee"]


def test_eight_top_level_keys_are_listed_without_a_remainder(tmp_path):
    path = save(tmp_path, {f"k{i}": i for i in range(8)})
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path)
    assert info.value.message == f"no state dict found in weights file {path} (top-level keys: k0, k1, k2, k3, k4, k5, k6, k7)"


# -- entries that do not fit -----------------------------------------------------------------------


def test_the_first_alternative_that_fits_is_used_after_one_that_does_not(tmp_path):
    path = save(
        tmp_path,
        {
            "model": OrderedDict([("other", torch.zeros(2))]),
            "ema": OrderedDict([("weight", torch.zeros(3, 3)), ("bias", torch.zeros(3))]),
            "model_ema": linear_state(4.0, -4.0),
        },
    )
    model = nn.Linear(1, 1)
    assert load_weights(model, str(path)) == [
        "used checkpoint key 'model' (also found 'ema', 'model_ema'; choose with --weights-key)",
        "the first entry did not fit the model; used checkpoint key 'model_ema'",
        "loaded 2 tensors into Linear",
    ]
    assert (model.weight.item(), model.bias.item()) == (4.0, -4.0)


MODEL_FILE = textwrap.dedent(
    """
    from torch import nn


    class One(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(1, 1)
    """
)


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "one.py"
    path.write_text(MODEL_FILE, encoding="utf-8")
    return f"{path}:One"


def fc_state(weight: float, bias: float, dtype=torch.float32) -> OrderedDict:
    return OrderedDict((f"fc.{k}", v) for k, v in linear_state(weight, bias, dtype).items())


def test_load_model_passes_the_weights_key_on(tmp_path, spec):
    path = save(tmp_path, {"model": fc_state(1.0, 2.0), "ema": fc_state(3.0, 4.0)})
    loaded = load_model(spec, weights=str(path), weights_key="ema")
    assert loaded.notes == ["used checkpoint key 'ema'", "loaded 2 tensors into One"]
    assert (loaded.model.fc.weight.item(), loaded.model.fc.bias.item()) == (3.0, 4.0)


def test_load_model_passes_trust_on(tmp_path, spec):
    path = save(tmp_path, {"state_dict": fc_state(1.0, 2.0), "loss": nn.CrossEntropyLoss()})
    loaded = load_model(spec, weights=str(path), trust_checkpoint=True)
    assert loaded.notes == ["used checkpoint key 'state_dict'", "loaded 2 tensors into One"]
    assert (loaded.model.fc.weight.item(), loaded.model.fc.bias.item()) == (1.0, 2.0)


def test_stored_weights_are_kept_from_the_alternative_that_fits(tmp_path, spec):
    # float16 keeps 10 mantissa bits: 0.1 = 1.6 * 2**-4, 0.6 * 1024 = 614.4 -> 614, so
    # 1.599609375 / 16 = 0.0999755859375; 0.3 = 1.2 * 2**-2, 204.8 -> 205, so 0.300048828125
    path = save(tmp_path, {"model": OrderedDict([("other", torch.zeros(2))]), "ema": fc_state(0.1, -0.3, torch.float16)})
    loaded = load_model(spec, weights=str(path), keep_stored_weights=True)
    assert loaded.notes[1] == "the first entry did not fit the model; used checkpoint key 'ema'"
    assert {k: (v.dtype, v.item()) for k, v in loaded.stored_weights.items()} == {
        "fc.weight": (torch.float16, 0.0999755859375),
        "fc.bias": (torch.float16, -0.300048828125),
    }
    assert loaded.model.fc.weight.dtype == torch.float32
    assert loaded.model.fc.weight.item() == 0.0999755859375


# -- version metadata through a file ------------------------------------------------------------------


class Versioned(nn.Module):
    """A root with one parameter and a child; records the metadata each sees when loading."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1))
        self.inner = nn.Linear(1, 1)
        self.seen: dict[str, dict] = {}
        for prefix_module in (self, self.inner):
            prefix_module._register_load_state_dict_pre_hook(self._record)

    def _record(self, state_dict, prefix, local_metadata, *args) -> None:
        self.seen[prefix] = dict(local_metadata)


def versioned_state(prefix: str) -> OrderedDict:
    return OrderedDict(
        [(f"{prefix}scale", torch.ones(1)), (f"{prefix}inner.weight", torch.ones(1, 1)), (f"{prefix}inner.bias", torch.ones(1))]
    )


def test_version_metadata_in_a_file_reaches_each_module(tmp_path):
    weights = versioned_state("")
    weights._metadata = OrderedDict([("", {"version": 5}), ("inner", {"version": 3})])
    path = save(tmp_path, weights)
    model = Versioned()
    assert load_weights(model, str(path)) == ["loaded 3 tensors into Versioned"]
    assert model.seen == {"": {"version": 5}, "inner.": {"version": 3}}


def test_a_wrapped_files_metadata_for_the_wrapped_model_reaches_the_root(tmp_path):
    # as DataParallel saves it: its own entry "", then the model's as "module", then the rest
    weights = versioned_state("module.")
    weights._metadata = OrderedDict([("", {"version": 1}), ("module", {"version": 5}), ("module.inner", {"version": 3})])
    path = save(tmp_path, weights)
    model = Versioned()
    assert load_weights(model, str(path)) == ["stripped prefix 'module.' from 3 keys", "loaded 3 tensors into Versioned"]
    assert model.seen == {"": {"version": 5}, "inner.": {"version": 3}}


# -- strip sequences of equal score -------------------------------------------------------------------


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(1))
        self.b = nn.Parameter(torch.zeros(1))


class One(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(1))


def test_of_two_strip_orders_of_the_same_length_the_first_tried_is_kept():
    # 'module.' then 'model.', or 'model.' then 'module.': both fit every key in two strips
    model = Two()
    state = OrderedDict([("module.a", torch.full((1,), 1.0)), ("model.b", torch.full((1,), 2.0))])
    assert apply_state_dict(model, state) == [
        "stripped prefix 'module.' from 1 key",
        "stripped prefix 'model.' from 1 key",
        "loaded 2 tensors into Two",
    ]
    assert (model.a.item(), model.b.item()) == (1.0, 2.0)


def test_a_shorter_strip_sequence_tried_later_wins_over_a_longer_one_of_the_same_score():
    # 'module.' then 'model.' matches 'a' in two strips, 'model.' alone in one: the one strip
    # is kept, so the stray key is reported as it is in the file
    state = OrderedDict([("model.a", torch.ones(1)), ("module.junk", torch.ones(1))])
    with pytest.raises(WeightsError) as info:
        apply_state_dict(One(), state)
    assert info.value.message == "weights the checkpoint do not fit One: 1 unexpected key (module.junk)"
