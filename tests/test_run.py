"""cnnreport.Run: snapshots from a plain training loop (a small CNN trained on 8x8 digits here).

Each snapshot writes a checkpoint, a report (HTML + JSON) and, last, its record; the training
around it goes on exactly as if no snapshot had been taken.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnreport
from cnnreport.errors import ForwardError, OptionError, WeightsError
from cnnreport.history.snapshots import read_snapshots
from training_models import DigitsCNN, accuracy, digits, probes, train_epoch

FAST = dict(max_channels=4, tile_size=16)


def _trained_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = DigitsCNN()
    model.conv1.requires_grad_(False)  # frozen: the optimizer holds it, its grad stays None
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return model, optimizer


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_one_report_and_record_per_snapshot_call(tmp_path):
    folder = tmp_path / "runs" / "exp1"
    run = cnnreport.Run(folder, probes=probes(), **FAST)
    model, optimizer = _trained_setup()
    images, labels = digits(256)
    states, accs = {}, {}
    for epoch in range(3):
        train_epoch(model, optimizer, images, labels)
        if epoch in (0, 2):
            accs[epoch] = accuracy(model, images, labels)
            states[epoch] = _state(model)
            snap = run.snapshot(model, step=epoch * 4, epoch=epoch, metrics={"val_acc": accs[epoch], "loss": torch.tensor(float("nan"))})
            assert snap.step == epoch * 4
    assert sorted(p.name for p in folder.iterdir()) == [
        f"step-{s:06d}{suffix}" for s in (0, 8) for suffix in (".html", ".json", ".pt", ".snapshot.json")
    ]
    for epoch, step in ((0, 0), (2, 8)):
        name = f"step-{step:06d}"
        record = json.loads((folder / f"{name}.snapshot.json").read_text())
        assert record == {
            "format": "cnnreport-snapshot/1",
            "step": step,
            "epoch": epoch,
            "metrics": {"val_acc": accs[epoch], "loss": None},
            "checkpoint": f"{name}.pt",
            "report_html": f"{name}.html",
            "report_json": f"{name}.json",
        }
        page = json.loads((folder / f"{name}.json").read_text())
        assert page["model"]["total_params"] == 40 + 296 + 2890
        assert page["title"] == f"exp1 · step {step}"
        saved = torch.load(folder / f"{name}.pt", weights_only=True)
        assert saved.keys() == states[epoch].keys()
        for key, value in states[epoch].items():
            assert torch.equal(saved[key], value), key
        assert "<html" in (folder / f"{name}.html").read_text()[:200].lower()
    # The frozen layer's weights are the same in both checkpoints; the trained one's are not.
    first, last = (torch.load(folder / f"step-{s:06d}.pt", weights_only=True) for s in (0, 8))
    assert torch.equal(first["conv1.weight"], last["conv1.weight"])
    assert not torch.equal(first["conv2.weight"], last["conv2.weight"])
    assert [(s.step, s.epoch) for s in read_snapshots(folder)] == [(0, 0), (8, 2)]


def _train(snapshot_dir=None, grad_mode=True):
    """Three epochs; with ``snapshot_dir`` a snapshot after the first and second, taken
    mid-loop (grads of the last step still held, submodules' flags mixed). Returns what the
    training leaves: model and optimizer state, a mid-run observation, and the next RNG draws."""
    model, optimizer = _trained_setup(seed=1)
    images, labels = digits(256, offset=300)
    run = cnnreport.Run(snapshot_dir, probes=probes(), **FAST) if snapshot_dir else None
    random.seed(7)
    np.random.seed(7)
    seen, modes = [], []
    for epoch in range(3):
        train_epoch(model, optimizer, images, labels)
        model.drop.eval()  # a mixed train/eval state must come back as it was
        before = (_state(model), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        if run is not None and epoch < 2:
            with torch.set_grad_enabled(grad_mode):
                run.snapshot(model, step=epoch, metrics={"epoch": epoch})
                modes.append(torch.is_grad_enabled())
        after = (_state(model), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        flags = {n: m.training for n, m in model.named_modules()}
        needs = {n: p.requires_grad for n, p in model.named_parameters()}
        seen.append((before, after, flags, needs))
    draws = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    return model, optimizer, seen, modes, draws


def _assert_same(a, b, path="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.mark.parametrize("grad_mode", [True, False])
def test_snapshots_leave_the_training_as_it_would_have_been(tmp_path, grad_mode):
    plain_model, plain_opt, plain_seen, _, plain_draws = _train()
    model, optimizer, seen, modes, draws = _train(tmp_path / "run", grad_mode=grad_mode)
    assert modes == [grad_mode, grad_mode]  # grad mode as the caller had it, after each snapshot
    for epoch, (before, after, flags, needs) in enumerate(seen):
        _assert_same(after, before, f"epoch {epoch}: model and grads across the snapshot")
        assert flags == {"": True, "conv1": True, "conv2": True, "drop": False, "head": True}
        assert needs == {"conv1.weight": False, "conv1.bias": False, "conv2.weight": True, "conv2.bias": True, "head.weight": True, "head.bias": True}
    _assert_same(seen, plain_seen, "the run's observations")
    _assert_same(_state(model), _state(plain_model), "final weights")
    _assert_same(optimizer.state_dict(), plain_opt.state_dict(), "optimizer")
    assert optimizer.state_dict()["state"][2]["step"] == torch.tensor(12.0)  # 3 epochs x 4 batches, conv2.weight
    _assert_same(draws, plain_draws, "RNG draws after training")
    assert len(read_snapshots(tmp_path / "run")) == 2


def test_options_are_checked_when_the_run_is_made(tmp_path):
    with pytest.raises(OptionError, match="max_chanels"):
        cnnreport.Run(tmp_path / "typo", probes=probes(), max_chanels=4)
    with pytest.raises(OptionError, match="no-such-probes"):
        cnnreport.Run(tmp_path / "missing", probes=tmp_path / "no-such-probes")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing created for a refused run


def test_a_checkpoint_the_user_saved_is_recorded_not_rewritten(tmp_path):
    model, _ = _trained_setup()
    inside = tmp_path / "run" / "ckpts" / "epoch5.pt"
    inside.parent.mkdir(parents=True)
    torch.save(model.state_dict(), inside)
    outside = tmp_path / "elsewhere.pt"
    torch.save(model.state_dict(), outside)
    run = cnnreport.Run(tmp_path / "run", probes=probes(), **FAST)
    a = run.snapshot(model, step=5, checkpoint=inside)
    b = run.snapshot(model, step=6, checkpoint=str(outside))
    assert json.loads(a.record_path.read_text())["checkpoint"] == "ckpts/epoch5.pt"
    assert json.loads(b.record_path.read_text())["checkpoint"] == outside.resolve().as_posix()
    assert sorted(p.name for p in (tmp_path / "run").glob("*.pt")) == []
    page = json.loads((tmp_path / "run" / "step-000005.json").read_text())
    import hashlib

    assert page["provenance"]["checkpoint_sha256"] == hashlib.sha256(inside.read_bytes()).hexdigest()
    with pytest.raises(WeightsError, match="gone.pt"):
        run.snapshot(model, step=7, checkpoint=tmp_path / "gone.pt")
    assert [s.step for s in read_snapshots(tmp_path / "run")] == [5, 6]


class _Breaks(DigitsCNN):
    def forward(self, x):
        raise RuntimeError("broken on purpose")


def test_no_record_without_its_report(tmp_path):
    run = cnnreport.Run(tmp_path, probes=probes(), **FAST)
    model = DigitsCNN()
    run.snapshot(model, step=3)
    model.__class__ = _Breaks  # the same weights, now failing forward
    with pytest.raises(ForwardError):
        run.snapshot(model, step=3)  # a retaken step whose report fails
    with pytest.raises(ForwardError):
        run.snapshot(model, step=4)
    assert sorted(p.name for p in tmp_path.glob("*.snapshot.json")) == []
    assert read_snapshots(tmp_path) == []


def test_records_read_back_by_step_not_by_name(tmp_path):
    run = cnnreport.Run(tmp_path, probes=probes(), **FAST)
    model = DigitsCNN()
    for step in (1_000_000, 999_999, 2):
        run.snapshot(model, step=step, metrics={"m": step / 2})
    snaps = read_snapshots(tmp_path)
    assert [s.step for s in snaps] == [2, 999_999, 1_000_000]
    assert [s.metrics for s in snaps] == [{"m": 1.0}, {"m": 499_999.5}, {"m": 500_000.0}]
    assert snaps[2].report_html_path == tmp_path / "step-1000000.html"


@pytest.mark.parametrize(
    "metrics, message",
    [({"acc": "high"}, "'acc' must be a number"), ({"v": torch.ones(2)}, "'v' must be a number"), ({3: 1.0}, "names must be strings")],
)
def test_metrics_that_are_not_numbers_are_refused(tmp_path, metrics, message):
    run = cnnreport.Run(tmp_path, probes=probes(), **FAST)
    with pytest.raises(OptionError, match=message):
        run.snapshot(DigitsCNN(), step=0, metrics=metrics)
    assert list(tmp_path.iterdir()) == []


def test_metric_values_as_json_numbers(tmp_path):
    run = cnnreport.Run(tmp_path, probes=probes(), **FAST)
    snap = run.snapshot(DigitsCNN(), step=1, metrics={"a": np.float16(0.5), "b": torch.tensor(3, dtype=torch.int64), "c": float("inf"), "d": -0.0})
    record = json.loads(snap.record_path.read_text())
    assert record["metrics"] == {"a": 0.5, "b": 3.0, "c": None, "d": 0.0}
    assert math.copysign(1, record["metrics"]["d"]) == -1


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: {**r, "format": "cnnreport-snapshot/2"}, "format is not 'cnnreport-snapshot/1'"),
        (lambda r: {**r, "step": 13}, "name says step 12 but it records step 13"),
        (lambda r: {**r, "step": -1}, "step must be a whole number >= 0"),
        (lambda r: {**r, "epoch": 1.5}, "epoch must be a whole number >= 0"),
        (lambda r: {**r, "metrics": {"acc": "0.9"}}, "metrics must map names to numbers or null"),
        (lambda r: {**r, "report_json": ""}, "'report_json' must name a file"),
    ],
)
def test_a_malformed_record_is_refused_naming_its_file(tmp_path, change, message):
    record = {"format": "cnnreport-snapshot/1", "step": 12, "epoch": 3, "metrics": {"acc": 0.5}, "checkpoint": "a.pt", "report_html": "a.html", "report_json": "a.json"}
    (tmp_path / "step-000012.snapshot.json").write_text(json.dumps(change(record)))
    with pytest.raises(OptionError, match="step-000012.snapshot.json is not a cnnreport snapshot record: .*" + re.escape(message)):
        read_snapshots(tmp_path)


def test_a_record_with_nan_is_refused(tmp_path):
    (tmp_path / "step-000001.snapshot.json").write_text('{"format": "cnnreport-snapshot/1", "step": 1, "epoch": null, "metrics": {"a": NaN}, "checkpoint": "a.pt", "report_html": "a.html", "report_json": "a.json"}')
    with pytest.raises(OptionError, match="NaN is not JSON"):
        read_snapshots(tmp_path)
    (tmp_path / "step-000001.snapshot.json").write_text('{"format": "cnnreport-snapshot/1", "step": 1, "epoch": null, "metrics": {"a": null, "b": 2}, "checkpoint": "/abs/a.pt", "report_html": "a.html", "report_json": "a.json"}')
    (tmp_path / "notes.json").write_text("{}")  # not a record: not read
    (snap,) = read_snapshots(tmp_path)
    assert (snap.step, snap.epoch, snap.metrics, snap.checkpoint_path) == (1, None, {"a": None, "b": 2.0}, Path("/abs/a.pt"))


def test_files_get_the_users_mode_not_a_temp_files(tmp_path):
    old = os.umask(0o027)
    try:
        snap = cnnreport.Run(tmp_path, probes=probes(), **FAST).snapshot(DigitsCNN(), step=1)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (snap.record_path, snap.checkpoint_path)}
    assert modes == {"step-000001.snapshot.json": 0o640, "step-000001.pt": 0o640}


def test_the_index_reads_a_runs_records_and_the_run_reads_the_archives(tmp_path):
    from cnnreport.history.index import read_entries
    from cnnreport.history.snapshots import Snapshot, write_record

    run = cnnreport.Run(tmp_path, probes=probes(), **FAST)
    run.snapshot(DigitsCNN(), step=10, epoch=1, metrics={"val_acc": 0.25})
    run.snapshot(DigitsCNN(), step=4, epoch=0, metrics={"val_acc": float("nan")})
    entries = read_entries(tmp_path, tmp_path / "index.html")
    assert [(e.step, e.epoch, e.metrics, e.report_href, Path(e.checkpoint).name) for e in entries] == [
        (4, 0, {"val_acc": None}, "step-000004.html", "step-000004.pt"),
        (10, 1, {"val_acc": 0.25}, "step-000010.html", "step-000010.pt"),
    ]
    # A record of an archived checkpoint with no number in its name: no step, read last.
    write_record(Snapshot(folder=tmp_path, step=None, epoch=None, checkpoint="final.pt", report_html="final.html", report_json="final.json", name="final.snapshot.json"))
    assert [(s.step, s.name) for s in read_snapshots(tmp_path)] == [(4, "step-000004.snapshot.json"), (10, "step-000010.snapshot.json"), (None, "final.snapshot.json")]


def test_a_reader_listing_the_folder_mid_snapshot_sees_no_unfinished_file(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def replace_and_look(src, dst, *args, **kwargs):
        seen.append((Path(dst).name, sorted(p.name for p in tmp_path.glob("*.snapshot.json")), sorted(p.name for p in tmp_path.glob("*.pt"))))
        return real_replace(src, dst, *args, **kwargs)

    run = cnnreport.Run(tmp_path, probes=probes(), **FAST)
    monkeypatch.setattr(os, "replace", replace_and_look)
    run.snapshot(DigitsCNN(), step=2)
    monkeypatch.undo()
    # Each file appears under its name only by its own replace, the record last of all.
    assert seen == [
        ("step-000002.pt", [], []),
        ("step-000002.html", [], ["step-000002.pt"]),
        ("step-000002.json", [], ["step-000002.pt"]),
        ("step-000002.snapshot.json", [], ["step-000002.pt"]),
    ]
