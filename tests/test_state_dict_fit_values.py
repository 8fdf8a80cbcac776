"""Putting a checkpoint's tensors into a model, pinned on tiny models built here: wrapper
prefixes stripped (stacked ones too), keys that would collide, misfit messages counted by
hand, dtype casts, old BatchNorm counters, and finding the state dict inside a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections import OrderedDict

import pytest
import torch
from torch import nn

from cnnreport.errors import OptionError, WeightsError
from cnnreport.io.loading import apply_state_dict, load_weights, parse_model_args, read_checkpoint, resolve_device


def message(info: pytest.ExceptionInfo) -> str:
    return info.value.one_line()


def linear(weight: float = 0.0, bias: float = 0.0, dtype=torch.float32) -> nn.Linear:
    layer = nn.Linear(1, 1).to(dtype)
    with torch.no_grad():
        layer.weight.fill_(weight)
        layer.bias.fill_(bias)
    return layer


def state(prefix: str = "", weight: float = 2.0, bias: float = -3.0, dtype=torch.float32) -> OrderedDict:
    return OrderedDict(
        [(f"{prefix}weight", torch.full((1, 1), weight, dtype=dtype)), (f"{prefix}bias", torch.full((1,), bias, dtype=dtype))]
    )


class Pair(nn.Module):
    """Keys a.weight, a.bias, b.weight, b.bias."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(1, 1)
        self.b = nn.Linear(1, 1)


def pair_state(prefix: str = "") -> OrderedDict:
    return OrderedDict(
        (f"{prefix}{name}.{kind}", torch.full((1, 1) if kind == "weight" else (1,), float(i)))
        for i, (name, kind) in enumerate([("a", "weight"), ("a", "bias"), ("b", "weight"), ("b", "bias")])
    )


# -- prefixes ----------------------------------------------------------------------------------


def test_keys_that_fit_load_with_one_note():
    model = linear()
    assert apply_state_dict(model, state()) == ["loaded 2 tensors into Linear"]
    assert model.weight.item() == 2.0 and model.bias.item() == -3.0


@pytest.mark.parametrize(
    "prefix, notes",
    [
        ("module.", ["stripped prefix 'module.' from 2 keys"]),
        ("model.", ["stripped prefix 'model.' from 2 keys"]),
        ("_orig_mod.", ["stripped prefix '_orig_mod.' from 2 keys"]),
        ("module.model.", ["stripped prefix 'module.' from 2 keys", "stripped prefix 'model.' from 2 keys"]),
        ("model.module.", ["stripped prefix 'model.' from 2 keys", "stripped prefix 'module.' from 2 keys"]),
        ("module._orig_mod.model.", ["stripped prefix 'module.' from 2 keys", "stripped prefix '_orig_mod.' from 2 keys",
                                     "stripped prefix 'model.' from 2 keys"]),
        ("module.module.module.module.", ["stripped prefix 'module.' from 2 keys"] * 4),
        ("backbone.", ["stripped prefix 'backbone.' from 2 keys"]),
        ("module.net.", ["stripped prefix 'module.' from 2 keys", "stripped prefix 'net.' from 2 keys"]),
    ],
)
def test_wrapper_prefixes_are_stripped_in_the_order_they_were_added(prefix, notes):
    model = linear()
    got = apply_state_dict(model, state(prefix))
    assert got == notes + ["loaded 2 tensors into Linear"]
    assert model.weight.item() == 2.0 and model.bias.item() == -3.0


def test_five_stacked_wrappers_are_more_than_the_search_looks_ahead():
    with pytest.raises(WeightsError) as info:
        apply_state_dict(linear(), state("module." * 5))
    assert "none of its 2 keys match the model's 2" in message(info)


def test_one_key_is_named_in_the_singular():
    model = nn.Linear(1, 1, bias=False)
    notes = apply_state_dict(model, OrderedDict([("module.weight", torch.ones(1, 1))]))
    assert notes == ["stripped prefix 'module.' from 1 key", "loaded 1 tensors into Linear"]


def test_a_common_head_is_stripped_only_when_every_key_has_it():
    model = Pair()
    mixed = OrderedDict([("net.a.weight", torch.ones(1, 1)), ("net.a.bias", torch.ones(1)),
                         ("b.weight", torch.ones(1, 1)), ("b.bias", torch.ones(1))])
    with pytest.raises(WeightsError) as info:
        apply_state_dict(model, mixed)
    assert message(info).startswith("weights the checkpoint do not fit Pair: 2 missing keys (a.weight, a.bias); "
                                    "2 unexpected keys (net.a.weight, net.a.bias)")


