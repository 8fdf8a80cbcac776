"""Models whose own forward writes to their state are reported, and left, as they were given.

Every tensor is compared bit for bit (an int view: ``torch.equal`` takes ``-0.0 == 0.0`` and
NaN != NaN), the fingerprint is re-derived here with hashlib from the documented spec of
``state_dict_fingerprint`` over a deep copy taken before the report, and the predictions are
compared with a plain forward of such a copy: each forward the report runs must see the model
as it was given, not as an earlier forward (torchinfo's, another batch's) left it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cnnreport import build_report
from cnnreport.errors import ForwardError

INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    return t.view(INT_OF_SIZE[t.element_size()]) if t.is_floating_point() else t


def assert_bit_identical(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)  # the same keys, in the same order
    for key in want:
        assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
        assert torch.equal(bits(got[key]), bits(want[key])), key


def expected_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """The documented spec, written out: SHA-256 over the tag line, then per key in sorted order
    a JSON header line [key, dtype, shape, byte count] and the tensor's raw bytes."""
    digest = hashlib.sha256(b"cnnreport-state-dict-v1\n")
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        raw = tensor.numpy().tobytes() if tensor.numel() else b""
        dtype = str(tensor.dtype)[len("torch.") :]
        digest.update(json.dumps([key, dtype, list(tensor.shape), len(raw)]).encode() + b"\n")
        digest.update(raw)
    return digest.hexdigest()


def frozen(model: nn.Module) -> dict[str, torch.Tensor]:
    return copy.deepcopy(model).state_dict()


def attributes(model: nn.Module) -> dict[str, dict[str, int]]:
    """Every module's attribute names and the identity of what each holds."""
    return {name: {k: id(v) for k, v in vars(m).items()} for name, m in model.named_modules()}


def containers(model: nn.Module) -> dict[str, list[tuple[str, int]]]:
    """Which tensors and submodules each module registers, by identity, in order."""
    out = {}
    for name, m in model.named_modules():
        for kind in ("_parameters", "_buffers", "_modules"):
            out[f"{name}/{kind}"] = [(k, id(v)) for k, v in getattr(m, kind).items()]
    return out


def top_probability(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.softmax(model.eval()(x).double(), 1).max())


class InPlaceScaler(nn.Module):
    """Writes its own weights every call: in place under no_grad (the version counter sees it),
    behind autograd through ``.data`` (it does not), a storage swap through ``p.data =``, and a
    zero buffer turned to -0.0 (equal to 0.0 for ``torch.equal``, not bit for bit)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)
        self.register_buffer("zeros", torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.conv.weight.mul_(1.5)
        self.conv.bias.data.mul_(2.0)
        self.fc.weight.data = self.fc.weight.data * 3.0
        self.zeros.data.mul_(-1.0)
        return self.fc(torch.relu(self.conv(x)).mean((2, 3))) + self.zeros


class Reassigner(nn.Module):
    """Replaces a buffer and a parameter by assignment, registers new ones, keeps a call
    counter and a history list, deletes an attribute: the state changes by identity."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 3)
        self.register_buffer("scale", torch.ones(()))
        self.history: list[float] = []
        self.note = "given"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.scale = self.scale * 2
        self.head.bias = nn.Parameter(self.head.bias * 0 + 5.0)
        self.register_buffer(f"seen{len(self.history)}", torch.ones(1))
        self.extra = nn.Linear(2, 2)
        self.calls = getattr(self, "calls", 0) + 1
        self.history.append(float(self.scale))
        if hasattr(self, "note"):
            del self.note
        return self.head(torch.relu(self.conv(x)).mean((2, 3))) * self.scale


def test_a_forward_that_writes_its_weights_in_place_leaves_them_bit_identical():
    torch.manual_seed(0)
    model = InPlaceScaler()
    before = frozen(model)
    objects = [id(t) for t in (*model.parameters(), *model.buffers())]
    x = torch.rand(1, 3, 12, 12).repeat(6, 1, 1, 1)
    expected_top = top_probability(copy.deepcopy(model), x[:1])

    report = build_report(model, x, progress=False, batch_size=2, saliency=True)

    assert_bit_identical(model.state_dict(), before)
    assert [id(t) for t in (*model.parameters(), *model.buffers())] == objects
    assert report.provenance.model_fingerprint == expected_fingerprint(before)
    # torchinfo's forward and each batch's started from the weights as given (1.5x once, not 2.25x)
    assert [p.predictions[0].probability for p in report.probes] == pytest.approx([expected_top] * 6, abs=1e-6)


