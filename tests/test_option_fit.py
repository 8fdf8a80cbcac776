"""Options that cannot do what they say are refused or noted, naming the option (issue 21.3,
and the class-name part of 14.3): ``--cam-layer`` without a feature map, ``--mean``/``--std``
values that cannot normalise, class names that do not match the model's classes.

Exit codes and stderr are checked on the real command in a subprocess; the values the page and
the JSON show are checked against hand-worked expectations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnreport import build_report
from cnnreport.errors import OptionError
from cnnreport.io.probes import load_probes

# A classifier whose scores do not depend on the input: fc's weight is zero and its bias
# ranks the four classes 2 > 3 > 1 > 0, so every probe's top-1 class is 2, by construction.
MODEL_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 4)
            with torch.no_grad():
                self.fc.weight.zero_()
                self.fc.bias.copy_(torch.tensor([0.0, 1.0, 3.0, 2.0]))

        def forward(self, x):
            return self.fc(self.pool(torch.relu(self.conv1(x))).flatten(1))

    class Features(nn.Module):
        # No class scores: a feature extractor.
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x)
    """
)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fit")
    (root / "net.py").write_text(MODEL_SOURCE)
    probes = root / "probes"
    probes.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(probes / f"p{i}.png")
    return root


@dataclass
class Done:
    returncode: int
    stderr: str


def cli(*args: str, cwd: Path, subprocess_run: bool = False) -> Done:
    """The real command: in a subprocess where the process's own exit status is the point,
    else in-process through click's runner (same code path, a fraction of the start-up)."""
    if subprocess_run:
        done = subprocess.run([sys.executable, "-m", "cnnreport.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=dict(os.environ))
        return Done(done.returncode, done.stderr)
    from click.testing import CliRunner

    from cnnreport.cli.main import main

    here = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, list(args))
    finally:
        os.chdir(here)
    return Done(result.exit_code, result.stderr)


def stderr_lines(done: Done) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()]


def refused(ws: Path, args: list[str], command: str = "generate", subprocess_run: bool = False) -> str:
    """Run a command that must be refused: exit 2, one stderr line, the old report untouched."""
    out = ws / "existing.html"
    out.write_bytes(b"<html>an earlier report</html>")
    if command == "generate":
        full = ["generate", "net.py:Net", "--probes", "probes", "-o", str(out), *args]
    else:
        full = [command, *args, "-o", str(out)]
    done = cli(*full, cwd=ws, subprocess_run=subprocess_run)
    lines = stderr_lines(done)
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("cnnreport: error: "), done.stderr
    assert out.read_bytes() == b"<html>an earlier report</html>"
    return lines[0]


# -- --cam-layer -------------------------------------------------------------------------------


def test_cam_layer_on_a_linear_layer_is_refused_naming_it(ws):
    line = refused(ws, ["--cam-layer", "fc"], subprocess_run=True)
    assert "--cam-layer 'fc' (Linear) outputs 1×4: no spatial map" in line
    assert line.endswith("layers with one: conv1")


def test_cam_layer_on_a_pooled_map_is_refused(ws):
    line = refused(ws, ["--cam-layer", "pool"])
    assert "--cam-layer 'pool' (AdaptiveAvgPool2d) outputs 1×8×1×1" in line


def test_attribution_options_with_no_attributions_are_refused(ws):
    line = refused(ws, ["--cam-layer", "conv1", "--no-attributions"])
    assert "--cam-layer has no effect with --no-attributions" in line


def test_the_api_refuses_the_same_cam_layers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(OptionError, match=r"--cam-layer '4' \(Linear\) outputs 1×5"):
        build_report(model, x, cam_layer="4", progress=False)
    with pytest.raises(OptionError, match=r"--cam-layer '3' \(Flatten\) outputs 1×4"):
        build_report(model, x, cam_layer="3", progress=False)
    with pytest.raises(OptionError, match="--target-class has no effect with --no-attributions"):
        build_report(model, x, attributions=False, target_class=1, progress=False)
    # a layer with a map works: one Grad-CAM per probe, of that layer
    report = build_report(model, x, cam_layer="1", progress=False)
    assert [(a.method, a.layer) for a in report.attributions] == [("Grad-CAM", "1"), ("Grad-CAM", "1")]


def test_cam_layer_on_a_model_without_class_scores_is_noted():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    report = build_report(model, torch.rand(2, 3, 8, 8), cam_layer="0", progress=False)
    assert report.attributions == []
    assert (
        "No Grad-CAM: it explains a class score, and the model's output is not class scores "
        "(an (N, classes) tensor); --cam-layer '0' has no effect."
    ) in report.notes