def test_a_key_without_a_dot_blocks_the_common_head():
    model = nn.Sequential(nn.Linear(1, 1))
    weights = OrderedDict([("x.0.weight", torch.ones(1, 1)), ("x.0.bias", torch.ones(1)), ("x", torch.ones(1))])
    with pytest.raises(WeightsError) as info:
        apply_state_dict(model, weights)
    assert "none of its 3 keys match the model's 2" in message(info)


def test_a_prefix_that_is_part_of_the_model_is_kept():
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.Linear(1, 1)

    model = Holder()
    assert apply_state_dict(model, state("model.")) == ["loaded 2 tensors into Holder"]
    assert model.model.weight.item() == 2.0


def test_stripping_stops_where_the_keys_fit_a_wrapped_model():
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.Linear(1, 1)

    notes = apply_state_dict(Holder(), state("module.model."))
    assert notes == ["stripped prefix 'module.' from 2 keys", "loaded 2 tensors into Holder"]


def test_a_strip_that_matches_no_more_keys_is_not_made():
    # 'module.' on one key only, and stripping it would make one key match of two: taken;
    # the other key still misfits and is named as it is
    with pytest.raises(WeightsError) as info:
        apply_state_dict(linear(), OrderedDict([("module.weight", torch.ones(1, 1)), ("other.bias", torch.ones(1))]))
    assert message(info).startswith(
        "weights the checkpoint do not fit Linear: 1 missing key (bias); 1 unexpected key (other.bias)"
    )


def test_a_stripped_key_that_already_exists_is_left_as_it_is():
    weights = OrderedDict([("weight", torch.full((1, 1), 1.0)), ("module.weight", torch.full((1, 1), 9.0)),
                           ("bias", torch.zeros(1))])
    model = linear(5.0)
    with pytest.raises(WeightsError) as info:
        apply_state_dict(model, weights)
    assert message(info).startswith("weights the checkpoint do not fit Linear: 1 unexpected key (module.weight)")
    assert model.weight.item() == 5.0


def test_metadata_follows_the_stripped_keys():
    source = nn.Sequential(nn.BatchNorm1d(2))
    wrapped = nn.DataParallel(source).state_dict()
    assert "module" in wrapped._metadata and "module.0" in wrapped._metadata
    target = nn.Sequential(nn.BatchNorm1d(2))
    seen = {}

    def hook(state_dict, prefix, local_metadata, *args):
        seen[prefix] = dict(local_metadata)

    target[0]._register_load_state_dict_pre_hook(hook)
    notes = apply_state_dict(target, wrapped)
    assert notes[0] == "stripped prefix 'module.' from 5 keys"
    assert seen == {"0.": dict(wrapped._metadata["module.0"])}


def test_metadata_of_stacked_prefixes_is_renamed_by_each_strip():
    target = nn.Sequential(nn.BatchNorm1d(1))
    weights = OrderedDict((f"module.model.{k}", v) for k, v in target.state_dict().items())
    weights._metadata = OrderedDict([("module", {"version": 1}), ("module.model", {"version": 1}),
                                     ("module.model.0", {"version": 2}), ("other.0", {"version": 3})])
    seen = {}
    target[0]._register_load_state_dict_pre_hook(lambda sd, prefix, meta, *a: seen.setdefault(prefix, dict(meta)))
    apply_state_dict(target, weights)
    assert seen == {"0.": {"version": 2}}


# -- misfits --------------------------------------------------------------------------------------