def test_reassigned_and_added_state_is_put_back_by_identity():
    torch.manual_seed(1)
    model = Reassigner()
    before, names, registered = frozen(model), attributes(model), containers(model)
    bias, history = model.head.bias, model.history
    x = torch.rand(4, 3, 12, 12)

    report = build_report(model, x, progress=False, batch_size=1)

    assert_bit_identical(model.state_dict(), before)
    assert attributes(model) == names and containers(model) == registered
    assert model.head.bias is bias and model.history is history and model.history == []
    assert model.note == "given" and not hasattr(model, "calls") and not hasattr(model, "extra")
    assert report.provenance.model_fingerprint == expected_fingerprint(before)


def test_gradients_the_model_holds_are_kept_bit_identical_and_no_version_moves():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model(torch.rand(2, 3, 10, 10)).sum().backward()  # a training step's gradients, still there
    grads = {n: (p.grad, p.grad.clone()) for n, p in model.named_parameters()}
    versions = [p._version for p in model.parameters()] + [p.grad._version for p in model.parameters()]
    before = frozen(model)

    build_report(model, torch.rand(3, 3, 10, 10), progress=False, saliency=True)

    assert_bit_identical(model.state_dict(), before)
    for name, p in model.named_parameters():
        assert p.grad is grads[name][0] and torch.equal(bits(p.grad), bits(grads[name][1]))
    # a model nothing wrote to is not written back: no tensor's version counter moved
    assert [p._version for p in model.parameters()] + [p.grad._version for p in model.parameters()] == versions


def test_a_forward_that_writes_into_grad_is_restored():
    class GradWriter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            if self.conv.weight.grad is not None:
                self.conv.weight.grad.data.add_(1.0)
            return self.fc(self.conv(x).mean((2, 3)))

    torch.manual_seed(3)
    model = GradWriter()
    model.conv.weight.grad = torch.full_like(model.conv.weight, 0.25)
    build_report(model, torch.rand(2, 3, 8, 8), progress=False)
    assert torch.equal(model.conv.weight.grad, torch.full_like(model.conv.weight, 0.25))


def qat_model() -> nn.Module:
    """A tiny conv net prepared for quantisation-aware training, observers calibrated on
    inputs in [0, 0.1]: an eval-mode forward on brighter inputs moves their min/max."""
    import torch.ao.quantization as tq

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.quant = tq.QuantStub()
            self.conv = nn.Conv2d(3, 4, 3)
            self.relu = nn.ReLU()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, 3)
            self.dequant = tq.DeQuantStub()

        def forward(self, x):
            return self.dequant(self.fc(self.pool(self.relu(self.conv(self.quant(x)))).flatten(1)))

    torch.manual_seed(4)
    model = Net().train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager-mode quantisation is deprecated in favour of torchao
        model.qconfig = tq.get_default_qat_qconfig("fbgemm")
        tq.prepare_qat(model, inplace=True)
    model(torch.rand(4, 3, 12, 12) * 0.1)
    return model.eval()


def test_quantisation_aware_observers_keep_their_ranges():
    model = qat_model()
    key = "quant.activation_post_process.activation_post_process.max_val"
    before = frozen(model)
    x = torch.rand(4, 3, 12, 12) * 0.3  # brighter than the calibration: observers would widen
    expected = [top_probability(copy.deepcopy(model), x[i : i + 1]) for i in range(4)]
    moved = copy.deepcopy(model)
    moved(x)
    assert float(moved.state_dict()[key]) > float(before[key])  # the forward does write them

    report = build_report(model, x, progress=False, batch_size=1)

    assert_bit_identical(model.state_dict(), before)
    assert report.provenance.model_fingerprint == expected_fingerprint(before)
    # each batch was quantised with the observers as given, not as the previous batch left them
    assert [p.predictions[0].probability for p in report.probes] == pytest.approx(expected, abs=1e-6)


