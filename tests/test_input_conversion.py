"""Inputs are never converted without saying so (issue 21.4).

Integer probe tensors follow one rule whatever their dtype, with a note naming the range that
was assumed; ``diff`` compares weights in the checkpoints' own precision, so the same weights
re-saved in float16 diff as exactly 0, and the page says what precision it compared in.
Expected values are worked out here in float64 with plain torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cnnreport import build_report
from cnnreport.io.loading import load_model
from cnnreport.io.probes import load_probes
from cnnreport.report.diff import diff_reports

PIXELS = torch.tensor([[[[0, 17], [128, 255]]]], dtype=torch.int64).repeat(1, 3, 1, 1)  # (1, 3, 2, 2)


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.int64])
def test_integer_pixels_in_8_bit_range_are_scaled_like_uint8(dtype):
    wide = load_probes(PIXELS.to(dtype))
    expected = (PIXELS.double() / 255.0).float()
    assert torch.equal(wide.tensor, expected)
    assert torch.equal(load_probes(PIXELS.to(torch.uint8)).tensor, expected)
    name = str(dtype).replace("torch.", "")
    assert wide.notes == [f"scaled the {name} values of probe tensor (values 0..255) to [0, 1] as 8-bit values (divided by 255)"]


def test_sixteen_bit_values_are_divided_by_65535():
    values = torch.tensor([[[[0, 300], [40000, 65535]]]], dtype=torch.int32)
    batch = load_probes(values)
    assert torch.equal(batch.tensor, (values.double() / 65535.0).float())
    assert batch.notes == ["scaled the int32 values of probe tensor (values 0..65535) to [0, 1] as 16-bit values (divided by 65535)"]
    # a uint16 array is 16-bit by its dtype, even when every value would fit in 8 bits
    dark = np.array([[[[0, 200], [100, 255]]]], dtype=np.uint16)
    assert torch.equal(load_probes(dark).tensor, torch.from_numpy(dark.astype(np.float64) / 65535.0).float())


def test_signed_samples_are_full_scale_and_out_of_range_values_are_left_unscaled():
    pcm = torch.tensor([[[-32768, -1, 0, 16384]]], dtype=torch.int16)  # (1, 1, 4): one Conv1d sample
    batch = load_probes(pcm, sample_ndim=2)
    assert batch.tensor.tolist() == [[[-1.0, -1 / 32768, 0.0, 0.5]]]
    assert batch.notes == ["scaled the int16 values of probe tensor (values -32768..16384) as full-scale signed samples: divided by 32768, to [-1, 1)"]

    counts = torch.tensor([[[[70000, 3]]]], dtype=torch.int64)
    batch = load_probes(counts)
    assert batch.tensor.tolist() == [[[[70000.0, 3.0]]]]
    assert batch.notes == ["fed the int64 values of probe tensor (values 3..70000) unscaled as float32: they fit no 8- or 16-bit range, so no scale could be assumed"]


def test_booleans_and_float64_say_what_was_done():
    mask = torch.tensor([[[[True, False]]]])
    batch = load_probes(mask)
    assert batch.tensor.tolist() == [[[[1.0, 0.0]]]]
    assert batch.notes == ["read the boolean values of probe tensor as 0.0 and 1.0"]
    assert load_probes(torch.ones(1, 1, 2, 2, dtype=torch.float64)).notes == ["rounded the float64 values of probe tensor to float32"]
    assert load_probes(torch.ones(1, 1, 2, 2, dtype=torch.float16)).notes == []  # exact: nothing to say


def test_the_report_page_and_json_carry_the_note(tmp_path):
    conv = nn.Conv2d(3, 1, 1, bias=False)  # sums the three channels
    nn.init.ones_(conv.weight)
    report = build_report(nn.Sequential(conv), torch.full((1, 3, 4, 4), 51, dtype=torch.int64), progress=False, graph=False)
    note = "scaled the int64 values of probe tensor (values 51..51) to [0, 1] as 8-bit values (divided by 255)"
    assert note in report.to_dict()["notes"]
    assert note in report.to_html()
    # 51 / 255 = 0.2 reached the model in each channel, so the sum is 0.6 everywhere
    assert report.sections[0].stats.mean == pytest.approx(0.6, rel=1e-6)


MODEL_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, padding=1)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
    """
)


@pytest.fixture
def checkpoints(tmp_path: Path) -> Path:
    (tmp_path / "net.py").write_text(MODEL_SOURCE)
    namespace: dict = {}
    exec(MODEL_SOURCE, namespace)
    torch.manual_seed(3)
    state = namespace["Net"]().state_dict()
    torch.save(state, tmp_path / "w32.pt")
    torch.save({k: v.half() for k, v in state.items()}, tmp_path / "w16.pt")
    torch.save({k: v.half() for k, v in state.items()}, tmp_path / "w16_again.pt")
    torch.save({k: v.double() for k, v in state.items()}, tmp_path / "w64.pt")
    torch.save({k: v.double() + 1e-12 for k, v in state.items()}, tmp_path / "w64_nudged.pt")
    torch.save({k: (v + 0.01).half() for k, v in state.items()}, tmp_path / "w16_trained.pt")
    return tmp_path


def diff_of(ws: Path, old: str, new: str):
    a = load_model(f"{ws}/net.py:Net", weights=str(ws / old), keep_stored_weights=True)
    b = load_model(f"{ws}/net.py:Net", weights=str(ws / new), keep_stored_weights=True)
    return diff_reports(
        a.model, b.model, torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0)),
        old_label=old, new_label=new, old_stored_weights=a.stored_weights, new_stored_weights=b.stored_weights,
    )