def test_no_matching_key_names_the_first_three_of_each_side():
    class Four(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = nn.ParameterList([nn.Parameter(torch.zeros(1)) for _ in range(4)])

    weights = OrderedDict((f"w{i}", torch.zeros(1)) for i in range(5))
    with pytest.raises(WeightsError) as info:
        apply_state_dict(Four(), weights, source="w.pt")
    assert message(info) == (
        "weights w.pt do not fit Four: none of its 5 keys match the model's 4 (checkpoint: w0, w1, w2; "
        "model: p.0, p.1, p.2) (weights for another architecture? check MODEL and --model-arg, "
        "or pick another checkpoint entry with --weights-key)"
    )


def test_missing_unexpected_and_shape_mismatches_are_listed_with_counts():
    model = Pair()
    weights = OrderedDict([("a.weight", torch.zeros(2, 3)), ("b.weight", torch.zeros(4)), ("b.bias", torch.zeros(1))]
                          + [(f"x{i}", torch.zeros(1)) for i in range(5)])
    with pytest.raises(WeightsError) as info:
        apply_state_dict(model, weights)
    assert message(info) == (
        "weights the checkpoint do not fit Pair: 1 missing key (a.bias); "
        "5 unexpected keys (x0, x1, x2, x3, ... 1 more); "
        "2 shape mismatches (a.weight: checkpoint (2, 3) vs model (1, 1), b.weight: checkpoint (4) vs model (1, 1)) "
        "(weights for another architecture? check MODEL and --model-arg, or pick another checkpoint entry with --weights-key)"
    )


def test_four_missing_keys_are_all_shown_and_three_mismatches_say_one_more():
    model = nn.Sequential(*[nn.Linear(1, 1) for _ in range(3)])
    weights = OrderedDict((f"{i}.weight", torch.zeros(2)) for i in range(3))
    weights["extra"] = torch.zeros(1)
    with pytest.raises(WeightsError) as info:
        apply_state_dict(model, weights)
    assert message(info).startswith(
        "weights the checkpoint do not fit Sequential: 3 missing keys (0.bias, 1.bias, 2.bias); 1 unexpected key (extra); "
        "3 shape mismatches (0.weight: checkpoint (2) vs model (1, 1), 1.weight: checkpoint (2) vs model (1, 1), ... 1 more)"
    )


def test_only_a_shape_mismatch_is_no_misfit_of_names():
    with pytest.raises(WeightsError) as info:
        apply_state_dict(nn.Linear(1, 1, bias=False), OrderedDict([("weight", torch.zeros(3))]))
    assert message(info).startswith(
        "weights the checkpoint do not fit Linear: 1 shape mismatch (weight: checkpoint (3) vs model (1, 1))"
    )


def test_a_torchscript_model_is_named_by_its_class():
    scripted = torch.jit.script(linear())
    with pytest.raises(WeightsError) as info:
        apply_state_dict(scripted, OrderedDict([("x", torch.zeros(1))]))
    assert message(info).startswith("weights the checkpoint do not fit Linear: none of its 1 keys")


def test_a_load_that_torch_refuses_names_the_model():
    class Picky(nn.Linear):
        def _load_from_state_dict(self, *args, **kwargs):
            raise RuntimeError("picky about\nits weights")

    with pytest.raises(WeightsError) as info:
        apply_state_dict(Picky(1, 1), state(), source="p.pt")
    assert message(info) == "loading weights p.pt into Picky failed: RuntimeError: picky about"


# -- dtypes -----------------------------------------------------------------------------------------


def test_float16_weights_are_copied_exactly_into_float32():
    model = linear()
    stored: dict = {}
    notes = apply_state_dict(model, state(weight=0.5, dtype=torch.float16), stored=stored)
    assert notes == ["loaded 2 tensors into Linear",
                     "the checkpoint's dtype is not the model's: 2 float16 tensors copied exactly into the model's float32"]
    assert model.weight.dtype == torch.float32 and model.weight.item() == 0.5
    assert set(stored) == {"weight", "bias"} and stored["weight"].dtype == torch.float16


def test_float64_weights_are_rounded_into_float16_and_one_is_singular():
    model = nn.Linear(1, 1, bias=False).half()
    notes = apply_state_dict(model, OrderedDict([("weight", torch.full((1, 1), 0.1, dtype=torch.float64))]))
    assert notes[-1] == "the checkpoint's dtype is not the model's: 1 float64 tensor rounded to the model's float16"
    assert model.weight.item() == float(torch.tensor(0.1, dtype=torch.float16))


@pytest.mark.parametrize(
    "have, want, exact",
    [
        (torch.bfloat16, torch.float32, True),
        (torch.float16, torch.bfloat16, False),  # bfloat16 has fewer mantissa bits
        (torch.bfloat16, torch.float16, False),  # float16 has a smaller range
        (torch.float32, torch.float64, True),
        (torch.float32, torch.float16, False),
    ],
)
def test_whether_a_cast_is_exact_follows_the_formats(have, want, exact):
    model = nn.Linear(1, 1, bias=False).to(want)
    notes = apply_state_dict(model, OrderedDict([("weight", torch.ones(1, 1, dtype=have))]))
    name = lambda d: str(d).replace("torch.", "")  # noqa: E731
    verb = f"copied exactly into the model's {name(want)}" if exact else f"rounded to the model's {name(want)}"
    assert notes[-1] == f"the checkpoint's dtype is not the model's: 1 {name(have)} tensor {verb}"


def test_casts_of_two_kinds_are_listed_in_key_order():
    model = Pair()
    weights = pair_state()
    weights["a.weight"] = weights["a.weight"].half()
    weights["b.bias"] = weights["b.bias"].double()
    weights["b.weight"] = weights["b.weight"].half()
    notes = apply_state_dict(model, weights)
    assert notes[-1] == ("the checkpoint's dtype is not the model's: 2 float16 tensors copied exactly into the model's "
                         "float32; 1 float64 tensor rounded to the model's float32")


def test_integer_buffers_and_same_dtypes_are_no_cast():
    model = nn.BatchNorm1d(1)
    weights = model.state_dict()
    weights["num_batches_tracked"] = torch.tensor(3, dtype=torch.int32)
    stored: dict = {}
    notes = apply_state_dict(model, weights, stored=stored)
    assert notes == ["loaded 5 tensors into BatchNorm1d"] and stored == {}
    assert model.num_batches_tracked.item() == 3


# -- BatchNorm counters -------------------------------------------------------------------------------


def test_an_old_checkpoint_without_batch_counters_keeps_the_models_own():
    model = nn.Sequential(nn.BatchNorm1d(1), nn.BatchNorm1d(1))
    model[0].num_batches_tracked.fill_(4)
    weights = OrderedDict((k, v.clone()) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    weights["0.running_mean"].fill_(0.5)
    notes = apply_state_dict(model, weights)
    assert notes == ["kept the model's own num_batches_tracked for 2 BatchNorm layer(s)", "loaded 10 tensors into Sequential"]
    assert model[0].num_batches_tracked.item() == 4 and model[0].running_mean.item() == 0.5


def test_a_missing_counter_without_its_running_mean_is_a_missing_key():
    model = nn.BatchNorm1d(1)
    weights = OrderedDict((k, v) for k, v in model.state_dict().items() if k in ("weight", "bias", "running_var"))
    with pytest.raises(WeightsError) as info:
        apply_state_dict(model, weights)
    assert message(info).startswith(
        "weights the checkpoint do not fit BatchNorm1d: 2 missing keys (running_mean, num_batches_tracked)"
    )


# -- finding the state dict in a file ---------------------------------------------------------------


def save(tmp_path, obj, name="c.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_a_plain_state_dict_is_used_as_it_is(tmp_path):
    path = save(tmp_path, state())
    checkpoint = read_checkpoint(path)
    assert list(checkpoint.state_dict) == ["weight", "bias"]
    assert checkpoint.notes == [] and checkpoint.alternatives == {}
    assert checkpoint.path == str(path)
    assert checkpoint.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_known_keys_come_first_and_the_others_are_alternatives(tmp_path):
    path = save(tmp_path, {"extra": state(weight=9.0), "ema": state(weight=7.0), "model": state(weight=1.0), "step": 3})
    checkpoint = read_checkpoint(path)
    assert checkpoint.state_dict["weight"].item() == 1.0
    assert list(checkpoint.alternatives) == ["ema", "extra"]
    assert checkpoint.notes == ["used checkpoint key 'model' (also found 'ema', 'extra'; choose with --weights-key)"]


def test_a_state_dict_one_level_deeper_is_found_by_its_path(tmp_path):
    path = save(tmp_path, {"train": {"ema": {"module": state(weight=4.0)}}, "meta": {"x": 1}})
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path)  # train.ema.module is three levels down: too deep to look
    assert message(info) == (
        f"no state dict found in weights file {path} (top-level keys: train, meta) "
        "(choose the entry with --weights-key NAME (a dotted path like ema.module works))"
    )
    shallow = save(tmp_path, {"train": {"ema": state(weight=4.0)}}, "s.pt")
    checkpoint = read_checkpoint(shallow)
    assert checkpoint.notes == ["used checkpoint key 'train.ema'"]
    assert checkpoint.state_dict["weight"].item() == 4.0


def test_a_weights_key_takes_a_literal_key_before_a_dotted_path(tmp_path):
    path = save(tmp_path, {"ema.module": state(weight=5.0), "ema": {"module": state(weight=6.0)}})
    assert read_checkpoint(path, key="ema.module").state_dict["weight"].item() == 5.0
    nested = save(tmp_path, {"ema": {"module": state(weight=6.0)}}, "n.pt")
    checkpoint = read_checkpoint(nested, key="ema.module")
    assert checkpoint.state_dict["weight"].item() == 6.0
    assert checkpoint.notes == ["used checkpoint key 'ema.module'"]


def test_a_weights_key_that_is_not_there_names_where_the_walk_stopped(tmp_path):
    path = save(tmp_path, {"ema": {"module": state()}, "step": 3})
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path, key="ema.modul")
    assert message(info) == f"--weights-key 'ema.modul': {path} has no 'modul' at ema (keys there: module)"
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path, key="emma")
    assert message(info) == f"--weights-key 'emma': {path} has no 'emma' at the top level (keys there: ema, step)"
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path, key="step.x")
    assert message(info) == f"--weights-key 'step.x': {path} has no 'x' at step (keys there: int)"


