"""Dataset examples through the whole report (issue 18): ``build_report(examples=...)`` and
``cnnreport generate --examples DIR``, in one process and as two ``torchrun`` processes.

The example set is real photographs (scikit-image's, cropped small) with a bright plus sign
pasted at known positions into a few of them; a convolution whose channel 0 is a plus-shaped
kernel must find exactly those images, at those positions, and its crops must hold the sign.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

import cnnreport
from cnnreport.errors import OptionError, ProbeError
from cnnreport.io.examples import ExampleImages, shard
from cnnreport.report.examples import example_set

SIZE = 32
#: Example index -> (row, column) of the plus sign's centre, and its brightness (strongest first: 7, 2, 9).
PASTED = {2: ((9, 20), 230), 7: ((22, 11), 255), 9: ((15, 26), 205)}
COUNT = 24

MODEL_SOURCE = '''
import torch
from torch import nn


class PlusNet(nn.Module):
    """Channel 0 of conv responds to a bright plus sign (a zero-sum kernel: flat areas give 0)."""

    def __init__(self):
        torch.manual_seed(0)
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)
        with torch.no_grad():
            plus = torch.tensor([[0.0, 1, 0], [1, 1, 1], [0, 1, 0]]) - 5 / 9
            self.conv.weight[0] = plus / 3
            self.conv.bias[0] = 0.0

    def forward(self, x):
        return self.fc(self.pool(self.conv2(self.relu(self.conv(x)))).flatten(1))
'''


def plus_net() -> nn.Module:
    namespace: dict = {}
    exec(compile(MODEL_SOURCE, "plusnet", "exec"), namespace)
    return namespace["PlusNet"]().eval()


def _background(index: int) -> np.ndarray:
    """A dim, real photo patch: the plus sign must stand out in brightness and shape."""
    import skimage.data

    photo = skimage.data.astronaut() if index % 2 else skimage.data.chelsea()
    top, left = 13 * index % 200, 29 * index % 250
    patch = photo[top : top + 96 : 3, left : left + 96 : 3][:SIZE, :SIZE]
    return (patch.astype(np.float64) * 0.3).astype(np.uint8)


def write_examples(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(COUNT):
        image = _background(i)
        if i in PASTED:
            (y, x), bright = PASTED[i]
            image[y - 1 : y + 2, x] = bright
            image[y, x - 1 : x + 2] = bright
        Image.fromarray(image).save(folder / f"ex{i:02d}.png")
    (folder / "README.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def example_folder(tmp_path_factory) -> Path:
    return write_examples(tmp_path_factory.mktemp("examples") / "set")


def probes() -> torch.Tensor:
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


QUIET = dict(progress=False, example_workers=0, attributions=False)


def test_the_pattern_channel_finds_exactly_the_pasted_images_at_their_positions(example_folder):
    report = cnnreport.build_report(plus_net(), probes(), examples=example_folder, example_channels=[0], example_top_k=3, **QUIET)
    ex = report.examples
    assert ex.count == COUNT and ex.source == str(example_folder)
    assert "skipped 1 file(s) in the examples folder that are not images" in ex.notes
    conv = next(layer for layer in ex.layers if layer.name == "conv")
    hits = conv.channels[0].hits
    assert [h.index for h in hits] == [7, 2, 9]  # brightest sign first
    assert [h.example for h in hits] == ["ex07.png", "ex02.png", "ex09.png"]
    assert [h.position for h in hits] == [PASTED[i][0] for i in (7, 2, 9)]
    # The response at the centre, by hand: the plus kernel (1 - 5/9 on the 5 plus cells, -5/9 on
    # the 4 corners) over the three channels (each /3), on pixel values v/255: the sign's 5
    # cells add 4/9 * v each; the 4 dim corners subtract 5/9 of theirs.
    for hit in hits:
        image = np.asarray(Image.open(example_folder / hit.example), dtype=np.float64) / 255.0
        y, x = hit.position
        window = image[y - 1 : y + 2, x - 1 : x + 2].mean(axis=2)
        kernel = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]]) - 5 / 9
        assert hit.value == pytest.approx(float((window * kernel).sum()), rel=1e-5)
    # Receptive field 3 px around the position, in input pixels (the first layer: stride 1).
    assert conv.receptive_field == 3 and conv.stride == 1
    assert [h.box for h in hits] == [(y - 1, x - 1, 3, 3) for y, x in (PASTED[i][0] for i in (7, 2, 9))]


def test_the_crops_hold_the_pattern_and_the_deeper_layer_sees_more(example_folder):
    model = plus_net()
    report = cnnreport.build_report(model, probes(), examples=example_folder, example_channels=[0], example_top_k=3, **QUIET)
    examples = ExampleImages(example_folder, image_size=(SIZE, SIZE), channels=3)
    from cnnreport.capture.examples import ExampleReducer

    reducer = ExampleReducer(["conv", "conv2"], k=3)
    with torch.no_grad(), reducer.attached(model):
        for i in range(COUNT):
            reducer.next_batch([i])
            model(examples[i][0][None])
    _, crops = example_set(reducer.partials, {}, examples, report.sections, report.layers, report.options, str(example_folder))
    conv_id = next(s.id for s in report.sections if s.name == "conv")
    for crop, i in zip(crops[(conv_id, 0)], (7, 2, 9)):
        bright = PASTED[i][1]
        assert crop.shape == (3, 3, 3)
        # The plus sign's five cells at full brightness, the corners dim.
        assert (crop[[0, 1, 1, 1, 2], [1, 0, 1, 2, 1]] == bright).all()
        assert (crop[[0, 0, 2, 2], [0, 2, 0, 2]] < 0.3 * 255 + 1).all()
    # conv2 (3x3, stride 2, after conv): receptive field 5 px, effective stride 2.
    conv2 = next(layer for layer in report.examples.layers if layer.name == "conv2")
    assert (conv2.receptive_field, conv2.stride) == (5, 2)
    for c in conv2.channels:
        for h in c.hits:
            # Output (y, x) of a 3x3 stride-2 padding-1 convolution over conv's 3x3 sees input
            # rows 2y-2 .. 2y+2: the crop (field 5 + stride 2 = 7 px) holds all of it.
            top, left, height, width = h.box
            y, x = h.position
            assert height <= 7 and width <= 7
            assert top <= max(0, 2 * y - 2) and top + height >= min(SIZE, 2 * y + 3)
            assert left <= max(0, 2 * x - 2) and left + width >= min(SIZE, 2 * x + 3)


def test_statistics_over_the_set_beside_the_probes_match_float64_torch(example_folder):
    model = plus_net()
    report = cnnreport.build_report(model, probes(), examples=example_folder, example_channels=2, **QUIET)
    conv = next(layer for layer in report.examples.layers if layer.name == "conv")
    examples = ExampleImages(example_folder, image_size=(SIZE, SIZE), channels=3)
    batch = torch.stack([examples[i][0] for i in range(COUNT)]).double()
    with torch.no_grad():
        out = torch.nn.functional.conv2d(batch, model.conv.weight.double(), model.conv.bias.double(), padding=1)
    expected = out.mean(dim=(0, 2, 3))
    assert conv.means == pytest.approx(expected.tolist(), rel=1e-5, abs=1e-7)
    zeros = (out.float() == 0).double().mean(dim=(0, 2, 3))
    assert conv.zero_fractions == pytest.approx(zeros.tolist(), abs=1e-12)
    # The two channels shown are the two of highest mean over the set.
    assert [c.channel for c in conv.channels] == torch.argsort(expected, descending=True)[:2].tolist()
    per_image_max = out.amax(dim=(2, 3))
    for c in conv.channels:
        assert c.max_mean == pytest.approx(float(per_image_max[:, c.channel].mean()), rel=1e-5)
        assert sum(c.max_histogram.counts) == COUNT
        assert len(c.max_histogram.edges) == len(c.max_histogram.counts) + 1
    # The probes' own channel statistics stay where they were, beside these.
    section = next(s for s in report.sections if s.name == "conv")
    assert len(section.channels.means) == len(conv.means) == 4


def test_a_channel_dead_on_the_probes_can_be_alive_over_the_set(example_folder):
    # Black probes: channel 0 (bias 0) is 0 everywhere, before and after the ReLU: constant on
    # the probes. Over the photos the plus sign drives it to its largest values.
    report = cnnreport.build_report(plus_net(), torch.zeros(2, 3, SIZE, SIZE), examples=example_folder, example_channels=[0], layers=["relu"], **QUIET)
    section = next(s for s in report.sections if s.name == "relu")
    assert 0 in section.channels.dead
    relu = report.examples.layers[0]
    assert relu.name == "relu" and 0 not in relu.dead
    assert relu.channels[0].hits[0].index == 7 and relu.channels[0].zero_fraction < 1.0


def test_the_model_is_left_as_it_was(example_folder):
    model = plus_net()
    model.conv2.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: m.training for n, m in model.named_modules()}
    cnnreport.build_report(model, probes(), examples=example_folder, **QUIET)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_shards_cover_the_set_once():
    assert shard(5, 0, 2) == [0, 2, 4] and shard(5, 1, 2) == [1, 3]
    assert sorted(shard(7, 0, 3) + shard(7, 1, 3) + shard(7, 2, 3)) == list(range(7))
    with pytest.raises(OptionError):
        shard(5, 2, 2)


def test_bad_examples_are_one_line_errors(tmp_path, example_folder):
    with pytest.raises(ProbeError, match="does not exist"):
        cnnreport.build_report(plus_net(), probes(), examples=tmp_path / "missing", **QUIET)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    with pytest.raises(ProbeError, match=r"holds no images \(1 file\(s\) of other types\)"):
        cnnreport.build_report(plus_net(), probes(), examples=empty, **QUIET)
    broken = write_examples(tmp_path / "broken")
    (broken / "ex05.png").write_bytes(b"not a png at all")
    with pytest.raises(ProbeError, match=r"cannot read example image .*ex05\.png") as info:
        cnnreport.build_report(plus_net(), probes(), examples=broken, **QUIET)
    assert "\n" not in info.value.one_line()
    with pytest.raises(OptionError, match=r"example channel\(s\) 9 out of range for conv, which has 4"):
        cnnreport.build_report(plus_net(), probes(), examples=example_folder, example_channels=[0, 9], **QUIET)
    with pytest.raises(OptionError, match="image probes"):
        cnnreport.build_report(plus_net(), None, input_size=(3, SIZE, SIZE), examples=example_folder, **QUIET)


def _cli(tmp_path: Path, folder: Path) -> tuple[Path, list[str]]:
    model_file = tmp_path / "plusnet.py"
    model_file.write_text(MODEL_SOURCE)
    probe_dir = tmp_path / "probes"
    probe_dir.mkdir(exist_ok=True)
    for i in (0, 1):
        Image.fromarray(_background(i + 30)).save(probe_dir / f"p{i}.png")
    args = ["generate", f"{model_file}:PlusNet", "--probes", str(probe_dir), "--examples", str(folder), "--channels", "2", "--example-k", "3", "--workers", "0", "-q"]
    return model_file, args


def test_cli_options_need_examples_and_are_checked(tmp_path, example_folder):
    from cnnreport.cli import main

    _, args = _cli(tmp_path, example_folder)
    no_examples = [a for a in args if a not in ("--examples", str(example_folder))]
    result = CliRunner().invoke(main, [*no_examples, "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "--channels chooses the channels that get examples, but no --examples folder is given" in result.output
    result = CliRunner().invoke(main, [*args[: args.index("--channels")], "--channels", "3,x", "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "--channels '3,x': give a count such as 16" in result.output


def _run_generate(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(Path(cnnreport.__file__).resolve().parent.parent), OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_two_torchrun_processes_give_the_single_process_report(tmp_path, example_folder):
    _, args = _cli(tmp_path, example_folder)
    single = _run_generate([sys.executable, "-m", "cnnreport", *args, "-o", "one.html", "--json", "one.json"], tmp_path)
    assert single.returncode == 0, single.stderr
    sharded = _run_generate(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", "-m", "cnnreport", *args, "-o", "two.html", "--json", "two.json"],
        tmp_path,
    )
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one["examples"]["count"] == two["examples"]["count"] == COUNT
    for a, b in zip(one["examples"]["layers"], two["examples"]["layers"]):
        assert [c["hits"] for c in a["channels"]] == [c["hits"] for c in b["channels"]]  # examples, positions, values
        assert b["means"] == pytest.approx(a["means"], rel=1e-6)
    # Everything else identical but the run's own provenance.
    for side in (one, two):
        side.pop("provenance")
        for layer in side["examples"]["layers"]:
            layer.pop("means")
            for c in layer["channels"]:
                c.pop("mean"), c.pop("max_mean")
    assert one == two
    assert not (tmp_path / "two.html.tmp").exists() and (tmp_path / "two.html").stat().st_size > 0


def test_torchrun_without_examples_is_refused(tmp_path, example_folder):
    _, args = _cli(tmp_path, example_folder)
    plain = [a for a in args[: args.index("--examples")]] + ["-q"]
    result = _run_generate([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29518", "-m", "cnnreport", *plain, "-o", "x.html"], tmp_path)
    assert result.returncode != 0
    assert "only --examples is split across processes" in result.stderr
    assert not (tmp_path / "x.html").exists()


class _SmallBatchesOnly(nn.Module):
    """Runs on the two probes, raises on a larger batch: a failure only the examples meet."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        if x.shape[0] > 2:
            raise RuntimeError("batch too large")
        return self.conv(x).mean((2, 3))


