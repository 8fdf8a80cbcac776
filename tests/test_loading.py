"""Model specs, checkpoints and their errors (cnnreport.loading)."""

from __future__ import annotations

import argparse
import hashlib
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnreport.errors import CnnReportError, ModelSpecError, OptionError, WeightsError
from cnnreport.io.loading import (
    LoadedModel,
    apply_state_dict,
    is_torchscript_archive,
    load_model,
    load_weights,
    parse_model_args,
    read_checkpoint,
    resolve_device,
)
from cnnreport.support.hashing import file_sha256

# Building TorchScript fixtures warns on torch >= 2.9; loading them is what is tested.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

MODEL_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn
    from torch.nn import Conv2d  # torch's own classes must not be offered as candidates


    class Tiny(nn.Module):
        def __init__(self, width: int = 4, classes: int = 3):
            super().__init__()
            self.conv = Conv2d(3, width, 3, padding=1)
            self.bn = nn.BatchNorm2d(width)
            self.fc = nn.Linear(width, classes)

        def forward(self, x):
            x = torch.relu(self.bn(self.conv(x)))
            return self.fc(x.mean((2, 3)))


    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(7, 2)

        def forward(self, x):
            return self.lin(x)


    class NeedsArgs(nn.Module):
        def __init__(self, num_classes, depth, width=4):
            super().__init__()
            self.fc = nn.Linear(width, num_classes)


    class Wrapper(nn.Module):
        # its own keys start with "model." - that prefix must NOT be stripped
        def __init__(self):
            super().__init__()
            self.model = Tiny()

        def forward(self, x):
            return self.model(x)


    class Holder:
        class Inner(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(2, 2)


    def build(width=4):
        return Tiny(width=width)


    def not_a_model():
        return 42


    def broken():
        raise ValueError("factory exploded")


    instance = Tiny()
    NUMBER = 3
    """
)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "mymodel.py"
    path.write_text(MODEL_SOURCE)
    return path


def tiny_module(model_file: Path, **kwargs) -> nn.Module:
    return load_model(f"{model_file}:Tiny", model_args=kwargs).model


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key].float().cpu(), sb[key].float().cpu()), key


def one_line(exc: CnnReportError) -> str:
    text = exc.one_line()
    assert "\n" not in text
    return text


# ------------------------------------------------------------------------------------------
# options


def test_parse_model_args_literals_and_bare_words():
    args = parse_model_args(
        ["depth=3", "name='x'", "act=relu", "sizes=[1, 2]", "flag=True", "p=0.5", "none=None",
         "pair=(1,'a')", " spaced = 7 "]
    )
    assert args == {
        "depth": 3, "name": "x", "act": "relu", "sizes": [1, 2], "flag": True, "p": 0.5,
        "none": None, "pair": (1, "a"), "spaced": 7,
    }
    assert parse_model_args([]) == {}


@pytest.mark.parametrize(
    "pair, fragment",
    [
        ("depth", "'depth' is not NAME=VALUE"),
        ("2x=3", "'2x' is not a valid argument name"),
        ("sizes=[1, 2", "not a valid Python literal"),
        ("=3", "is not a valid argument name"),
    ],
)
def test_parse_model_args_errors_name_the_pair(pair, fragment):
    with pytest.raises(OptionError) as info:
        parse_model_args([pair])
    assert fragment in one_line(info.value)
    assert "--model-arg" in str(info.value)


def test_parse_model_args_rejects_duplicates():
    with pytest.raises(OptionError, match="depth is given twice"):
        parse_model_args(["depth=1", "depth=2"])


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(OptionError, match="'tpu' is not one of cpu, cuda, cuda:N, auto"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_resolve_device_cuda_missing_says_what_to_use():
    with pytest.raises(OptionError) as info:
        resolve_device("cuda")
    assert "CUDA is not available" in one_line(info.value)
    assert "--device cpu" in one_line(info.value)


def test_file_sha256(tmp_path):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000  # > 1 MiB block boundary
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------
# model specs


def test_file_spec_class_with_model_args(model_file):
    loaded = load_model(f"{model_file}:Tiny", model_args={"width": 6, "classes": 5})
    assert isinstance(loaded, LoadedModel)
    assert type(loaded.model).__name__ == "Tiny"
    assert loaded.model.conv.out_channels == 6
    assert loaded.model.fc.out_features == 5
    assert loaded.spec == f"{model_file}:Tiny"
    assert loaded.checkpoint_path == "" and loaded.checkpoint_sha256 == ""
    assert loaded.class_names is None
    assert any("width=6" in note for note in loaded.notes)
    out = loaded.model(torch.zeros(2, 3, 8, 8))
    assert out.shape == (2, 5)


def test_file_spec_factory_instance_and_dotted_name(model_file):
    assert load_model(f"{model_file}:build", model_args={"width": 2}).model.conv.out_channels == 2
    assert type(load_model(f"{model_file}:instance").model).__name__ == "Tiny"
    assert type(load_model(f"{model_file}:Holder.Inner").model).__name__ == "Inner"


def test_file_spec_sibling_import_and_sys_path_restored(tmp_path):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "helpers_sibling_xyz.py").write_text("WIDTH = 5\n")
    (folder / "net.py").write_text(
        "from torch import nn\nfrom helpers_sibling_xyz import WIDTH\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, WIDTH, 3)\n"
    )
    before = list(sys.path)
    try:
        model = load_model(f"{folder / 'net.py'}:Net").model
    finally:
        sys.modules.pop("helpers_sibling_xyz", None)
    assert model.conv.out_channels == 5
    assert sys.path == before


def test_two_files_with_the_same_name_do_not_collide(tmp_path):
    for width in (2, 3):
        folder = tmp_path / f"v{width}"
        folder.mkdir()
        (folder / "model.py").write_text(
            "from torch import nn\nclass Net(nn.Module):\n"
            "    def __init__(self):\n        super().__init__()\n"
            f"        self.conv = nn.Conv2d(1, {width}, 3)\n"
        )
    a = load_model(f"{tmp_path / 'v2' / 'model.py'}:Net").model
    b = load_model(f"{tmp_path / 'v3' / 'model.py'}:Net").model
    assert (a.conv.out_channels, b.conv.out_channels) == (2, 3)
    assert type(a).__module__ != type(b).__module__


def test_package_module_spec_from_current_folder(tmp_path, monkeypatch):
    package = tmp_path / "pkg_cnnreport_loadtest"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(MODEL_SOURCE)
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    try:
        loaded = load_model("pkg_cnnreport_loadtest.nets:Tiny", model_args={"width": 3})
        dotted = load_model("pkg_cnnreport_loadtest.nets.build")  # dot instead of colon
    finally:
        for name in [n for n in sys.modules if n.startswith("pkg_cnnreport_loadtest")]:
            del sys.modules[name]
    assert loaded.model.conv.out_channels == 3
    assert dotted.model.conv.out_channels == 4
    assert sys.path == before


# ------------------------------------------------------------------------------------------
# model spec errors


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelSpecError, match="model file not found: .*nope.py"):
        load_model(f"{tmp_path / 'nope.py'}:Net")
    with pytest.raises(ModelSpecError, match="model file not found: .*gone.pt"):
        load_model(str(tmp_path / "gone.pt"))


def test_folder_as_model_is_named(tmp_path):
    with pytest.raises(ModelSpecError, match="is a folder"):
        load_model(str(tmp_path))


def test_file_without_name_suggests_the_form(model_file):
    with pytest.raises(ModelSpecError) as info:
        load_model(str(model_file))
    assert f"write it as {model_file}:Name" in one_line(info.value)


def test_syntax_error_shows_file_and_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n\ndef oops(:\n    pass\n")
    with pytest.raises(ModelSpecError) as info:
        load_model(f"{bad}:Net")
    text = one_line(info.value)
    assert "does not import: SyntaxError" in text
    assert "line 3" in text and "bad.py" in text
    assert not [m for m in sys.modules if m.startswith("_cnnreport_model_bad_")]


def test_import_error_inside_model_file_is_shown(tmp_path):
    bad = tmp_path / "needs_dep.py"
    bad.write_text("import torch\nimport not_a_real_module_xyz\n")
    with pytest.raises(ModelSpecError) as info:
        load_model(f"{bad}:Net")
    text = one_line(info.value)
    assert "ModuleNotFoundError: No module named 'not_a_real_module_xyz'" in text
    assert "needs_dep.py, line 2" in text


def test_runtime_error_at_import_time_is_shown(tmp_path):
    bad = tmp_path / "boom.py"
    bad.write_text("x = 1\nraise RuntimeError('config missing')\n")
    with pytest.raises(ModelSpecError, match=r"RuntimeError: config missing \(boom.py, line 2\)"):
        load_model(f"{bad}:Net")


def test_module_that_does_not_import():
    with pytest.raises(ModelSpecError) as info:
        load_model("no_such_package_xyz.models:Net")
    text = one_line(info.value)
    assert "cannot import module 'no_such_package_xyz.models'" in text
    assert "No module named 'no_such_package_xyz'" in text


def test_name_not_found_lists_candidates(model_file):
    with pytest.raises(ModelSpecError) as info:
        load_model(f"{model_file}:Tinny")
    text = one_line(info.value)
    assert "has no 'Tinny'" in text
    assert "did you mean 'Tiny'?" in text
    for name in ("Tiny", "NeedsArgs", "build"):
        assert name in text
    assert "Conv2d" not in text  # imported from torch, not the user's


def test_class_needing_arguments_names_them(model_file):
    with pytest.raises(ModelSpecError) as info:
        load_model(f"{model_file}:NeedsArgs", model_args={"depth": 2})
    text = one_line(info.value)
    assert "needs argument num_classes" in text
    assert "--model-arg num_classes=VALUE" in text
    with pytest.raises(ModelSpecError, match="needs arguments num_classes, depth"):
        load_model(f"{model_file}:NeedsArgs")


def test_unknown_model_arg_is_an_option_error(model_file):
    with pytest.raises(OptionError) as info:
        load_model(f"{model_file}:Tiny", model_args={"widht": 3})
    assert "--model-arg widht" in one_line(info.value)
    assert "width, classes" in one_line(info.value)


@pytest.mark.parametrize(
    "name, error, fragment",
    [
        ("not_a_model", ModelSpecError, "returned a value of type int, not a torch.nn.Module"),
        ("NUMBER", ModelSpecError, "is a value of type int, not an nn.Module class"),
        ("broken", ModelSpecError, "raised ValueError: factory exploded"),
    ],
)
def test_bad_targets(model_file, name, error, fragment):
    with pytest.raises(error, match=fragment):
        load_model(f"{model_file}:{name}")


def test_model_args_with_an_instance_are_rejected(model_file):
    with pytest.raises(OptionError, match="is a model instance"):
        load_model(f"{model_file}:instance", model_args={"width": 2})


# ------------------------------------------------------------------------------------------
# saved models: TorchScript and pickles


def test_torchscript_archive_as_model(model_file, tmp_path):
    source = tiny_module(model_file).eval()
    path = tmp_path / "deployed.ts"
    torch.jit.save(torch.jit.script(source), str(path))
    assert is_torchscript_archive(path)
    loaded = load_model(str(path))
    assert isinstance(loaded.model, torch.jit.ScriptModule)
    assert loaded.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.checkpoint_path == str(path)
    assert any("TorchScript" in note for note in loaded.notes)
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(loaded.model(x), source(x))
    with pytest.raises(OptionError, match="--model-arg width"):
        load_model(str(path), model_args={"width": 2})


def test_plain_torch_save_is_not_torchscript(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    assert not is_torchscript_archive(path)


def test_pickled_model_needs_trust(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    with pytest.raises(ModelSpecError) as info:
        load_model(str(path))
    text = one_line(info.value)
    assert "arbitrary code" in text and "--trust-checkpoint" in text
    assert "torch.nn.modules.container.Sequential" in text
    loaded = load_model(str(path), trust_checkpoint=True)
    assert_same_weights(loaded.model, model)
    assert loaded.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_state_dict_given_as_model_says_use_weights(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(ModelSpecError) as info:
        load_model(str(path))
    text = one_line(info.value)
    assert "holds weights" in text and "--weights" in text


# ------------------------------------------------------------------------------------------
# weights


def test_plain_state_dict(model_file, tmp_path):
    source = tiny_module(model_file)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    loaded = load_model(f"{model_file}:Tiny", weights=str(path))
    assert_same_weights(loaded.model, source)
    assert loaded.checkpoint_path == str(path)
    assert loaded.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "loaded 9 tensors into Tiny" in loaded.notes


@pytest.mark.parametrize(
    "key", ["state_dict", "model_state_dict", "model", "net", "ema", "ema_state_dict", "params", "weights"]
)
def test_nested_checkpoint_keys_are_detected(model_file, tmp_path, key):
    source = tiny_module(model_file)
    path = tmp_path / "ckpt.pth"
    torch.save({key: source.state_dict(), "epoch": 12, "optimizer": {"lr": 0.1}}, path)
    target = tiny_module(model_file)
    notes = load_weights(target, str(path))
    assert_same_weights(target, source)
    assert f"used checkpoint key {key!r}" in notes


def test_weights_key_chooses_and_takes_dotted_paths(model_file, tmp_path):
    plain, ema = tiny_module(model_file), tiny_module(model_file)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": plain.state_dict(), "ema": {"module": ema.state_dict()}}, path)

    target = tiny_module(model_file)
    notes = load_weights(target, str(path))
    assert_same_weights(target, plain)
    assert any("also found 'ema.module'" in n and "--weights-key" in n for n in notes)

    notes = load_weights(target, str(path), key="ema.module")
    assert_same_weights(target, ema)
    assert "used checkpoint key 'ema.module'" in notes

    with pytest.raises(WeightsError) as info:
        load_weights(target, str(path), key="ema.shadow")
    text = one_line(info.value)
    assert "no 'shadow' at ema" in text and "keys there: module" in text
    with pytest.raises(WeightsError, match="not a state dict of tensors"):
        load_weights(target, str(path), key="ema")


def test_no_state_dict_in_checkpoint_lists_keys(model_file, tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(WeightsError) as info:
        load_weights(tiny_module(model_file), str(path))
    text = one_line(info.value)
    assert "no state dict found" in text and "epoch, lr" in text and "--weights-key" in text


@pytest.mark.parametrize(
    "prefix, notes",
    [
        ("module.", ["stripped prefix 'module.' from 9 keys"]),
        ("_orig_mod.", ["stripped prefix '_orig_mod.' from 9 keys"]),
        ("model.", ["stripped prefix 'model.' from 9 keys"]),
        ("module.module.", ["stripped prefix 'module.' from 9 keys"] * 2),
        ("_orig_mod.module.", ["stripped prefix '_orig_mod.' from 9 keys",
                               "stripped prefix 'module.' from 9 keys"]),
        ("net.", ["stripped prefix 'net.' from 9 keys"]),  # a Lightning module's attribute
    ],
)
def test_wrapper_prefixes_are_stripped(model_file, tmp_path, prefix, notes):
    source = tiny_module(model_file)
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {prefix + k: v for k, v in source.state_dict().items()}}, path)
    target = tiny_module(model_file)
    got = load_weights(target, str(path))
    assert_same_weights(target, source)
    assert [n for n in got if n.startswith("stripped")] == notes


def test_data_parallel_state_dict_with_metadata(model_file, tmp_path):
    source = tiny_module(model_file)
    path = tmp_path / "dp.pt"
    torch.save(nn.DataParallel(source).state_dict(), path)
    target = tiny_module(model_file)
    notes = load_weights(target, str(path))
    assert_same_weights(target, source)
    assert "stripped prefix 'module.' from 9 keys" in notes


def test_prefix_that_belongs_to_the_model_is_kept(model_file, tmp_path):
    source = load_model(f"{model_file}:Wrapper").model
    path = tmp_path / "wrapper.pt"
    torch.save(source.state_dict(), path)
    target = load_model(f"{model_file}:Wrapper").model
    notes = load_weights(target, str(path))
    assert_same_weights(target, source)
    assert not [n for n in notes if n.startswith("stripped")]


def test_other_architecture_is_one_line_listing_keys(model_file, tmp_path):
    path = tmp_path / "other.pt"
    torch.save(load_model(f"{model_file}:Other").model.state_dict(), path)
    with pytest.raises(WeightsError) as info:
        load_weights(tiny_module(model_file), str(path))
    text = one_line(info.value)
    assert "do not fit Tiny" in text
    assert "none of its 2 keys match the model's 9" in text
    assert "lin.weight" in text and "conv.weight" in text
    assert "another architecture" in text


def test_shape_mismatch_and_missing_keys_are_counted(model_file, tmp_path):
    path = tmp_path / "narrow.pt"
    state = tiny_module(model_file, width=2).state_dict()
    del state["fc.bias"]
    for i in range(6):
        state[f"extra.{i}.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        load_weights(tiny_module(model_file, width=4), str(path))
    text = one_line(info.value)
    assert "1 missing key (fc.bias)" in text
    assert "6 unexpected keys (extra.0.weight, extra.1.weight, extra.2.weight, extra.3.weight, ... 2 more)" in text
    assert "conv.weight: checkpoint (2, 3, 3, 3) vs model (4, 3, 3, 3)" in text
    assert "shape mismatches" in text


def test_class_names_from_checkpoint(model_file, tmp_path):
    state = tiny_module(model_file).state_dict()
    cases = {
        "class_names": ["cat", "dog", "eel"],
        "classes": ("cat", "dog", "eel"),
        "idx_to_class": {0: "cat", 1: "dog", 2: "eel"},
        "class_to_idx": {"dog": 1, "eel": 2, "cat": 0},
    }
    for key, value in cases.items():
        path = tmp_path / f"{key}.pt"
        torch.save({"model_state_dict": state, key: value}, path)
        loaded = load_model(f"{model_file}:Tiny", weights=str(path))
        assert loaded.class_names == ["cat", "dog", "eel"], key


def test_safetensors_weights_and_metadata(model_file, tmp_path):
    from safetensors.torch import save_file

    source = tiny_module(model_file)
    path = tmp_path / "w.safetensors"
    save_file(
        {"module." + k: v.contiguous() for k, v in source.state_dict().items()},
        str(path),
        metadata={"class_names": '["a", "b", "c"]'},
    )
    loaded = load_model(f"{model_file}:Tiny", weights=str(path))
    assert_same_weights(loaded.model, source)
    assert loaded.class_names == ["a", "b", "c"]
    assert loaded.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "stripped prefix 'module.' from 9 keys" in loaded.notes


def test_safetensors_missing_package_says_how_to_install(model_file, tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    monkeypatch.setitem(sys.modules, "safetensors", None)  # makes the import fail
    with pytest.raises(WeightsError) as info:
        load_weights(tiny_module(model_file), str(path))
    assert 'pip install "cnnreport[safetensors]"' in one_line(info.value)


def test_pickled_checkpoint_is_refused_then_trusted(model_file, tmp_path):
    source = tiny_module(model_file)
    path = tmp_path / "with_args.pt"
    torch.save({"state_dict": source.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    target = tiny_module(model_file)
    with pytest.raises(WeightsError) as info:
        load_weights(target, str(path))
    text = one_line(info.value)
    assert "argparse.Namespace" in text
    assert "arbitrary code" in text and "--trust-checkpoint" in text
    load_weights(target, str(path), trust_checkpoint=True)
    assert_same_weights(target, source)


def test_whole_module_as_weights_when_trusted(tmp_path):
    source = nn.Sequential(nn.Conv2d(1, 2, 3))
    path = tmp_path / "whole.pt"
    torch.save(source, path)
    target = nn.Sequential(nn.Conv2d(1, 2, 3))
    with pytest.raises(WeightsError) as info:
        load_weights(target, str(path))
    assert "--trust-checkpoint" in one_line(info.value)
    notes = load_weights(target, str(path), trust_checkpoint=True)
    assert_same_weights(target, source)
    assert any("whole Sequential" in n for n in notes)


def test_torchscript_archive_as_weights(model_file, tmp_path):
    source = tiny_module(model_file)
    path = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.script(source), str(path))
    target = tiny_module(model_file)
    notes = load_weights(target, str(path))
    assert_same_weights(target, source)
    assert any("TorchScript" in n for n in notes)


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "weights file not found"),
        (b"", "is empty (0 bytes)"),
        (b"this is not a checkpoint at all", "cannot read weights file"),
        (b"not a tensor file", "UnpicklingError: Unsupported operand 110 (not a PyTorch checkpoint"),
        (b"PK\x03\x04garbage", "cannot read weights file"),
        ("folder", "is a folder, not a file"),
    ],
)
def test_unreadable_weights_files(model_file, tmp_path, content, fragment):
    path = tmp_path / "w.pt"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError) as info:
        load_model(f"{model_file}:Tiny", weights=str(path))
    text = one_line(info.value)
    assert fragment in text and str(path) in text


def test_weights_holding_a_list_are_rejected(model_file, tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WeightsError, match="holds a value of type list, not a state dict"):
        load_weights(tiny_module(model_file), str(path))


def test_old_checkpoint_without_num_batches_tracked(model_file, tmp_path):
    source = tiny_module(model_file)
    state = {k: v for k, v in source.state_dict().items() if "num_batches_tracked" not in k}
    path = tmp_path / "old.pt"
    torch.save(state, path)
    target = tiny_module(model_file)
    notes = load_weights(target, str(path))
    assert any("num_batches_tracked" in n for n in notes)
    assert torch.equal(target.conv.weight, source.conv.weight)


def test_half_precision_model_keeps_its_dtype(model_file, tmp_path):
    source = tiny_module(model_file)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    target = tiny_module(model_file).half()
    load_weights(target, str(path))
    assert target.conv.weight.dtype == torch.float16
    assert torch.allclose(target.conv.weight.float(), source.conv.weight, atol=1e-3)


def test_alternative_entry_is_used_when_the_first_does_not_fit(model_file, tmp_path):
    source = tiny_module(model_file)
    other = load_model(f"{model_file}:Other").model
    path = tmp_path / "two.pt"
    torch.save({"model": other.state_dict(), "ema": source.state_dict()}, path)
    target = tiny_module(model_file)
    notes = load_weights(target, str(path))
    assert_same_weights(target, source)
    assert any("used checkpoint key 'ema'" in n for n in notes)


def test_load_model_device_and_weights_key_needs_weights(model_file):
    loaded = load_model(f"{model_file}:Tiny", device="cpu")
    assert next(loaded.model.parameters()).device.type == "cpu"
    with pytest.raises(OptionError, match="--weights-key needs --weights"):
        load_model(f"{model_file}:Tiny", weights_key="ema")


def test_apply_state_dict_directly():
    model = nn.Linear(2, 2)
    state = OrderedDict((f"_orig_mod.{k}", torch.ones_like(v)) for k, v in model.state_dict().items())
    notes = apply_state_dict(model, state)
    assert torch.equal(model.weight, torch.ones(2, 2))
    assert notes[0] == "stripped prefix '_orig_mod.' from 2 keys"


def test_read_checkpoint_reports_sha_and_path(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"state_dict": nn.Linear(1, 1).state_dict(), "labels": ["x"]}, path)
    checkpoint = read_checkpoint(str(path))
    assert checkpoint.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert set(checkpoint.state_dict) == {"weight", "bias"}
    assert checkpoint.class_names == ["x"]


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_load_model_on_cuda_keeps_half_precision(model_file, tmp_path):
    source = tiny_module(model_file)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    loaded = load_model(f"{model_file}:Tiny", weights=str(path), device="cuda")
    assert next(loaded.model.parameters()).device.type == "cuda"
    assert "moved the model to cuda:0" in loaded.notes
    assert torch.equal(loaded.model.conv.weight.cpu(), source.conv.weight)
    half = tiny_module(model_file).half().cuda()
    load_weights(half, str(path))
    assert half.conv.weight.dtype == torch.float16 and half.conv.weight.is_cuda
    assert resolve_device("auto") == torch.device("cuda", 0)


@needs_cuda
def test_checkpoint_saved_on_gpu_loads_on_cpu(model_file, tmp_path):
    source = tiny_module(model_file).cuda()
    path = tmp_path / "gpu.pt"
    torch.save({"model_state_dict": source.state_dict()}, path)
    loaded = load_model(f"{model_file}:Tiny", weights=str(path), device="cpu")
    assert next(loaded.model.parameters()).device.type == "cpu"
    assert torch.equal(loaded.model.conv.weight, source.conv.weight.cpu())
    ts = tmp_path / "gpu.ts"
    torch.jit.save(torch.jit.script(source.eval()), str(ts))
    scripted = load_model(str(ts), device="cpu").model
    assert next(scripted.parameters()).device.type == "cpu"


def test_a_stale_key_beside_its_wrapped_twin_is_refused_not_loaded_over_it():
    """``0.weight`` (stale) beside ``module.0.weight`` (the wrapped, current one): stripping
    ``module.`` would give two tensors for ``0.weight``. Neither may silently win: the wrapped
    key is left as it is and the load fails naming it, and the model keeps its own weights."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1))
    with torch.no_grad():
        model[0].weight.fill_(7.0)
        model[0].bias.fill_(7.0)
    stale = torch.full((2, 1, 1, 1), 1.0)
    current = torch.full((2, 1, 1, 1), 2.0)
    bias = torch.tensor([3.0, -3.0])
    # Both orders: whichever of the two comes last must not be what gets loaded.
    for state in (
        OrderedDict([("0.weight", stale), ("module.0.weight", current), ("module.0.bias", bias)]),
        OrderedDict([("module.0.weight", current), ("0.weight", stale), ("module.0.bias", bias)]),
    ):
        with pytest.raises(WeightsError) as info:
            apply_state_dict(model, state)
        text = one_line(info.value)
        assert "1 unexpected key (module.0.weight)" in text and "missing" not in text, text
        assert torch.equal(model[0].weight, torch.full((2, 1, 1, 1), 7.0))
        assert torch.equal(model[0].bias, torch.full((2,), 7.0))