def test_a_weights_key_that_is_no_state_dict(tmp_path):
    path = save(tmp_path, {"ema": {"module": state()}, "step": 3})
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path, key="ema")
    assert message(info) == f"--weights-key 'ema' in {path} is not a state dict of tensors (keys: module)"
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path, key="step")
    assert message(info) == f"--weights-key 'step' in {path} is not a state dict of tensors (int)"


def test_extra_state_entries_may_hold_anything_but_a_dict_needs_one_tensor(tmp_path):
    path = save(tmp_path, {"weight": torch.ones(1, 1), "bias": torch.ones(1), "m._extra_state": {"v": 1}})
    assert list(read_checkpoint(path).state_dict) == ["weight", "bias", "m._extra_state"]
    only_extra = save(tmp_path, {"state_dict": {"m._extra_state": 1}}, "e.pt")
    with pytest.raises(WeightsError):
        read_checkpoint(only_extra)
    mixed = save(tmp_path, {"weight": torch.ones(1), "epoch": 3}, "m.pt")
    with pytest.raises(WeightsError) as info:
        read_checkpoint(mixed)
    assert "no state dict found" in message(info)


def test_top_level_keys_are_listed_up_to_eight(tmp_path):
    path = save(tmp_path, {f"k{i}": i for i in range(10)})
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path)
    assert f"(top-level keys: k0, k1, k2, k3, k4, k5, k6, k7, ... 2 more)" in message(info)
    empty = save(tmp_path, {}, "e.pt")
    with pytest.raises(WeightsError) as info:
        read_checkpoint(empty)
    assert "(top-level keys: none)" in message(info)


