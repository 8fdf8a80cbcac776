"""Where a ``package.module:Name`` is looked for, and which line an import failure points at.

The current folder is put first on ``sys.path`` only while it is not searched already (as
itself or as ``""``); two folders holding a module of the same name tell which was imported.
An error raised inside Python's own frozen modules (``os.environ``) or inside ``importlib``
is pointed at the model file's line that called them, not at the library's.
"""

from __future__ import annotations

import os
import sys

import pytest

from cnnreport.errors import ModelSpecError
from cnnreport.io.loading import load_model


def module_file(folder, name, origin):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(
        "from torch import nn\n\n\n"
        "class Net(nn.Module):\n"
        f"    origin = {origin!r}\n",
        encoding="utf-8",
    )


@pytest.fixture
def two_folders(tmp_path, monkeypatch):
    """A module ``name`` in ``elsewhere/`` and another of the same name in ``here/``, the
    current folder; ``sys.path`` without the current folder; the module forgotten after."""
    name = f"shadowed_net_{os.getpid()}"
    elsewhere, here = tmp_path / "elsewhere", tmp_path / "here"
    module_file(elsewhere, name, "elsewhere")
    module_file(here, name, "here")
    monkeypatch.chdir(here)
    rest = [p for p in sys.path if p not in ("", os.getcwd(), str(elsewhere))]
    monkeypatch.setattr(sys, "path", rest)
    yield name, str(elsewhere), str(here)
    sys.modules.pop(name, None)


def test_the_current_folder_goes_before_everything_else_while_it_imports(two_folders):
    name, elsewhere, _ = two_folders
    sys.path.insert(0, elsewhere)
    before = list(sys.path)
    model = load_model(f"{name}:Net").model
    assert type(model).origin == "here"
    assert sys.path == before


def test_a_current_folder_already_on_the_path_keeps_its_place(two_folders):
    name, elsewhere, here = two_folders
    sys.path[:0] = [elsewhere]
    sys.path.append(here)
    before = list(sys.path)
    model = load_model(f"{name}:Net").model
    assert type(model).origin == "elsewhere"
    assert sys.path == before


def test_an_empty_entry_on_the_path_counts_as_the_current_folder(two_folders):
    name, elsewhere, _ = two_folders
    sys.path[:0] = [elsewhere]
    sys.path.append("")
    before = list(sys.path)
    model = load_model(f"{name}:Net").model
    assert type(model).origin == "elsewhere"
    assert sys.path == before


def test_an_error_inside_a_frozen_module_points_at_the_model_files_line(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNREPORT_NO_SUCH_VARIABLE", raising=False)
    path = tmp_path / "settings.py"
    path.write_text('import os\n\nWIDTH = int(os.environ["CNNREPORT_NO_SUCH_VARIABLE"])\n', encoding="utf-8")
    with pytest.raises(ModelSpecError) as info:
        load_model(f"{path}:Net")
    # the KeyError is raised in <frozen os>; the line to fix is the model file's third
    assert info.value.message == (
        f"model file {path} does not import: KeyError: 'CNNREPORT_NO_SUCH_VARIABLE' (settings.py, line 3)"
    )


def test_an_error_inside_the_import_machinery_points_at_the_model_files_line(tmp_path):
    path = tmp_path / "plugins.py"
    path.write_text('import importlib\n\nplugin = importlib.import_module("cnnreport_no_such_plugin")\n', encoding="utf-8")
    with pytest.raises(ModelSpecError) as info:
        load_model(f"{path}:Net")
    assert info.value.message == (
        f"model file {path} does not import: ModuleNotFoundError: No module named 'cnnreport_no_such_plugin' (plugins.py, line 3)"
    )


def test_a_model_file_in_a_folder_named_after_importlib_is_still_the_users_code(tmp_path):
    path = tmp_path / "importlib_experiments" / "net.py"
    path.parent.mkdir()
    path.write_text('WIDTH = 3\nraise ValueError("width must be even")\n', encoding="utf-8")
    with pytest.raises(ModelSpecError) as info:
        load_model(f"{path}:Net")
    assert info.value.message == f"model file {path} does not import: ValueError: width must be even (net.py, line 2)"


def test_a_syntax_error_the_model_file_raises_itself_has_no_line_to_name(tmp_path):
    path = tmp_path / "config_check.py"
    path.write_text('raise SyntaxError("the config block is not valid")\n', encoding="utf-8")
    with pytest.raises(ModelSpecError) as info:
        load_model(f"{path}:Net")
    assert info.value.message == f"model file {path} does not import: SyntaxError: the config block is not valid ({path})"


def test_a_failure_inside_importlib_alone_names_no_line_of_cnnreports_own():
    # a relative name cannot be imported without a package: importlib itself raises, and
    # no frame of the user's is involved, so no file and line are named
    with pytest.raises(ModelSpecError) as info:
        load_model(".json:Net")
    assert info.value.message == (
        "module '.json' does not import: TypeError: the 'package' argument is required to perform a relative import for '.json'"
    )
