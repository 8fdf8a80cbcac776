"""MODEL specs pinned message by message: the forms understood, the files and modules that do
not import, names that are not there, constructors and their arguments, and saved model
files (TorchScript, pickles, state dicts given as a model).

Model files are written in the test; every expected message is spelled out here.
"""

from __future__ import annotations

import hashlib
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnreport.errors import ModelSpecError, OptionError
from cnnreport.io.loading import is_torchscript_archive, load_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

SOURCE = textwrap.dedent(
    """
    from os.path import join  # imported functions are not the file's own
    from torch import nn
    from torch.nn import Conv2d


    class Net(nn.Module):
        def __init__(self, width: int = 2, depth: int = 1):
            super().__init__()
            self.conv = Conv2d(1, width, 1)


    class Needs(nn.Module):
        def __init__(self, classes, depth, *, scale=1.0):
            super().__init__()
            self.fc = nn.Linear(1, classes)


    class Open(nn.Module):
        def __init__(self, **kwargs):
            super().__init__()
            self.seen = kwargs


    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()


    class _Hidden(nn.Module):
        pass


    def factory(width=3):
        return Net(width=width)


    def picky(width):
        if width < 0:
            raise TypeError("width must be positive")
        return Net(width=width)


    def broken():
        raise ValueError("factory exploded\\nsecond line")


    def number():
        return 42


    net = Net()
    CONSTANT = 3
    """
)


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "specmodel.py"
    path.write_text(SOURCE)
    return path


def spec_error(spec: str, **kwargs) -> str:
    with pytest.raises(ModelSpecError) as info:
        load_model(spec, **kwargs)
    return info.value.one_line()


def option_error(spec: str, **kwargs) -> str:
    with pytest.raises(OptionError) as info:
        load_model(spec, **kwargs)
    return info.value.one_line()


FORMS = "(give path/to/file.py:Name or package.module:Name)"


# -- forms ------------------------------------------------------------------------------------


def test_an_empty_spec_and_a_folder(tmp_path):
    assert spec_error("  ") == f"MODEL is empty {FORMS}"
    assert spec_error(str(tmp_path)) == f"MODEL {tmp_path} is a folder {FORMS}"


def test_a_spec_with_nothing_on_one_side_of_the_colon(spec_file):
    assert spec_error(f"{spec_file}:") == (
        f"MODEL '{spec_file}:' is not path/to/file.py:Name, package.module:Name or a TorchScript file"
    )
    assert spec_error(":Net") == "MODEL ':Net' is not path/to/file.py:Name, package.module:Name or a TorchScript file"


def test_a_bare_word_is_no_spec():
    assert spec_error("Net") == "MODEL 'Net' is not path/to/file.py:Name, package.module:Name or a TorchScript file"


def test_a_python_file_without_a_name(spec_file, tmp_path):
    assert spec_error(str(spec_file)) == (
        f"MODEL '{spec_file}' names a file but no class or factory in it (write it as {spec_file}:Name)"
    )
    assert spec_error(str(tmp_path / "gone.py")) == f"model file not found: {tmp_path / 'gone.py'}"


@pytest.mark.parametrize("name", ["sub/net", "net.pt", "net.pth", "net.ts", "net.jit"])
def test_paths_and_saved_model_suffixes_that_do_not_exist(name):
    assert spec_error(name) == f"model file not found: {name}"


def test_a_file_spec_that_is_missing_or_no_python(tmp_path):
    assert spec_error(f"{tmp_path / 'gone.py'}:Net") == f"model file not found: {tmp_path / 'gone.py'}"
    text = tmp_path / "notes.txt"
    text.write_text("x")
    assert spec_error(f"{text}:Net") == f"model file {text} is not a .py file (give path/to/file.py:Name)"
    assert spec_error(f"{tmp_path}/none:Net") == f"model file not found: {tmp_path}/none"


def test_spaces_around_the_spec_and_its_parts_are_ignored(spec_file):
    loaded = load_model(f"  {spec_file} : Net ")
    assert type(loaded.model).__name__ == "Net"
    assert loaded.spec == f"{spec_file} : Net"


def test_a_dotted_module_name_without_a_colon(tmp_path, monkeypatch):
    package = tmp_path / "pkg_spec_values"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        model = load_model("pkg_spec_values.nets.factory").model
    finally:
        for name in [n for n in sys.modules if n.startswith("pkg_spec_values")]:
            del sys.modules[name]
    assert model.conv.out_channels == 3
    assert str(tmp_path) not in sys.path