def test_an_alternative_that_fits_is_used_when_the_first_does_not(tmp_path):
    path = save(tmp_path, {"model": OrderedDict([("other", torch.zeros(3))]), "ema": state(weight=8.0)})
    model = linear()
    notes = load_weights(model, str(path))
    assert notes == ["used checkpoint key 'model' (also found 'ema'; choose with --weights-key)",
                     "the first entry did not fit the model; used checkpoint key 'ema'",
                     "loaded 2 tensors into Linear"]
    assert model.weight.item() == 8.0


def test_when_no_alternative_fits_the_first_error_is_raised(tmp_path):
    path = save(tmp_path, {"model": OrderedDict([("other", torch.zeros(3))]), "ema": OrderedDict([("x", torch.zeros(1))])})
    with pytest.raises(WeightsError) as info:
        load_weights(linear(), str(path))
    assert "none of its 1 keys match the model's 2 (checkpoint: other;" in message(info)


@pytest.mark.parametrize(
    "extra, names",
    [
        ({"class_names": ["cat", "dog"]}, ["cat", "dog"]),
        ({"classes": ("a", 2)}, ["a", "2"]),
        ({"idx_to_class": {"1": "dog", "0": "cat"}}, ["cat", "dog"]),
        ({"idx_to_class": {0: "cat", 2: "dog"}}, None),
        ({"class_to_idx": {"dog": 1, "cat": 0}}, ["cat", "dog"]),
        ({"class_to_idx": {"dog": "x"}}, None),
        ({"labels": []}, None),
        ({"labels": [1.5]}, None),
        ({"classes": [], "labels": ["x"]}, ["x"]),
        ({"idx_to_class": {"a": "cat"}}, None),
    ],
)
def test_class_names_from_the_checkpoint(tmp_path, extra, names):
    path = save(tmp_path, {"state_dict": state(), **extra})
    assert read_checkpoint(path).class_names == names


