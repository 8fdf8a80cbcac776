"""MODEL specs of the forms a path can take: a folder with ``:`` in its name, a file named
relative to the current folder without any ``/``, a file name with a ``-``, a folder whose
name is not UTF-8; import failures pointed at the right file and line; the note for a
``torch.compile``'d factory; bare ``--model-arg`` words; exactly eight names listed.

Every model file is written in the test; every expected message is spelled out here.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap

import pytest
import torch

from cnnreport.errors import ModelSpecError
from cnnreport.io.loading import load_model, parse_model_args

NET = textwrap.dedent(
    """
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 3)
    """
)


def write(path, text=NET):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_colon_in_a_folder_name_is_part_of_the_path(tmp_path):
    path = write(tmp_path / "run:2" / "net.py")
    model = load_model(f"{path}:Net").model
    assert type(model).__name__ == "Net"
    assert model.fc.weight.shape == (3, 2)


def test_a_py_file_in_the_current_folder_without_a_slash_is_a_file(tmp_path, monkeypatch):
    write(tmp_path / "relative_spec_net.py")
    monkeypatch.chdir(tmp_path)
    model = load_model("relative_spec_net.py:Net").model
    assert type(model).__name__ == "Net"
    assert "relative_spec_net" not in sys.modules  # imported as a file, not as a module


def test_a_file_name_with_a_dash_gives_a_module_name_of_word_characters(tmp_path):
    path = write(tmp_path / "my-net.v2.py")
    first = type(load_model(f"{path}:Net").model).__module__
    again = type(load_model(f"{path}:Net").model).__module__
    assert re.fullmatch(r"_cnnreport_model_my_net_v2_[0-9a-f]{10}", first), first
    assert again == first  # the same file gives the same name


def test_a_folder_name_that_is_not_utf8_still_imports(tmp_path):
    folder = os.fsencode(tmp_path) + b"/caf\xe9"  # Latin-1 e-acute: no UTF-8 decoding
    try:
        os.mkdir(folder)
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    path = os.fsdecode(folder) + "/net.py"
    assert "\udce9" in path  # Python holds the byte as a lone surrogate
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(NET)
    model = load_model(f"{path}:Net").model
    assert type(model).__name__ == "Net"
    assert re.fullmatch(r"_cnnreport_model_net_[0-9a-f]{10}", type(model).__module__)
    other = write(tmp_path / "plain" / "net.py")  # the same stem elsewhere: another module
    assert type(load_model(f"{other}:Net").model).__module__ != type(model).__module__


def test_a_syntax_error_in_a_relative_spec_names_the_full_path(tmp_path, monkeypatch):
    path = write(tmp_path / "sub" / "broken.py", "x = 1\ndef (:\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelSpecError) as info:
        load_model("sub/broken.py:Net")
    assert info.value.message == f"model file sub/broken.py does not import: SyntaxError: invalid syntax ({path}, line 2)"


def test_an_error_raised_two_calls_deep_points_at_the_deepest_line(tmp_path):
    source = textwrap.dedent(
        """\
        def check(width):
            raise ValueError(f"width {width} is odd")


        def build():
            check(3)


        build()
        """
    )
    path = write(tmp_path / "deep.py", source)
    with pytest.raises(ModelSpecError) as info:
        load_model(f"{path}:Net")
    assert info.value.message == f"model file {path} does not import: ValueError: width 3 is odd (deep.py, line 2)"


def test_eight_candidates_are_listed_without_an_ellipsis(tmp_path):
    classes = "".join(f"class {n}(nn.Module):\n    pass\n\n\n" for n in "ABCDEFGH")
    path = write(tmp_path / "eight.py", "from torch import nn\n\n\n" + classes)
    with pytest.raises(ModelSpecError) as info:
        load_model(f"{path}:Zzz")
    assert info.value.message == f"{path} has no 'Zzz' (models and factories there: A, B, C, D, E, F, G, H)"


def test_a_bare_word_starting_with_x_is_a_string():
    assert parse_model_args(["act=Xavier", "mode=XX", "init=x"]) == {"act": "Xavier", "mode": "XX", "init": "x"}


COMPILED = NET + textwrap.dedent(
    """

    def compiled():
        import torch
        return torch.compile(Net(), backend="eager")
    """
)


def test_a_compiled_factory_gives_the_module_inside_and_says_so(tmp_path):
    path = write(tmp_path / "compiled_net.py", COMPILED)
    loaded = load_model(f"{path}:compiled")
    assert type(loaded.model).__name__ == "Net"
    assert loaded.notes == [
        (
            "torch.compile'd model: the report shows the module inside the compiled wrapper "
            "(its _orig_mod, the same tensors), run eagerly; dynamo cannot trace the report's hooks. "
            "Checkpoint keys with or without the _orig_mod. prefix load and verify alike."
        )
    ]
    assert isinstance(loaded.model.fc, torch.nn.Linear)