# -- imports that fail --------------------------------------------------------------------------


def test_a_module_that_is_not_installed():
    assert spec_error("no_such_pkg_values.models:Net") == (
        "cannot import module 'no_such_pkg_values.models': ModuleNotFoundError: No module named "
        "'no_such_pkg_values' (is it installed, or run from the folder that contains it? "
        "a file can be given as path/to/file.py:Name)"
    )


def test_a_module_that_imports_something_missing(tmp_path, monkeypatch):
    (tmp_path / "mod_missing_dep_values.py").write_text("import dep_not_there_values\n")
    monkeypatch.chdir(tmp_path)
    try:
        message = spec_error("mod_missing_dep_values:Net")
    finally:
        sys.modules.pop("mod_missing_dep_values", None)
    assert message == (
        "module 'mod_missing_dep_values' does not import: ModuleNotFoundError: No module named "
        "'dep_not_there_values' (mod_missing_dep_values.py, line 1)"
    )


def test_a_file_that_exits_while_importing(tmp_path):
    path = tmp_path / "exits.py"
    path.write_text("import sys\nsys.exit(3)\n")
    assert spec_error(f"{path}:Net") == f"model file {path} called sys.exit(3) while importing"


def test_a_file_with_a_syntax_error(tmp_path):
    path = tmp_path / "broken_syntax.py"
    path.write_text("x = 1\ndef f(:\n")
    assert spec_error(f"{path}:Net") == (
        f"model file {path} does not import: SyntaxError: invalid syntax ({path}, line 2)"
    )


def test_a_file_that_raises_names_the_line(tmp_path):
    path = tmp_path / "raises.py"
    path.write_text("x = 1\n\nraise KeyError('cfg')\n")
    assert spec_error(f"{path}:Net") == f"model file {path} does not import: KeyError: 'cfg' (raises.py, line 3)"


def test_a_file_whose_error_has_no_text(tmp_path):
    path = tmp_path / "silent.py"
    path.write_text("raise RuntimeError()\n")
    assert spec_error(f"{path}:Net") == f"model file {path} does not import: RuntimeError (silent.py, line 1)"


def test_the_files_folder_is_on_sys_path_only_while_it_imports(tmp_path):
    folder = tmp_path / "proj_values"
    folder.mkdir()
    (folder / "sibling_values_xyz.py").write_text("WIDTH = 4\n")
    (folder / "net.py").write_text(
        "import sys\nfrom torch import nn\nfrom sibling_values_xyz import WIDTH\nSEEN = list(sys.path)\n"
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, WIDTH, 1)\n"
    )
    before = list(sys.path)
    try:
        model = load_model(f"{folder / 'net.py'}:Net").model
    finally:
        sys.modules.pop("sibling_values_xyz", None)
    assert model.conv.out_channels == 4
    assert sys.modules[type(model).__module__].SEEN[0] == str(folder)
    assert sys.path == before


def test_a_file_module_is_named_after_its_stem_and_path(spec_file):
    model = load_model(f"{spec_file}:Net").model
    digest = hashlib.sha1(str(spec_file.resolve()).encode()).hexdigest()[:10]
    assert type(model).__module__ == f"_cnnreport_model_specmodel_{digest}"
    assert sys.modules[type(model).__module__].CONSTANT == 3


# -- names ---------------------------------------------------------------------------------------


def test_a_missing_name_suggests_the_closest_and_lists_the_files_models(spec_file):
    assert spec_error(f"{spec_file}:Nett") == (
        f"{spec_file} has no 'Nett'; did you mean 'Net'? (models and factories there: Fixed, Needs, Net, Open, "
        "net, broken, factory, number, ...)"
    )


def test_a_missing_name_far_from_any_is_listed_without_a_guess(tmp_path):
    path = tmp_path / "few.py"
    path.write_text("from torch import nn\nclass A(nn.Module):\n    pass\ndef b():\n    pass\n")
    assert spec_error(f"{path}:Zzz") == f"{path} has no 'Zzz' (models and factories there: A, b)"


def test_a_file_without_models(tmp_path):
    path = tmp_path / "empty_models.py"
    path.write_text("X = 1\n")
    assert spec_error(f"{path}:Net") == f"{path} has no 'Net' (it defines no nn.Module subclass or function)"


