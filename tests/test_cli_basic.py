"""The command line: demo, generate with a model file + weights + probe folder, help texts."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import ReportPage, assert_self_contained, decode_data_png

from cnnreport.cli.main import main

MODEL_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self, num_classes: int = 4):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(6, 8, 3, padding=1, groups=2)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            x = self.relu(self.conv2(self.relu(self.conv1(x))))
            return self.fc(torch.flatten(self.pool(x), 1))
    """
)


def run_cli(args: list[str], cwd: Path | None = None):
    runner = CliRunner()
    result = runner.invoke(main, args, catch_exceptions=False)
    return result


def test_demo_writes_a_report(tmp_path):
    out = tmp_path / "demo.html"
    result = run_cli(["demo", "-o", str(out), "--json", str(tmp_path / "demo.json")])
    assert result.exit_code == 0, result.output
    assert "3 layer sections, 10 probes" in result.output  # the one-line summary on stderr
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    page = ReportPage(html)
    assert page.title == "Demo: DigitsCNN trained on scikit-learn digits"
    assert page.layer_sections == ["sec-features-0", "sec-features-3", "sec-features-7"]
    data = json.loads((tmp_path / "demo.json").read_text(encoding="utf-8"))
    assert data["schema_version"] == 1
    assert [s["name"] for s in data["sections"]] == ["features.0", "features.3", "features.7"]
    assert len(data["probes"]) == 10 and all(len(p["predictions"]) == 3 for p in data["probes"])
    assert data["model"]["class_name"] == "DigitsCNN"
    for img in page.images:
        decode_data_png(img["src"])


@pytest.fixture
def user_project(tmp_path, probe_dir):
    """A model file, a checkpoint of it and a probe folder, as a user would have them."""
    model_file = tmp_path / "model.py"
    model_file.write_text(MODEL_SOURCE, encoding="utf-8")
    namespace: dict = {}
    exec(compile(MODEL_SOURCE, str(model_file), "exec"), namespace)
    torch.manual_seed(5)
    net = namespace["Net"]()
    weights = tmp_path / "w.pt"
    torch.save(net.state_dict(), weights)
    return model_file, weights, probe_dir, net


def test_generate_from_a_model_file(tmp_path, user_project):
    model_file, weights, probe_dir, net = user_project
    out, js = tmp_path / "r.html", tmp_path / "r.json"
    result = run_cli(
        ["generate", f"{model_file}:Net", "--weights", str(weights), "--probes", str(probe_dir),
         "-o", str(out), "--json", str(js), "--title", "my <net>", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert result.output == ""  # -q: nothing printed
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    page = ReportPage(html)
    assert page.title == "my <net>" and "my &lt;net&gt;" in html
    assert page.layer_sections == ["sec-conv1", "sec-conv2"]
    data = json.loads(js.read_text(encoding="utf-8"))
    assert data["model"]["total_params"] == sum(p.numel() for p in net.parameters()) == 3 * 6 * 9 + 6 + 8 * 3 * 9 + 8 + 8 * 4 + 4
    assert data["model"]["input_shape"] == [3, 24, 24]
    assert [p["name"] for p in data["probes"]] == ["astronaut.png", "chelsea.png", "coffee.png"]
    assert data["provenance"]["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert data["provenance"]["checkpoint_path"] == str(weights)
    # The weights were loaded: the report's conv1 weight statistics are those of the checkpoint.
    conv1 = next(s for s in data["sections"] if s["name"] == "conv1")
    assert conv1["weight_stats"]["max"] == pytest.approx(float(net.conv1.weight.detach().max()), rel=1e-6)
    assert "4 groups" not in html and "2 groups" in html
    # More probes than shown: the summary line counts them all and says how many are shown.
    result = run_cli(["generate", f"{model_file}:Net", "--weights", str(weights), str(probe_dir), "-o", str(out), "--max-probes", "2"])
    assert result.exit_code == 0, result.output
    assert "2 layer sections, 3 probes (2 shown)" in result.output


def test_generate_errors_are_one_line(tmp_path, user_project):
    model_file, weights, probe_dir, _ = user_project
    result = CliRunner().invoke(main, ["generate", f"{model_file}:Nope", "--probes", str(probe_dir), "-o", str(tmp_path / "x.html")])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "Nope" in result.output
    assert not (tmp_path / "x.html").exists()
    result = CliRunner().invoke(main, ["generate", f"{model_file}:Net", "--weights", str(weights), "-o", str(tmp_path / "x.html")])
    assert result.exit_code == 2 and "--probes" in result.output


def test_help_texts():
    top = run_cli(["--help"])
    assert top.exit_code == 0
    for word in ("generate", "demo", "cnnreport demo -o demo-report.html"):
        assert word in top.output
    gen = run_cli(["generate", "--help"])
    assert gen.exit_code == 0
    for option in ("--weights", "--probes", "--json", "-o, --output", "--layers", "--max-channels", "path/to/file.py:Name"):
        assert option in gen.output, option
    demo = run_cli(["demo", "--help"])
    assert demo.exit_code == 0 and "digits" in demo.output


@pytest.mark.slow
def test_console_script_entry_point(tmp_path):
    """The installed ``cnnreport`` command itself (a subprocess, as a user runs it)."""
    exe = Path(sys.executable).with_name("cnnreport")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cnnreport.cli"]
    version = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "0.1.0" in version.stdout
    out = tmp_path / "d.html"
    done = subprocess.run([*cmd, "demo", "-o", str(out), "-q", "--max-probes", "2"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = ReportPage(out.read_text(encoding="utf-8"))
    assert len(page.layer_sections) == 3
