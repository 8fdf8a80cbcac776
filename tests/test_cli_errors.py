"""Issue 3: every bad input ends in one clear line, a non-zero exit, and nothing lost.

Each case runs the real CLI in-process (click's runner), checks the exit code, that stderr is
one line naming the thing to fix with no traceback, and that an existing report is untouched.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cnnreport.cli.main import main
from cnnreport.cli.runs import partial_path

MODEL_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
            return self.fc(x.mean((2, 3)))

    class NeedsArgs(nn.Module):
        def __init__(self, width, depth=2):
            super().__init__()
            self.conv = nn.Conv2d(3, width, 3)

        def forward(self, x):
            return self.conv(x)

    class Tutorial(nn.Module):
        # The classic mistake: sized for 28x28 inputs, fed 32x32.
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.fc = nn.Linear(32 * 7 * 7, 10)

        def forward(self, x):
            x = self.pool(torch.relu(self.conv1(x)))
            x = self.pool(torch.relu(self.conv2(x)))
            x = x.view(-1, 32 * 7 * 7)
            return self.fc(x)

    class WrongWidth(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(1568, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.conv(x), 1))

    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Conv2d(3, 2, 5)

        def forward(self, x):
            return self.layer(x)
    """
)

GOOD_REPORT = "<html>the good report from yesterday</html>"


@pytest.fixture()
def workspace(tmp_path):
    (tmp_path / "model.py").write_text(MODEL_SOURCE)
    probes = tmp_path / "probes"
    probes.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(probes / f"p{i}.png")
    import importlib.util

    spec = importlib.util.spec_from_file_location("cli_err_model", tmp_path / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.Net().state_dict(), tmp_path / "net.pt")
    torch.save(module.Other().state_dict(), tmp_path / "other.pt")
    out = tmp_path / "report.html"
    out.write_text(GOOD_REPORT)
    return tmp_path


def run(args):
    runner = CliRunner()
    return runner.invoke(main, args, catch_exceptions=False)