class RandomDrawer(nn.Module):
    """Draws from numpy's, Python's and torch's global generators in every forward (a noisy
    augmentation layer, a stochastic depth written by hand): each draw moves that generator."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = float(np.random.rand()) + random.random() + float(torch.rand(()))
        return self.fc(torch.relu(self.conv(x)).mean((2, 3))) + 0.0 * noise


def _draws() -> tuple[list[float], list[float], list[float]]:
    return np.random.rand(3).tolist(), [random.random() for _ in range(3)], torch.rand(3).tolist()


def _seed_all() -> None:
    np.random.seed(2024)
    random.seed(2025)
    torch.manual_seed(2026)


def test_the_global_generators_are_where_they_were_after_a_report_whose_model_draws():
    """The next draw after a report is the draw the user would have had without it."""
    _seed_all()
    want = _draws()
    model = RandomDrawer()  # built before seeding: its init draws do not count
    x = torch.rand(3, 3, 8, 8)
    _seed_all()
    build_report(model, x, progress=False, batch_size=2, saliency=True)
    got = _draws()
    assert got[0] == want[0]  # numpy
    assert got[1] == want[1]  # random
    assert got[2] == want[2]  # torch
    # and the model did draw: without the report's restore each generator would have moved
    _seed_all()
    with torch.no_grad():
        model(x)
    moved = _draws()
    assert (moved[0] != want[0], moved[1] != want[1], moved[2] != want[2]) == (True, True, True)


def test_a_forward_that_writes_and_then_fails_leaves_the_model_as_it_was():
    calls = []  # outside the model: its own attributes are put back after every pass

    class FailsOnTheSecondBatch(InPlaceScaler):
        def forward(self, x):
            out = super().forward(x)
            calls.append(x.shape[0])
            if len(calls) > 2:  # torchinfo's call, the first batch, then this one
                raise RuntimeError("broken")
            return out

    torch.manual_seed(5)
    model = FailsOnTheSecondBatch()
    before, names = frozen(model), attributes(model)
    with pytest.raises(ForwardError):
        build_report(model, torch.rand(4, 3, 12, 12), progress=False, batch_size=2)
    assert_bit_identical(model.state_dict(), before)
    assert attributes(model) == names
    assert calls == [1, 2, 2]
    calls.clear()
    partial = build_report(model, torch.rand(4, 3, 12, 12), progress=False, batch_size=2, on_failure="partial")
    assert_bit_identical(model.state_dict(), before)
    assert calls == [1, 2, 2] and partial.failure is not None
    assert partial.provenance.model_fingerprint == expected_fingerprint(before)


def test_the_cli_records_the_fingerprint_of_the_weights_file_not_of_what_the_forward_made(tmp_path):
    source = tmp_path / "net.py"
    source.write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 4, 3)\n"
        "        self.fc = nn.Linear(4, 3)\n"
        "    def forward(self, x):\n"
        "        with torch.no_grad():\n"
        "            self.conv.weight.mul_(1.5)\n"
        "        return self.fc(self.conv(x).mean((2, 3)))\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import net  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("net", None)
    torch.manual_seed(6)
    state = net.Net().state_dict()
    torch.save(state, tmp_path / "w.pt")
    torch.save(torch.rand(2, 3, 12, 12), tmp_path / "probes.pt")
    run = subprocess.run(
        [sys.executable, "-m", "cnnreport.cli", "generate", f"{source}:Net", "--weights", str(tmp_path / "w.pt"),
         "--probes", str(tmp_path / "probes.pt"), "-o", str(tmp_path / "r.html"), "--json", str(tmp_path / "r.json"), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    recorded = json.loads((tmp_path / "r.json").read_text())["provenance"]["model_fingerprint"]
    assert recorded == expected_fingerprint(state)


def test_snapshot_state_matches_what_the_model_held_before_any_forward():
    """The fingerprint is of the state before torchinfo's forward, even for a model whose
    first call alone changes it."""

    class FirstCallOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.register_buffer("started", torch.zeros(()))

        def forward(self, x):
            if not bool(self.started):
                self.started.fill_(1.0)
            return self.conv(x)

    model = FirstCallOnly()
    before = frozen(model)
    report = build_report(model, torch.rand(2, 1, 8, 8), progress=False)
    assert float(model.started) == 0.0
    assert report.provenance.model_fingerprint == expected_fingerprint(before)