def relative(old: dict, new: dict, module: str) -> float:
    """||new - old|| / ||old|| over one module's weight and bias, in float64."""
    keys = [f"{module}.weight", f"{module}.bias"]
    a = torch.cat([old[k].double().flatten() for k in keys])
    b = torch.cat([new[k].double().flatten() for k in keys])
    return float(torch.linalg.vector_norm(b - a) / torch.linalg.vector_norm(a))


def test_same_weights_in_float16_diff_as_exactly_zero_and_say_why(checkpoints):
    d = diff_of(checkpoints, "w32.pt", "w16.pt")
    assert [(w.name, w.relative, w.abs_change) for w in d.weight_changes] == [("conv", 0.0, 0.0), ("fc", 0.0, 0.0)]
    assert (
        "Weights are compared at float16, the coarser of the two precisions (w32.pt float32, w16.pt float16; "
        "4 parameter tensors): a difference that is only rounding to float16 shows as no change. Activations "
        "and predictions come from the models as loaded, so they may still differ by that rounding."
    ) in d.notes
    both = diff_of(checkpoints, "w16.pt", "w16_again.pt")
    assert [w.relative for w in both.weight_changes] == [0.0, 0.0]
    assert "Weights are compared in the checkpoints' own float16 (4 parameter tensors); the models compute in float32." in both.notes


def test_a_real_change_still_shows_at_the_common_precision(checkpoints):
    old = torch.load(checkpoints / "w32.pt")
    new = torch.load(checkpoints / "w16_trained.pt")
    d = diff_of(checkpoints, "w32.pt", "w16_trained.pt")
    rounded_old = {k: v.half() for k, v in old.items()}  # the old side at float16, as compared
    got = {w.name: w.relative for w in d.weight_changes}
    assert got["conv"] == pytest.approx(relative(rounded_old, new, "conv"), rel=1e-12)
    assert got["fc"] == pytest.approx(relative(rounded_old, new, "fc"), rel=1e-12)


def test_float64_checkpoints_compare_in_float64(checkpoints):
    old = torch.load(checkpoints / "w64.pt")
    new = torch.load(checkpoints / "w64_nudged.pt")
    d = diff_of(checkpoints, "w64.pt", "w64_nudged.pt")
    got = {w.name: w.relative for w in d.weight_changes}
    # a change of 1e-12 vanishes in float32 (the models' dtype), not in the checkpoints' float64
    assert got["conv"] == pytest.approx(relative(old, new, "conv"), rel=1e-6) and got["conv"] > 0
    assert got["fc"] == pytest.approx(relative(old, new, "fc"), rel=1e-6) and got["fc"] > 0
    assert "Weights are compared in the checkpoints' own float64 (4 parameter tensors); the models compute in float32." in d.notes
    same = diff_of(checkpoints, "w32.pt", "w64.pt")
    assert [w.relative for w in same.weight_changes] == [0.0, 0.0]


def test_loading_says_when_the_checkpoint_dtype_is_cast(checkpoints):
    half = load_model(f"{checkpoints}/net.py:Net", weights=str(checkpoints / "w16.pt"))
    assert "the checkpoint's dtype is not the model's: 4 float16 tensors copied exactly into the model's float32" in half.notes
    assert half.stored_weights == {}  # kept only when asked
    double = load_model(f"{checkpoints}/net.py:Net", weights=str(checkpoints / "w64.pt"))
    assert "the checkpoint's dtype is not the model's: 4 float64 tensors rounded to the model's float32" in double.notes


def test_diff_command_reports_zero_for_float16_copy(checkpoints):
    out = checkpoints / "d.json"
    done = subprocess.run(
        [sys.executable, "-m", "cnnreport.cli", "diff", "--model", "net.py:Net", "--old", "w32.pt", "--new", "w16.pt",
         "--input-size", "3", "6", "6", "-q", "-o", "d.html", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=checkpoints, env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert [(w["name"], w["relative"]) for w in data["weight_changes"]] == [("conv", 0.0), ("fc", 0.0)]
    assert any(n.startswith("Weights are compared at float16, the coarser of the two precisions (w32.pt float32, w16.pt float16") for n in data["notes"])
    assert "Weights are compared at float16" in (checkpoints / "d.html").read_text(encoding="utf-8")


def test_16_bit_images_are_scaled_by_their_full_range_and_say_so(tmp_path):
    from PIL import Image

    from cnnreport.io.probes import load_probes

    values = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")  # mode I;16
    batch = load_probes(str(tmp_path / "deep.png"))
    np.testing.assert_allclose(batch.inputs[0][0, 0].numpy(), values / 65535.0, rtol=0, atol=1e-7)
    assert any("16-bit" in n and "65535" in n for n in batch.notes), batch.notes
    # A 32-bit integer image holding 8-bit values: read as 16-bit, and the note says it is dark.
    Image.fromarray(np.array([[0, 255], [128, 64]], dtype=np.int32), mode="I").save(tmp_path / "i32.tif")
    batch = load_probes(str(tmp_path / "i32.tif"))
    assert float(batch.inputs[0].max()) == pytest.approx(255 / 65535, abs=1e-7)
    assert any("i32.tif" in n and "dark" in n for n in batch.notes), batch.notes
