"""The wheel: build it, install it into a fresh virtual environment, render from the installed copy.

torch and the other dependencies are not installed again (gigabytes): a ``.pth`` file in the fresh
environment appends this environment's site-packages to ``sys.path``. A path line in a ``.pth`` does
not run the ``.pth`` files of the folder it names, so this environment's editable cnnreport stays
invisible; the test asserts that cnnreport and its templates come from the fresh site-packages.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import ReportPage, assert_self_contained

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, **kwargs)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    if importlib.util.find_spec("hatchling") is not None:
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)])
    else:  # build's isolated environment fetches hatchling (pip's cache or the package index)
        run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)])
    (built,) = out.glob("cnnreport-*.whl")
    return built


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = sorted(n for n in names if n.startswith("cnnreport/templates/"))
    expected = sorted(f"cnnreport/templates/{p.name}" for p in (REPO / "templates").iterdir() if p.is_file())
    assert templates == expected
    assert "cnnreport/data/demo/digits_cnn.pt" in names
    assert sum(n.startswith("cnnreport/data/demo/probes/") and n.endswith(".png") for n in names) == 10
    assert not any(n.startswith(("tests/", "templates/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "cnnreport = cnnreport.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


SCRIPT = r"""
import json, sys
import torch
from torch import nn
import cnnreport
from cnnreport import generate_report
from cnnreport.render.views import template_dir

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)
    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

torch.manual_seed(0)
report = generate_report(Net(), torch.rand(2, 3, 12, 12), output="installed.html", progress=False, title="from the wheel")
print(json.dumps({
    "cnnreport": cnnreport.__file__,
    "templates": str(template_dir()),
    "sections": [s.name for s in report.sections],
    "total_params": report.model.total_params,
}))
"""


def test_render_from_an_installed_wheel(wheel, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)])
    fresh_site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (fresh_site / "_dependencies_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    work = tmp_path / "elsewhere"
    work.mkdir()
    done = run([str(python), "-c", SCRIPT], cwd=work)
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(info["cnnreport"]).resolve().is_relative_to(fresh_site.resolve())
    assert Path(info["templates"]).resolve() == (fresh_site / "cnnreport" / "templates").resolve()
    assert info["sections"] == ["conv"] and info["total_params"] == 4 * 27 + 4 + 4 * 2 + 2
    html = (work / "installed.html").read_text(encoding="utf-8")
    assert_self_contained(html)
    page = ReportPage(html)
    assert page.title == "from the wheel" and page.layer_sections == ["sec-conv"]
    # The console script and the demo data (weights, probes) of the installed copy.
    run([str(venv / "bin" / "cnnreport"), "demo", "-o", "demo.html", "-q", "--max-probes", "2"], cwd=work)
    demo = ReportPage((work / "demo.html").read_text(encoding="utf-8"))
    assert len(demo.layer_sections) == 3
    assert not (REPO / "installed.html").exists()