def assert_one_line_error(result, *needles, code=None, partial=False):
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    # One line, nothing else; a failed forward pass adds a second naming the partial report.
    assert len(lines) == (2 if partial else 1), result.stderr
    if partial:
        assert "partial report" in lines[1]
    assert lines[0].startswith("cnnreport: error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def untouched(ws):
    return (ws / "report.html").read_text() == GOOD_REPORT


def test_good_run_replaces_the_report(workspace):
    ws = workspace
    result = run(["generate", f"{ws}/model.py:Net", "--weights", f"{ws}/net.pt", "--probes", f"{ws}/probes", "-o", f"{ws}/report.html", "-q"])
    assert result.exit_code == 0, result.stderr
    assert (ws / "report.html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    "args, needles",
    [
        (["{ws}/missing.py:Net", "--probes", "{ws}/probes"], ["missing.py"]),
        (["{ws}/model.py:Nope", "--probes", "{ws}/probes"], ["Nope", "Net"]),
        (["{ws}/model.py:NeedsArgs", "--probes", "{ws}/probes"], ["width", "--model-arg"]),
        (["no_such_package_xyz.models:Net", "--probes", "{ws}/probes"], ["no_such_package_xyz"]),
        (["{ws}/model.py:Net", "--weights", "{ws}/other.pt", "--probes", "{ws}/probes"], ["other.pt"]),
        (["{ws}/model.py:Net", "--weights", "{ws}/nothing.pt", "--probes", "{ws}/probes"], ["nothing.pt"]),
        (["{ws}/model.py:Net", "--probes", "{ws}/empty"], ["empty"]),
        (["{ws}/model.py:Net", "--probes", "{ws}/bad.png"], ["bad.png"]),
        (["{ws}/model.py:Net", "--probes", "{ws}/notes.txt"], ["notes.txt"]),
        (["{ws}/model.py:Net", "--probes", "{ws}/probes", "--layers", "encoder.*"], ["encoder.*", "conv1"]),
        (["{ws}/model.py:Net"], ["--probes"]),
    ],
    ids=["missing-file", "name-not-found", "needs-args", "no-import", "wrong-weights", "missing-weights",
         "empty-folder", "corrupt-image", "unsupported-type", "layers-match-nothing", "no-probes"],
)
def test_bad_input_one_line_and_report_untouched(workspace, args, needles):
    ws = workspace
    (ws / "empty").mkdir()
    (ws / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (ws / "notes.txt").write_text("hello")
    argv = ["generate"] + [a.format(ws=ws) for a in args] + ["-o", f"{ws}/report.html"]
    result = run(argv)
    assert_one_line_error(result, *needles)
    assert untouched(ws)


def test_channel_mismatch_names_the_layer_and_shapes(workspace):
    ws = workspace
    result = run(["generate", f"{ws}/model.py:Net", "--input-size", "1", "16", "16", "-o", f"{ws}/report.html"])
    assert_one_line_error(result, "conv1", "(1, 1, 16, 16)", code=3, partial=True)
    assert untouched(ws)


def test_unwritable_output_fails_before_running(workspace):
    ws = workspace
    result = run(["generate", f"{ws}/model.py:Net", "--probes", f"{ws}/probes", "-o", f"{ws}/no/such/dir/r.html"])
    assert_one_line_error(result, "no/such/dir")


def test_debug_shows_the_traceback(workspace):
    ws = workspace
    result = run(["generate", f"{ws}/model.py:Nope", "--probes", f"{ws}/probes", "-o", f"{ws}/report.html", "--debug"])
    assert result.exit_code != 0
    assert "Traceback" in result.stderr


@pytest.mark.parametrize(
    "name, needles",
    [
        ("Tutorial", ["<code>view</code> (Tensor.view)", "1×32×8×8", "shape &#39;[-1, 1568]&#39; is invalid"]),
        ("WrongWidth", ["<code>fc</code> (Linear)", "1×8192", "Linear(in_features=1568)"]),
    ],
)
def test_failed_forward_leaves_a_partial_report(workspace, name, needles):
    ws = workspace
    result = run(["generate", f"{ws}/model.py:{name}", "--input-size", "3", "32", "32", "-o", f"{ws}/report.html"])
    assert result.exit_code == 3
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and "Traceback" not in result.stderr
    assert "partial" in lines[1]
    assert untouched(ws)
    partial = ws / "report.partial.html"
    assert str(partial) == partial_path(str(ws / "report.html"))
    html = partial.read_text()
    assert "The forward pass failed" in html
    for needle in needles:
        assert needle in html
    # What ran before the failure is there: the first convolution's section.
    assert 'id="sec-conv' in html


def test_python_api_raises_with_the_partial_report_attached():
    from cnnreport import build_report
    from cnnreport.errors import ForwardError

    class WrongWidth(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc = torch.nn.Linear(1568, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.conv(x), 1))

    model = WrongWidth()
    with pytest.raises(ForwardError) as caught:
        build_report(model, torch.rand(3, 3, 16, 16), progress=False)
    error = caught.value
    assert "fc (Linear)" in error.one_line() and "(3, 2048)" in error.one_line()
    assert not hasattr(error, "report")  # the exception carries its message, not a report
    partial = build_report(model, torch.rand(3, 3, 16, 16), progress=False, on_failure="partial")
    failure = partial.failure
    assert failure.summary == error.one_line()
    assert (failure.failed_at, failure.failed_type) == ("fc", "Linear")
    assert failure.last_completed == "conv"
    assert failure.input_shapes == [[3, 2048]]
    assert failure.expected == "Linear(in_features=1568)"
    assert [s.name for s in partial.sections] == ["conv"]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert model.training  # a fresh module trains; the failed pass put its flags back
    html = partial.to_html()
    assert "The forward pass failed" in html and "Linear(in_features=1568)" in html


def test_shell_expanded_probe_files_after_one_probes_flag(workspace):
    ws = workspace
    files = sorted(str(p) for p in (ws / "probes").glob("*.png"))
    out = ws / "several.html"
    result = run(["generate", f"{ws}/model.py:Net", "--probes", *files, "-o", str(out), "--json", f"{ws}/several.json", "-q"])
    assert result.exit_code == 0, result.stderr
    import json

    assert [p["name"] for p in json.loads((ws / "several.json").read_text())["probes"]] == ["p0.png", "p1.png", "p2.png"]


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_file_as_model_gives_a_report_that_says_what_it_lacks(workspace, how):
    ws = workspace
    import importlib.util

    spec = importlib.util.spec_from_file_location("cli_ts_model", ws / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.Net().eval()
    archive = ws / f"net_{how}.pt"
    (torch.jit.script(net) if how == "script" else torch.jit.trace(net, torch.rand(1, 3, 16, 16))).save(str(archive))
    result = run(["generate", str(archive), "--probes", f"{ws}/probes", "-o", f"{ws}/ts.html", "--json", f"{ws}/ts.json", "-q"])
    assert result.exit_code == 0, result.stderr
    import json

    data = json.loads((ws / "ts.json").read_text())
    assert data["model"]["class_name"] == "Net"
    assert data["model"]["total_params"] == sum(p.numel() for p in net.parameters())
    assert data["model"]["num_conv_layers"] == 2
    assert len(data["probes"][0]["predictions"]) == 3
    assert any(note.startswith("TorchScript model") for note in data["notes"])
    # Weights stay readable: each convolution still shows its filters, and says why alone.
    assert [(s["name"], s["stats"]["numel"]) for s in data["sections"]] == [("conv1", 0), ("conv2", 0)]
    assert all(s["filters"]["total_filters"] == 8 for s in data["sections"])
    assert "weights only" in (ws / "ts.html").read_text()