def test_a_whole_module_gives_its_state_dict_when_trusted(tmp_path):
    path = save(tmp_path, linear(1.5))
    checkpoint = read_checkpoint(path, trust_checkpoint=True)
    assert checkpoint.notes == ["checkpoint holds a whole Linear; used its state_dict()"]
    assert checkpoint.state_dict["weight"].item() == 1.5


def test_a_value_that_is_no_mapping_is_refused(tmp_path):
    path = save(tmp_path, [torch.ones(1)])
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path)
    assert message(info) == f"weights file {path} holds a value of type list, not a state dict or checkpoint"


def test_missing_empty_and_folder_weights(tmp_path):
    with pytest.raises(WeightsError) as info:
        read_checkpoint(tmp_path / "none.pt")
    assert message(info) == f"weights file not found: {tmp_path / 'none.pt'}"
    with pytest.raises(WeightsError) as info:
        read_checkpoint(tmp_path)
    assert message(info) == f"--weights {tmp_path} is a folder, not a file"
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError) as info:
        read_checkpoint(empty)
    assert message(info) == f"weights file {empty} is empty (0 bytes)"


def safetensors_file(tmp_path, tensors: dict, metadata: dict | None = None, name="w.bin"):
    """A .safetensors file written by hand: 8-byte header length, JSON header, raw bytes."""
    header, offset, data = {}, 0, b""
    for key, values in tensors.items():
        raw = struct.pack(f"<{len(values)}f", *values)
        header[key] = {"dtype": "F32", "shape": [len(values)], "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    path = tmp_path / name
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def test_a_safetensors_file_is_known_by_its_header_whatever_its_name(tmp_path):
    pytest.importorskip("safetensors")
    path = safetensors_file(tmp_path, {"bias": [-3.0], "weight": [2.0]}, {"class_names": '["a", "b"]'})
    checkpoint = read_checkpoint(path)
    assert {k: v.tolist() for k, v in checkpoint.state_dict.items()} == {"bias": [-3.0], "weight": [2.0]}
    assert checkpoint.class_names == ["a", "b"]


def test_safetensors_metadata_that_is_no_json_list_gives_no_names(tmp_path):
    pytest.importorskip("safetensors")
    path = safetensors_file(tmp_path, {"w": [1.0]}, {"classes": "not json", "labels": '["x"]'})
    assert read_checkpoint(path).class_names == ["x"]
    plain = safetensors_file(tmp_path, {"w": [1.0]}, None, "p.bin")
    assert read_checkpoint(plain).class_names is None


# -- options -----------------------------------------------------------------------------------------


def test_model_args_are_literals_or_bare_words():
    assert parse_model_args(["a=1", " b = [1, 2] ", "c=relu", "d='x=y'", "e=", "f=None"]) == {
        "a": 1, "b": [1, 2], "c": "relu", "d": "x=y", "e": "", "f": None,
    }


@pytest.mark.parametrize(
    "pair, text",
    [
        ("depth", "--model-arg 'depth' is not NAME=VALUE (e.g. --model-arg num_classes=10)"),
        ("2x=1", "--model-arg '2x=1': '2x' is not a valid argument name (e.g. --model-arg num_classes=10)"),
        ("=1", "--model-arg '=1': '' is not a valid argument name (e.g. --model-arg num_classes=10)"),
    ],
)
def test_model_arg_errors(pair, text):
    with pytest.raises(OptionError) as info:
        parse_model_args([pair])
    assert message(info) == text


@pytest.mark.parametrize("value", ["[1, 2", "(1,", "{'a':", "'open", '"open'])
def test_a_value_that_starts_like_a_literal_must_parse(value):
    with pytest.raises(OptionError) as info:
        parse_model_args([f"v={value}"])
    assert message(info).startswith(f"--model-arg {'v=' + value!r}: value is not a valid Python literal (SyntaxError: ")


def test_a_key_given_twice():
    with pytest.raises(OptionError) as info:
        parse_model_args(["a=1", "a=2"])
    assert message(info) == "--model-arg a is given twice"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_devices_without_cuda():
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(OptionError) as info:
        resolve_device("tpu")
    assert message(info) == "--device 'tpu' is not one of cpu, cuda, cuda:N, auto"
    with pytest.raises(OptionError) as info:
        resolve_device("cuda:1")
    assert message(info) == (
        f"--device cuda:1: CUDA is not available to this torch ({torch.__version__}) "
        "(use --device cpu, or --device auto to take a GPU only when there is one)"
    )


# -- weights files that cannot be read ------------------------------------------------------------------


def test_a_pickled_object_in_a_weights_file_needs_trust(tmp_path):
    path = save(tmp_path, {"state_dict": state(), "opt": nn.ReLU()})
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path)
    assert message(info) == (
        f"weights file {path} holds Python objects beyond tensors (it needs torch.nn.modules.activation.ReLU), "
        "and unpickling them can run arbitrary code "
        "(rerun with --trust-checkpoint only if you trust where the file came from)"
    )
    assert read_checkpoint(path, trust_checkpoint=True).notes == ["used checkpoint key 'state_dict'"]