def test_a_dotted_name_that_stops_halfway(spec_file):
    assert spec_error(f"{spec_file}:Net.missing").startswith(f"{spec_file} has no 'Net.missing'")


# -- building the model ----------------------------------------------------------------------------


def test_a_class_with_arguments_says_what_it_built(spec_file):
    loaded = load_model(f"{spec_file}:Net", model_args={"width": 5, "depth": 2})
    assert loaded.model.conv.out_channels == 5
    assert loaded.notes == [f"built {spec_file}:Net(width=5, depth=2)"]


def test_a_class_without_arguments_says_nothing(spec_file):
    loaded = load_model(f"{spec_file}:Net")
    assert loaded.notes == []
    assert (loaded.checkpoint_path, loaded.checkpoint_sha256, loaded.class_names) == ("", "", None)


def test_an_instance_is_used_as_it_is_but_takes_no_arguments(spec_file):
    loaded = load_model(f"{spec_file}:net")
    assert type(loaded.model).__name__ == "Net"
    assert option_error(f"{spec_file}:net", model_args={"width": 2, "a": 1}) == (
        f"--model-arg a, width cannot be used: {spec_file}:net is a model instance, not a class or factory"
    )


def test_a_value_that_is_not_callable(spec_file):
    assert spec_error(f"{spec_file}:CONSTANT") == (
        f"{spec_file}:CONSTANT is a value of type int, not an nn.Module class, factory or instance"
    )


def test_a_factory_that_returns_no_model(spec_file):
    assert spec_error(f"{spec_file}:number") == (
        f"{spec_file}:number returned a value of type int, not a torch.nn.Module "
        "(MODEL must name an nn.Module class or a factory that returns a model)"
    )


def test_a_factory_that_raises(spec_file):
    assert spec_error(f"{spec_file}:broken") == f"calling {spec_file}:broken raised ValueError: factory exploded"
    assert spec_error(f"{spec_file}:picky", model_args={"width": -1}) == (
        f"calling {spec_file}:picky failed: TypeError: width must be positive "
        "(pass constructor arguments with --model-arg NAME=VALUE)"
    )


def test_unknown_arguments_name_what_it_takes(spec_file):
    assert option_error(f"{spec_file}:Net", model_args={"widht": 1}) == (
        f"--model-arg widht: {spec_file}:Net does not take it (it takes: width, depth)"
    )
    assert option_error(f"{spec_file}:Net", model_args={"a": 1, "b": 2}) == (
        f"--model-arg a, b: {spec_file}:Net does not take them (it takes: width, depth)"
    )
    assert option_error(f"{spec_file}:Fixed", model_args={"a": 1}) == (
        f"--model-arg a: {spec_file}:Fixed does not take it (it takes: no arguments)"
    )


def test_a_constructor_that_takes_any_keyword(spec_file):
    assert load_model(f"{spec_file}:Open", model_args={"anything": 1}).model.seen == {"anything": 1}


def test_missing_arguments_are_named_with_the_option_to_give_them(spec_file):
    assert spec_error(f"{spec_file}:Needs", model_args={"depth": 1}) == (
        f"{spec_file}:Needs needs argument classes (give it with --model-arg classes=VALUE)"
    )
    assert spec_error(f"{spec_file}:Needs") == (
        f"{spec_file}:Needs needs arguments classes, depth "
        "(give them with --model-arg classes=VALUE --model-arg depth=VALUE)"
    )
    assert load_model(f"{spec_file}:Needs", model_args={"classes": 2, "depth": 1, "scale": 2.0}).model.fc.out_features == 2


def test_weights_key_without_weights(spec_file):
    assert option_error(f"{spec_file}:Net", weights_key="ema") == "--weights-key needs --weights"


def test_weights_are_loaded_and_noted(spec_file, tmp_path):
    source = load_model(f"{spec_file}:Net").model
    with torch.no_grad():
        source.conv.weight.fill_(0.25)
    path = tmp_path / "w.pt"
    torch.save({"model": {f"module.{k}": v.half() for k, v in source.state_dict().items()}, "classes": ["a", "b"]}, path)
    loaded = load_model(f"{spec_file}:Net", weights=str(path), keep_stored_weights=True)
    assert loaded.notes == [
        "used checkpoint key 'model'",
        "stripped prefix 'module.' from 2 keys",
        "loaded 2 tensors into Net",
        "the checkpoint's dtype is not the model's: 2 float16 tensors copied exactly into the model's float32",
    ]
    assert loaded.checkpoint_path == str(path)
    assert loaded.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.class_names == ["a", "b"]
    assert set(loaded.stored_weights) == {"conv.weight", "conv.bias"}
    assert loaded.stored_weights["conv.weight"].dtype == torch.float16
    assert loaded.model.conv.weight.dtype == torch.float32
    assert load_model(f"{spec_file}:Net", weights=str(path)).stored_weights == {}


