"""Attaching a report to an MLflow run (artifacts) and a W&B run (an HTML panel), against the
real libraries in their local modes: a file: tracking URI, and W&B offline."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

import cnnreport
from cnnreport.errors import OptionError
from cnnreport.history.trackers import log_to_mlflow, log_to_wandb
from training_models import DigitsCNN, probes

FAST = dict(max_channels=4, tile_size=16)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    torch.manual_seed(3)
    run = cnnreport.Run(tmp_path_factory.mktemp("run"), probes=probes(), **FAST)
    return run.snapshot(DigitsCNN(), step=12, epoch=3, metrics={"val_acc": 0.5})


@pytest.fixture
def mlflow(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind a flag
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    yield mlflow
    while mlflow.active_run() is not None:
        mlflow.end_run()


def test_mlflow_artifacts_of_a_snapshot_and_of_a_report(mlflow, snapshot, tmp_path):
    report = cnnreport.build_report(DigitsCNN(), probes(), title="digits at rest", **FAST, progress=False)
    with mlflow.start_run() as active:
        logged = log_to_mlflow(snapshot)
        logged += log_to_mlflow(report, artifact_path="reports/final")
    assert logged == ["cnnreport/step-000012.html", "cnnreport/step-000012.json", "reports/final/report.html", "reports/final/report.json"]
    client = mlflow.tracking.MlflowClient()
    assert sorted(a.path for a in client.list_artifacts(active.info.run_id, "cnnreport")) == ["cnnreport/step-000012.html", "cnnreport/step-000012.json"]
    out = tmp_path / "downloaded"
    out.mkdir()
    got = client.download_artifacts(active.info.run_id, "cnnreport", str(out))
    assert (out / "cnnreport" / "step-000012.html").read_bytes() == snapshot.report_html_path.read_bytes()
    assert os.path.samefile(got, out / "cnnreport")
    final = client.download_artifacts(active.info.run_id, "reports/final/report.json", str(out))
    assert json.loads(open(final, encoding="utf-8").read())["title"] == "digits at rest"
    assert sorted(a.path for a in client.list_artifacts(active.info.run_id, "reports/final")) == ["reports/final/report.html", "reports/final/report.json"]


def test_mlflow_without_an_active_run_starts_none(mlflow, snapshot):
    with pytest.raises(OptionError, match="no active MLflow run"):
        log_to_mlflow(snapshot)
    assert mlflow.active_run() is None
    client = mlflow.tracking.MlflowClient()
    experiments = client.search_experiments()
    assert [len(client.search_runs([e.experiment_id])) for e in experiments] == [0] * len(experiments)


def test_mlflow_to_a_run_by_id_after_it_ended(mlflow, snapshot):
    with mlflow.start_run() as finished:
        pass
    assert log_to_mlflow(snapshot, artifact_path="", run_id=finished.info.run_id) == ["step-000012.html", "step-000012.json"]
    names = sorted(a.path for a in mlflow.tracking.MlflowClient().list_artifacts(finished.info.run_id))
    assert names == ["step-000012.html", "step-000012.json"]


_WANDB_RUN = r"""
import sys, wandb
from cnnreport.history.trackers import log_to_wandb
from cnnreport.history.snapshots import read_snapshot
snap = read_snapshot(sys.argv[1])
run = wandb.init(project="cnnreport-test", mode="offline", settings=wandb.Settings(silent=True, x_disable_stats=True))
log_to_wandb(snap)
log_to_wandb(snap, key="later", step=5)
run.finish()
"""


def _wandb_history(path):
    """The history rows of an offline run's ``.wandb`` file, each as {key path: value}.

    The file is W&B's transaction log: a 7-byte header (``:W&B``, magic, version), then
    LevelDB's log format (32 KiB blocks of chunks: crc32, little-endian length, type 1 full,
    2 first, 3 middle, 4 last) holding ``Record`` protobufs."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    rows, pos, pending, block = [], 7, b"", 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):  # the block's padding
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({".".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.history.item})
    return rows


def test_wandb_offline_html_panel(snapshot, tmp_path):
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    # A process of its own: wandb.init patches the process (its service, its atexit) for good.
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", _WANDB_RUN, str(snapshot.record_path)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    rows = _wandb_history(log)
    page = snapshot.report_html_path.read_bytes()
    assert [(r["_step"], r.get("cnnreport._type"), r.get("later._type")) for r in rows] == [(0, "html-file", None), (5, None, "html-file")]
    for row, key in zip(rows, ("cnnreport", "later"), strict=True):
        assert row[f"{key}.sha256"] == hashlib.sha256(page).hexdigest()
        assert row[f"{key}.size"] == len(page)
        assert (log.parent / "files" / row[f"{key}.path"]).read_bytes() == page  # as written, nothing injected


def test_wandb_without_a_run_is_refused(snapshot):
    wandb = pytest.importorskip("wandb", reason="the wandb extra is not installed")
    assert wandb.run is None
    with pytest.raises(OptionError, match="no active W&B run"):
        log_to_wandb(snapshot)


def test_something_else_is_refused(mlflow):
    with mlflow.start_run():
        with pytest.raises(OptionError, match="takes a Report or a Snapshot, got str"):
            log_to_mlflow("report.html")
