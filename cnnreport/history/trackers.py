"""Attach a report to the run a user already logs to: MLflow (as artifacts) or W&B (as an HTML
panel). Each library is an optional extra (``cnnreport[mlflow]``, ``cnnreport[wandb]``),
imported only inside its function.

Both attach to the run the caller has started and refuse when there is none, rather than
starting one: a report filed into a run nobody chose (MLflow's fluent API would start one in
the default experiment) is lost to its training.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import OptionError
from .snapshots import Snapshot


def _library(name: str, extra: str) -> Any:
    from importlib import import_module  # the tracker is an optional extra, loaded when used

    try:
        return import_module(name)
    except ImportError:
        raise ImportError(f"{name} is not installed: pip install 'cnnreport[{extra}]'") from None


def _is_report(value: Any) -> bool:
    return all(hasattr(value, name) for name in ("write", "to_html", "to_dict")) and not isinstance(value, Snapshot)


def log_to_mlflow(report_or_snapshot: Any, artifact_path: str = "cnnreport", *, run_id: str | None = None) -> list[str]:
    """Log the report's HTML and JSON as artifacts under ``artifact_path`` of the active MLflow
    run (or of ``run_id``); returns the artifact paths, e.g. ``cnnreport/step-000012.html``.

    Takes a :class:`~cnnreport.Report` (logged as ``report.html`` and ``report.json``) or a
    :class:`~cnnreport.history.snapshots.Snapshot` (its files, by their names). With no active
    run and no ``run_id``, raises :class:`~cnnreport.errors.OptionError` and starts none.
    """
    mlflow = _library("mlflow", "mlflow")
    if run_id is None and mlflow.active_run() is None:
        raise OptionError("no active MLflow run: call log_to_mlflow inside `with mlflow.start_run():`, or pass run_id=")
    with tempfile.TemporaryDirectory(prefix="cnnreport-mlflow-") as scratch:
        files = _files(report_or_snapshot, Path(scratch))
        for path in files:
            mlflow.log_artifact(str(path), artifact_path=artifact_path or None, run_id=run_id)
    return [f"{artifact_path}/{p.name}" if artifact_path else p.name for p in files]


def log_to_wandb(report_or_snapshot: Any, key: str = "cnnreport", *, step: int | None = None) -> None:
    """Log the report's page as a ``wandb.Html`` panel named ``key`` in the active W&B run
    (``wandb.init`` first; offline mode works). The page is logged as cnnreport wrote it (no
    W&B stylesheet injected). With no active run, raises :class:`~cnnreport.errors.OptionError`.
    """
    wandb = _library("wandb", "wandb")
    if wandb.run is None:
        raise OptionError("no active W&B run: call wandb.init(...) before log_to_wandb")
    if isinstance(report_or_snapshot, Snapshot):
        page = report_or_snapshot.report_html_path.read_text(encoding="utf-8")
    elif _is_report(report_or_snapshot):
        page = report_or_snapshot.to_html()
    else:
        raise OptionError(f"log_to_wandb takes a Report or a Snapshot, got {type(report_or_snapshot).__name__}")
    wandb.log({key: wandb.Html(page, inject=False, data_is_not_path=True)}, step=step)


def _files(report_or_snapshot: Any, scratch: Path) -> list[Path]:
    """The HTML and JSON files to attach: a snapshot's own, or a report's written to ``scratch``."""
    if isinstance(report_or_snapshot, Snapshot):
        return [report_or_snapshot.report_html_path, report_or_snapshot.report_json_path]
    if _is_report(report_or_snapshot):
        html, json_path = scratch / "report.html", scratch / "report.json"
        report_or_snapshot.write(html=os.fspath(html), json=os.fspath(json_path))
        return [html, json_path]
    raise OptionError(f"log_to_mlflow takes a Report or a Snapshot, got {type(report_or_snapshot).__name__}")