def test_a_forward_failing_on_the_examples_names_them(example_folder):
    from cnnreport.errors import ForwardError

    model = _SmallBatchesOnly().eval()
    with pytest.raises(ForwardError, match=r"examples ex00\.png \.\. ex04\.png failed: RuntimeError: batch too large"):
        cnnreport.build_report(model, probes(), examples=example_folder, example_batch_size=5, **QUIET)
    assert not model._forward_hooks and not model.conv._forward_hooks


class _DeadAndTwice(nn.Module):
    """conv's channel 3 is constant (zero weights and bias); conv2 runs twice; fc has no grid."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv.weight[3].zero_()
            self.conv.bias[3] = 0.0

    def forward(self, x):
        x = self.relu(self.conv(x))
        x = self.conv2(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def test_a_constant_channel_takes_no_place_and_has_no_hits(example_folder):
    model = _DeadAndTwice().eval()
    report = cnnreport.build_report(model, probes(), examples=example_folder, example_channels=4, **QUIET)
    conv = next(layer for layer in report.examples.layers if layer.name == "conv")
    assert conv.dead == [3]
    assert [c.channel for c in conv.channels] == sorted([0, 1, 2], key=lambda c: (-conv.means[c], c))
    listed = cnnreport.build_report(model, probes(), examples=example_folder, example_channels=[3, 0], **QUIET)
    channels = next(layer for layer in listed.examples.layers if layer.name == "conv").channels
    assert [c.channel for c in channels] == [3, 0] and channels[0].hits == [] and len(channels[1].hits) == 8


def test_per_position_layers_take_the_field_before_them_and_grids_have_positions(example_folder):
    model = _DeadAndTwice().eval()
    report = cnnreport.build_report(model, probes(), examples=example_folder, layers=["relu", "fc", "conv2"], example_channels=1, **QUIET)
    by_name = {layer.name: layer for layer in report.examples.layers}
    relu = by_name["relu"]
    assert (relu.receptive_field, relu.stride) == (3, 1)
    assert any("receptive field and stride of conv" in n for n in relu.notes)
    assert all(h.box[2] == 3 and h.box[3] == 3 for h in relu.channels[0].hits if 1 <= h.position[0] < SIZE - 1 and 1 <= h.position[1] < SIZE - 1)
    fc = by_name["fc"]
    assert all(h.position is None and h.box == (0, 0, SIZE, SIZE) for h in fc.channels[0].hits)
    assert "conv2 (call 2) show none" in " ".join(report.examples.notes)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["examples"]["layers"][[layer["name"] for layer in data["examples"]["layers"]].index("fc")]["channels"][0]["hits"][0]["position"] is None


def test_example_channels_must_be_a_count_or_indices(example_folder):
    for bad in ("12", 2.5, True, [], [1, -2], ["1"]):
        with pytest.raises(OptionError, match="example_channels must be a count"):
            cnnreport.build_report(plus_net(), probes(), examples=example_folder, example_channels=bad, **QUIET)


def test_an_output_that_the_next_run_would_read_as_an_image_is_refused(tmp_path, example_folder):
    from cnnreport.cli import main

    _, args = _cli(tmp_path, example_folder)
    for inside in (example_folder / "report.png", tmp_path / "probes" / "out.jpg"):
        result = CliRunner().invoke(main, [*args, "-o", str(inside)])
        assert result.exit_code == 2, result.output
        assert "the next run would read it as one of its files" in result.output
        assert not inside.exists()
    existing = example_folder / "ex03.png"
    result = CliRunner().invoke(main, [*args, "-o", str(existing)])
    assert result.exit_code == 2 and f"is {existing}, in the --examples folder {example_folder}: writing there would destroy an input" in " ".join(result.output.split())
    result = CliRunner().invoke(main, [*args[: args.index("--channels")], "--channels", "1,,2", "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "--channels '1,,2'" in result.output


def test_a_torchscript_model_is_refused_with_examples(example_folder):
    scripted = torch.jit.trace(plus_net(), probes())
    with pytest.raises(OptionError, match="TorchScript model's layers run outside Python"):
        cnnreport.build_report(scripted, probes(), examples=example_folder, **QUIET)