def test_a_model_without_tensors_moves_silently(spec_file):
    loaded = load_model(f"{spec_file}:Fixed", device="cpu")
    assert loaded.notes == []


# -- saved model files ------------------------------------------------------------------------------


def test_an_empty_model_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    assert spec_error(str(path)) == f"model file {path} is empty (0 bytes)"


def test_a_torchscript_archive_is_the_model(tmp_path):
    path = tmp_path / "deployed.pt"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Conv2d(1, 2, 1))), str(path))
    assert is_torchscript_archive(path) is True
    loaded = load_model(str(path))
    assert loaded.notes == ["loaded TorchScript archive deployed.pt"]
    assert loaded.checkpoint_path == str(path)
    assert loaded.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert option_error(str(path), model_args={"b": 1, "a": 2}) == (
        f"--model-arg a, b cannot be used with {path}: a saved model file is not constructed"
    )


def test_what_is_a_torchscript_archive(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(1)}, plain)
    assert is_torchscript_archive(plain) is False
    text = tmp_path / "text.pt"
    text.write_bytes(b"not a zip")
    assert is_torchscript_archive(text) is False
    assert is_torchscript_archive(tmp_path / "missing.pt") is False
    code_only = tmp_path / "code.zip"
    with zipfile.ZipFile(code_only, "w") as archive:
        archive.writestr("model/code/__torch__.py", "")
    assert is_torchscript_archive(code_only) is True
    constants = tmp_path / "constants.zip"
    with zipfile.ZipFile(constants, "w") as archive:
        archive.writestr("model/constants.pkl", "")
    assert is_torchscript_archive(constants) is True
    top_level = tmp_path / "top.zip"
    with zipfile.ZipFile(top_level, "w") as archive:
        archive.writestr("constants.pkl", "")
        archive.writestr("a/b/code", "")
    assert is_torchscript_archive(top_level) is False


def test_a_damaged_archive_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "flipped.pt"
    torch.save({"w": torch.arange(64.0)}, path)
    data = bytearray(path.read_bytes())
    index = data.find(struct_bytes := torch.arange(64.0).numpy().tobytes()[:8])
    assert index > 0, struct_bytes
    data[index] ^= 0xFF
    path.write_bytes(bytes(data))
    message = spec_error(str(path))
    assert message.startswith(f"model file {path} is corrupted: ")
    assert message.endswith("(the file changed after it was written; copy or download it again)")


def test_a_state_dict_given_as_the_model(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, path)
    assert spec_error(str(path)) == (
        f"{path} holds weights (a state dict), not a model "
        "(give the model as path/to/file.py:Name and this file as --weights)"
    )
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    assert spec_error(str(listed)) == (
        f"{listed} holds a value of type list, not a model "
        "(give the model as path/to/file.py:Name and this file as --weights)"
    )
    assert spec_error(str(listed), trust_checkpoint=True) == (
        f"{listed} holds a value of type list, not a model "
        "(give the model as path/to/file.py:Name and this file as --weights)"
    )


def test_a_pickled_model_needs_trust_and_then_says_what_it_unpickled(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.ReLU()), path)
    assert spec_error(str(path)) == (
        f"{path} is a pickled Python object, not a TorchScript archive; unpickling it can run arbitrary code "
        "(it needs torch.nn.modules.container.Sequential) (rerun with --trust-checkpoint only if you trust where "
        "the file came from, or give the model class as path/to/file.py:Name with --weights)"
    )
    loaded = load_model(str(path), trust_checkpoint=True)
    assert loaded.notes == ["unpickled a whole Sequential from whole.pt (--trust-checkpoint)"]


def test_bytes_that_are_no_model_file(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"\x80\x02garbage that is no pickle")
    message = spec_error(str(path))
    assert message.startswith(f"cannot read model file {path}: ")
    assert message.endswith("(not a TorchScript archive or PyTorch file, or corrupted)")
    trusted = spec_error(str(path), trust_checkpoint=True)
    assert trusted.startswith(f"cannot read model file {path}: ")