def test_a_diff_refuses_attribution_options():
    from cnnreport.datamodel import ReportOptions
    from cnnreport.report.diff import diff_reports

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(OptionError, match="cam_layer: a diff shows no Grad-CAM"):
        diff_reports(model, model, torch.rand(1, 3, 8, 8), options=ReportOptions(cam_layer="0", progress=False))


# -- --mean / --std ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--mean", "nan,0,0"], "--mean nan,0,0 must be finite numbers (got nan)"),
        (["--std", "-1"], "--std -1 must be finite numbers above 0 (got -1)"),
        (["--std", "0.2,0,0.2"], "--std 0.2,0,0.2 must be finite numbers above 0 (got 0)"),
        (["--std", "inf"], "--std inf must be finite numbers above 0 (got inf)"),
        (["--std", "imagenet"], "--std 'imagenet': presets are given with --mean"),
        (["--mean", "none", "--std", "0.5"], "--std has no effect with --mean none"),
        # 123.675 / 255 = 0.485, 116.28 / 255 = 0.456, 103.53 / 255 = 0.406
        (["--mean", "123.675,116.28,103.53"], "give --mean 0.485,0.456,0.406 (each divided by 255)"),
        (["--mean", "0.5,0.5"], "--mean has 2 values but the probes have 3 channel(s)"),
    ],
)
def test_normalisation_values_that_cannot_work_are_refused_naming_the_option(ws, args, expected):
    assert expected in refused(ws, args, subprocess_run=args[:2] == ["--mean", "nan,0,0"])


def test_diff_refuses_the_same_normalisation_values(ws):
    import importlib.util

    spec = importlib.util.spec_from_file_location("fit_net", ws / "net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.Net().state_dict(), ws / "a.pt")
    line = refused(ws, ["--model", "net.py:Net", "--old", "a.pt", "--new", "a.pt", "--probes", "probes", "--std", "-1"], command="diff", subprocess_run=True)
    assert "--std -1 must be finite numbers above 0" in line


def test_the_api_refuses_the_same_normalisation_values(tmp_path):
    probe = torch.rand(1, 3, 4, 4)
    with pytest.raises(OptionError, match=r"--mean nan,0,0 must be finite"):
        load_probes(probe, mean=[float("nan"), 0, 0])
    with pytest.raises(OptionError, match=r"--std -0.5 must be finite numbers above 0"):
        load_probes(probe, std=[-0.5])
    with pytest.raises(OptionError, match=r"--std 'imagenet': presets are given with --mean"):
        load_probes(probe, std="imagenet")
    # a tensor may be on any scale; only images are known to lie in [0, 1]
    assert torch.allclose(load_probes(probe, mean=[100.0], std=[50.0]).tensor, (probe - 100.0) / 50.0)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "black.png")
    with pytest.raises(OptionError, match=r"--std 58,57,57 is on the 0\.\.255 scale"):
        load_probes(tmp_path, mean=[0.5], std=[58, 57, 57])


def test_imagenet_preset_sets_mean_and_std_and_says_both(ws):
    batch = load_probes(ws / "probes", mean="imagenet")
    assert "normalised with mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)" in batch.notes


# -- class names -------------------------------------------------------------------------------


def generate_json(ws: Path, *args: str) -> dict:
    out, js = ws / "r.html", ws / "r.json"
    done = cli("generate", "net.py:Net", "--probes", "probes", "-q", "--no-graph", "-o", str(out), "--json", str(js), *args, cwd=ws)
    assert done.returncode == 0, done.stderr
    data = json.loads(js.read_text())
    data["_html"] = out.read_text(encoding="utf-8")
    return data


def top_labels(data: dict) -> list[str]:
    return [p["predictions"][0]["label"] for p in data["probes"]]


def test_a_blank_line_keeps_its_slot_in_a_text_file(ws):
    # class 2 is every probe's top class (see MODEL_SOURCE); line 3 of the file names it
    (ws / "names.txt").write_text("cat\n\ndog\nbird\n\n")
    data = generate_json(ws, "--class-names", "names.txt")
    assert top_labels(data) == ["dog", "dog"]
    assert [p["label"] for p in data["probes"][0]["predictions"]] == ["dog", "bird", "1"]
    assert data["options"]["class_names"] == ["cat", "1", "dog", "bird"]
    assert "--class-names leaves class 1 blank: shown by its number." in data["notes"]
    assert "--class-names leaves class 1 blank: shown by its number." in data["_html"]