def test_garbage_bytes_are_no_checkpoint(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"garbage bytes here")
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path)
    # torch's weights-only message shrunk to its one informative line
    assert message(info) == (
        f"cannot read weights file {path}: UnpicklingError: Unsupported operand 103 (not a PyTorch checkpoint, or corrupted)"
    )


def test_a_trusted_pickle_naming_a_missing_class(tmp_path):
    path = tmp_path / "gone.pt"
    # a pickle that names a module no one can import
    path.write_bytes(b"\x80\x02cno_such_module_values\nThing\nq\x00)\x81q\x01.")
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path, trust_checkpoint=True)
    assert message(info) == (
        f"cannot unpickle weights file {path}: ModuleNotFoundError: No module named 'no_such_module_values' "
        "(run from the project folder so the classes it names can be imported)"
    )


def test_a_damaged_weights_archive_is_refused_before_it_is_read(tmp_path):
    path = save(tmp_path, {"w": torch.arange(64.0)})
    data = bytearray(path.read_bytes())
    index = data.find(torch.arange(64.0).numpy().tobytes()[:8])
    data[index] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path)
    assert message(info).startswith(f"weights file {path} is corrupted: ")
    assert message(info).endswith("(the file changed after it was written; copy or download it again)")


def test_a_torchscript_archive_gives_its_weights(tmp_path):
    path = tmp_path / "deployed.pt"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in torch 2.9+
        torch.jit.save(torch.jit.script(linear(1.5)), str(path))
    checkpoint = read_checkpoint(path)
    assert checkpoint.notes == ["took the weights of TorchScript archive deployed.pt"]
    assert checkpoint.state_dict["weight"].item() == 1.5


def test_a_damaged_safetensors_file_names_itself(tmp_path):
    pytest.importorskip("safetensors")
    path = tmp_path / "w.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)  # 16 bytes declared, 4 held
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path)
    assert message(info).startswith(f"cannot read safetensors file {path}: ")


def test_safetensors_without_the_package_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    path = safetensors_file(tmp_path, {"w": [1.0]}, name="w.safetensors")
    real_import = builtins.__import__

    def no_safetensors(name, *args, **kwargs):
        if name == "safetensors":
            raise ImportError("no safetensors here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_safetensors)
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path)
    assert message(info) == f'reading {path} needs the safetensors package (pip install "cnnreport[safetensors]")'


def test_the_smallest_safetensors_header_is_read_as_one(tmp_path):
    pytest.importorskip("safetensors")
    path = tmp_path / "w.bin"
    path.write_bytes(struct.pack("<Q", 2) + b"{}")  # no tensors: read, then no state dict in it
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path)
    assert message(info) == (
        f"no state dict found in weights file {path} (top-level keys: none) "
        "(choose the entry with --weights-key NAME (a dotted path like ema.module works))"
    )


@pytest.mark.parametrize(
    "head",
    [
        struct.pack("<Q", 1) + b"{}",  # a header of 1 byte is too short to be JSON
        struct.pack("<Q", 3) + b"{}",  # longer than the file
        struct.pack("<Q", 2) + b"[]",  # not an object
        struct.pack("<Q", 2) + b"{",  # too short to tell
    ],
)
def test_what_does_not_look_like_safetensors_is_read_by_torch(tmp_path, head):
    path = tmp_path / "w.bin"
    path.write_bytes(head)
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path)
    assert message(info).startswith(f"cannot read weights file {path}: ")
