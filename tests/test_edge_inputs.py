"""Inputs a second review found mishandled: odd class-name files, file names that are not
UTF-8, a stem defined after the head, module names that only differ in punctuation, one
Provenance reused for two models, and a 1-D model in `diff`."""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from cnnreport import build_report
from cnnreport.cli.main import main
from cnnreport.cli.values import names_from_json
from cnnreport.errors import OptionError

HEAD_FIRST = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Conv2d(16, 10, 1)  # defined first, runs last
            self.stem = nn.Conv2d(3, 16, 3, padding=1)

        def forward(self, x):
            return self.head(torch.relu(self.stem(x))).mean((2, 3))

    class Net1d(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv1d(4, 6, 3)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(self.c(x).mean(2))
    """
)


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture()
def ws(tmp_path):
    (tmp_path / "net.py").write_text(HEAD_FIRST)
    probes = tmp_path / "probes"
    probes.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(probes / f"p{i}.png")
    return tmp_path


def test_stem_defined_after_the_head_takes_rgb_images(ws):
    result = run(["generate", f"{ws}/net.py:Net", "--probes", f"{ws}/probes", "-o", f"{ws}/r.html", "-q"])
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize(
    "content, expected",
    [
        ('["cat", "dog"]', ["cat", "dog"]),
        ('{"0": "cat", "2": "bird"}', ["cat", "1", "bird"]),
        ('{"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"]}', ["tench", "goldfish"]),
        ('{"cat": 1, "dog": 0}', ["dog", "cat"]),
    ],
)
def test_class_name_maps_keep_their_indices(content, expected):
    # a map stays a map of what it names; the report gives one name per class of the model
    from cnnreport.capture.predictions import resolve_class_names

    assert resolve_class_names(names_from_json(json.loads(content)), len(expected))[0] == expected


@pytest.mark.parametrize("content", [b"{bad", b'{"0": "a", "x": "b"}', b"5", b"\xff\xfe\x00bad"])
def test_bad_class_name_files_are_one_line_errors(ws, content):
    (ws / "names.json").write_bytes(content)
    result = run(["generate", f"{ws}/net.py:Net", "--input-size", "3", "8", "8", "--class-names", f"{ws}/names.json", "-o", f"{ws}/r.html"])
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr and "--class-names" in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


@pytest.mark.skipif(os.name != "posix", reason="needs a file system that takes raw bytes in names")
def test_probe_file_name_that_is_not_utf8(ws):
    folder = os.path.join(os.fsencode(str(ws)), b"raw")
    os.mkdir(folder)
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(os.path.join(folder, b"caf\xe9.png").decode("utf-8", "surrogateescape"))
    result = run(["generate", f"{ws}/net.py:Net", "--probes", f"{ws}/raw", "-o", f"{ws}/r.html", "--json", f"{ws}/r.json", "-q"])
    assert result.exit_code == 0, result.stderr
    assert json.loads((ws / "r.json").read_text())["probes"][0]["name"] == "caf\ufffd.png"


def test_module_names_that_differ_only_in_punctuation_get_distinct_ids():
    model = nn.Sequential()
    for name in ("a b", "a/b", "a-b", "α", "β"):
        model.add_module(name, nn.Conv2d(3, 3, 1))
    report = build_report(model, torch.rand(1, 3, 4, 4), progress=False)
    ids = [s.id for s in report.sections]
    assert len(ids) == len(set(ids)) == 5
    html = report.to_html()
    for sid in ids:
        assert html.count(f'id="{sid}"') == 1


def test_one_provenance_passed_twice_keeps_each_models_fingerprint():
    from cnnreport.io.provenance import default_provenance, model_fingerprint

    given = default_provenance()
    a, b = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 2, 3)
    ra = build_report(a, torch.rand(1, 3, 6, 6), provenance=given, progress=False)
    rb = build_report(b, torch.rand(1, 3, 6, 6), provenance=given, progress=False)
    assert ra.provenance.model_fingerprint == model_fingerprint(a)
    assert rb.provenance.model_fingerprint == model_fingerprint(b)
    assert given.model_fingerprint == ""  # the caller's object is left alone


def test_diff_of_a_1d_model_reads_the_npy_as_a_batch(ws):
    import importlib.util

    spec = importlib.util.spec_from_file_location("edge_net", ws / "net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    torch.save(module.Net1d().state_dict(), ws / "a.pt")
    torch.save(module.Net1d().state_dict(), ws / "b.pt")
    np.save(ws / "sig.npy", np.random.default_rng(0).standard_normal((4, 4, 50)).astype(np.float32))
    result = run(["diff", "--model", f"{ws}/net.py:Net1d", "--old", f"{ws}/a.pt", "--new", f"{ws}/b.pt", "--probes", f"{ws}/sig.npy", "-o", f"{ws}/d.html", "--json", f"{ws}/d.json"])
    assert result.exit_code == 0, result.stderr
    assert len(json.loads((ws / "d.json").read_text())["predictions"]) == 4


def test_preprocessing_options_without_probes_are_refused(ws):
    result = run(["generate", f"{ws}/net.py:Net", "--input-size", "3", "8", "8", "--mean", "imagenet", "-o", f"{ws}/r.html"])
    assert result.exit_code == 2 and "--mean" in result.stderr


def test_option_error_is_the_class_names_error_type():
    with pytest.raises(OptionError):
        from cnnreport.cli.values import parse_class_names

        parse_class_names("not-a-file-and-no-commas")