def test_too_few_and_too_many_names_are_noted(ws):
    few = generate_json(ws, "--class-names", "cat,dog")
    assert few["options"]["class_names"] == ["cat", "dog", "2", "3"]
    assert top_labels(few) == ["2", "2"]
    assert "--class-names gives 2 names, but the model has 4 classes: classes 2 to 3 are shown by their number." in few["notes"]

    many = generate_json(ws, "--class-names", "a,b,c,d,e,f")
    assert many["options"]["class_names"] == ["a", "b", "c", "d"]
    assert top_labels(many) == ["c", "c"]
    assert "--class-names gives 6 names, but the model has 4 classes: the last 2 (from 'e') are not used." in many["notes"]


def test_a_sparse_map_is_matched_to_the_model_not_expanded(ws):
    (ws / "sparse.json").write_text('{"0": "cat", "20000000": "dog"}')
    data = generate_json(ws, "--class-names", "sparse.json")
    assert data["options"]["class_names"] == ["cat", "1", "2", "3"]
    assert "--class-names names index 20000000, beyond the model's 4 classes (0 to 3): that name is not used." in data["notes"]
    assert "--class-names names 1 of the model's 4 classes; the others are shown by their number." in data["notes"]
    # the page holds the four names, not twenty million (a report of this model is ~0.1 MB)
    assert len(data["_html"].encode()) < 1_000_000


@pytest.mark.parametrize(
    "content, fragment",
    [
        ('{"0": "cat", "0": "dog"}', "key '0' appears twice"),
        ('{"cat": 0, "dog": 0}', "class 0 is named twice ('cat' and 'dog')"),
        ('{"-1": "cat"}', "key '-1' is not a class index"),
        ('{"cat": -2}', "'cat' maps to -2, not a class index"),
        ('["cat", {"x": 1}]', "entry 1 is a JSON dict, not a name"),
    ],
)
def test_bad_class_name_maps_are_refused(ws, content, fragment):
    (ws / "bad.json").write_text(content)
    line = refused(ws, ["--class-names", "bad.json"], subprocess_run=content.startswith('{"0"'))
    assert "--class-names bad.json" in line and fragment in line


def test_names_for_a_model_without_class_scores_are_noted():
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    report = build_report(model, torch.rand(1, 3, 8, 8), class_names=["a", "b"], progress=False)
    assert report.options.class_names is None
    assert "--class-names: the model's output is not class scores (an (N, classes) tensor), so the names are not used." in report.notes


def test_the_api_takes_a_map_and_refuses_a_string():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([0.0, 5.0, 1.0]))  # class 1 on top
    x = torch.rand(2, 3, 2, 2)
    report = build_report(model, x, class_names={1: "dog", 7: "eel"}, progress=False)
    assert [p.predictions[0].label for p in report.probes] == ["dog", "dog"]
    assert report.options.class_names == ["0", "dog", "2"]
    assert report.to_dict()["options"]["class_names"] == ["0", "dog", "2"]
    with pytest.raises(OptionError, match="class_names 'cat,dog' is one string"):
        build_report(model, x, class_names="cat,dog", progress=False)


def test_resize_without_image_size_is_refused(ws):
    assert "--resize says how --image-size resizes" in refused(ws, ["--resize", "stretch"])
    # with --image-size it works, and the page says how the probes were resized
    data = generate_json(ws, "--resize", "stretch", "--image-size", "8", "10")
    assert "resized to 8×10 without keeping the aspect ratio (2 image(s))" in data["notes"]


def test_saliency_on_a_model_without_class_scores_is_noted():
    pytest.importorskip("captum")
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    report = build_report(model, torch.rand(1, 3, 8, 8), saliency=True, progress=False)
    assert [a for a in report.attributions if a.method == "Saliency"] == []
    assert "No saliency maps: --saliency explains a class score, and the model's output is not class scores (an (N, classes) tensor)." in report.notes


def test_an_oversized_class_name_file_is_refused_before_it_is_read(ws):
    big = ws / "huge.txt"
    with open(big, "wb") as handle:  # sparse: 17 MB on paper, nothing on disk
        handle.truncate(17 * 10**6)
    line = refused(ws, ["--class-names", "huge.txt"])
    assert "--class-names huge.txt is 17.0 MB; a class-name file is a few KB" in line
    big.unlink()


def test_duplicate_class_names_and_an_empty_cam_layer():
    from cnnreport.capture.predictions import resolve_class_names

    names, notes = resolve_class_names(["cat", "cat", "dog", "dog"], 4)
    assert names == ["cat", "cat", "dog", "dog"]
    assert notes == ["--class-names gives one name to several classes: 'cat' for classes 0, 1; 'dog' for classes 2, 3: their predictions read alike on the page (hover one for its class number)."]
    assert resolve_class_names({0: "a", 1: "b"}, 2) == (["a", "b"], [])
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    with pytest.raises(OptionError, match="--cam-layer '' names no layer"):
        build_report(model, torch.rand(1, 3, 8, 8), cam_layer="", progress=False)
