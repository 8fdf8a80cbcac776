"""torch.compile'd models: reported by the module inside, run eagerly, the wrapper untouched.

A counting backend stands in for inductor (no C compiler needed): it records every graph
dynamo hands it and runs it eagerly, so a test can tell whether anything was compiled while
cnnreport ran the model, and check that the wrapper still compiles on its next own call.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from cnnreport import build_report, generate_report
from cnnreport.report.diff import diff_reports

dynamo = pytest.importorskip("torch._dynamo")


class CountingBackend:
    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def expected_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """``state_dict_fingerprint``'s documented spec, written out with hashlib."""
    digest = hashlib.sha256(b"cnnreport-state-dict-v1\n")
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        raw = tensor.numpy().tobytes()
        digest.update(json.dumps([key, str(tensor.dtype)[len("torch.") :], list(tensor.shape), len(raw)]).encode() + b"\n")
        digest.update(raw)
    return digest.hexdigest()


def layer_names(report) -> list[str]:
    return [row.name for row in report.layers]


@pytest.fixture
def probes():
    torch.manual_seed(0)
    return torch.rand(3, 3, 12, 12)


def test_a_compiled_model_is_reported_by_the_module_inside_and_the_wrapper_is_left_alone(probes, tmp_path):
    torch.manual_seed(1)
    model = Net()
    plain = build_report(copy.deepcopy(model), probes, progress=False)
    backend = CountingBackend()
    compiled = torch.compile(model, backend=backend)
    wrapper_attributes = {k: id(v) for k, v in vars(compiled).items()}
    before = copy.deepcopy(model.state_dict())

    report = generate_report(compiled, probes, output=str(tmp_path / "r.html"), progress=False)

    assert backend.graphs == 0  # nothing was compiled: the wrapper was never called
    assert {k: id(v) for k, v in vars(compiled).items()} == wrapper_attributes and compiled._orig_mod is model
    assert layer_names(report) == layer_names(plain) and "_orig_mod" not in " ".join(layer_names(report))
    assert report.title == "Net report"
    assert [p.predictions[0].probability for p in report.probes] == pytest.approx([p.predictions[0].probability for p in plain.probes], abs=1e-6)
    assert report.provenance.model_fingerprint == expected_fingerprint(before)
    assert any("torch.compile" in note and "_orig_mod" in note for note in report.notes)
    assert "torch.compile" in (tmp_path / "r.html").read_text(encoding="utf-8")
    # the wrapper still works as a compiled model afterwards, and agrees with eager
    with torch.no_grad():
        out = compiled(probes)
    assert backend.graphs == 1 and torch.allclose(out, model(probes))


@pytest.mark.parametrize("how", ["in_place", "submodule", "function"])
def test_every_kind_of_compiled_code_runs_eagerly_under_the_report(how, probes):
    torch.manual_seed(2)
    backend = CountingBackend()
    model = Net()
    reference = build_report(copy.deepcopy(model), probes, progress=False)
    names = layer_names(reference)
    if how == "in_place":
        model.compile(backend=backend)
        given = model
    elif how == "submodule":
        model.conv = torch.compile(model.conv, backend=backend)
        given = model
        names = [n.replace("conv", "conv._orig_mod") if n == "conv" else n for n in names]
    else:
        relu = torch.compile(torch.relu, backend=backend)
        model.relu.forward = lambda x: relu(x)
        given = model
    report = build_report(given, probes, progress=False)
    assert backend.graphs == 0
    assert [p.predictions[0].probability for p in report.probes] == pytest.approx([p.predictions[0].probability for p in reference.probes], abs=1e-6)
    if how != "submodule":
        assert layer_names(report) == names
    if how in ("in_place", "submodule"):
        assert any("ran eagerly" in note for note in report.notes)


def test_diff_of_compiled_models_compares_the_modules_inside(probes):
    torch.manual_seed(3)
    old, new = Net(), Net()
    diff = diff_reports(torch.compile(old, backend="eager"), torch.compile(new, backend="eager"), probes)
    assert {change.name for change in diff.weight_changes} >= {"conv", "fc"}
    assert any("torch.compile" in note for note in diff.notes)


MODEL_FILE = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def compiled():
    return torch.compile(Net(), backend="eager")
"""


@pytest.mark.parametrize("prefixed", [False, True], ids=["plain-keys", "orig-mod-keys"])
def test_cli_factory_returning_a_compiled_model_loads_either_checkpoint(tmp_path, prefixed):
    (tmp_path / "net.py").write_text(MODEL_FILE)
    namespace: dict[str, object] = {}
    exec(compile(MODEL_FILE, "net.py", "exec"), namespace)
    torch.manual_seed(4)
    model = namespace["Net"]()
    state = model.state_dict()
    saved = torch.compile(model, backend="eager").state_dict() if prefixed else state
    assert all(k.startswith("_orig_mod.") for k in saved) == prefixed
    torch.save(saved, tmp_path / "w.pt")
    torch.save(torch.rand(2, 3, 12, 12), tmp_path / "probes.pt")
    command = [sys.executable, "-m", "cnnreport.cli"]
    run = subprocess.run(
        [*command, "generate", f"{tmp_path / 'net.py'}:compiled", "--weights", str(tmp_path / "w.pt"),
         "--probes", str(tmp_path / "probes.pt"), "-o", str(tmp_path / "r.html"), "--json", str(tmp_path / "r.json"), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["provenance"]["model_fingerprint"] == expected_fingerprint(state)
    assert [row["name"] for row in data["layers"]] == ["(model)", "conv", "fc"]
    assert any("torch.compile" in note for note in data["notes"])
    verify = subprocess.run([*command, "verify", str(tmp_path / "r.html"), "--weights", str(tmp_path / "w.pt")], capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0 and "match" in verify.stdout, verify.stdout + verify.stderr


def test_a_compiled_submodule_is_named_when_torchinfo_cannot_summarise_the_model():
    class WithCompiledPart(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.compile(nn.Conv2d(3, 4, 3))
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.c(x).mean((2, 3)))

    report = build_report(WithCompiledPart(), torch.rand(2, 3, 8, 8), progress=False)
    torchinfo_notes = [n for n in report.notes if n.startswith("torchinfo")]
    assert torchinfo_notes == ["torchinfo could not summarise this model (it cannot look inside the torch.compile'd submodule(s) c); the table lists the module calls cnnreport captured, without mult-adds."]
