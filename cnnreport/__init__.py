"""cnnreport: one self-contained HTML report of a PyTorch CNN and what it sees.

>>> from cnnreport import generate_report
>>> report = generate_report(model, "probes/", output="report.html", title="digits-cnn epoch 12")
>>> report.to_dict()["model"]["total_params"]

In a notebook, ``cnnreport.show(model, "probes/")`` builds the report and displays the page in
the output cell, writing no file.

The names below are imported on first use, so ``import cnnreport`` (and ``cnnreport --help``)
stays fast and does not load torch until a report is built.
"""

from __future__ import annotations

from typing import Any

from .support.version import __version__

_LAZY = {
    "generate_report": "report.pipeline",
    "build_report": "report.pipeline",
    "Report": "report.document",
    "ReportOptions": "datamodel",
    "CnnReportError": "errors",
    "diff_reports": "report.diff",
    "show": "report.notebook",
    "Run": "history.run",
    "ExampleImages": "io.examples",
}

__all__ = ["generate_report", "build_report", "show", "Run", "Report", "ReportOptions", "ExampleImages", "CnnReportError", "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cnnreport' has no attribute {name!r}")
    from importlib import import_module  # only on first use of a lazy name

    from .support.gcpause import paused_gc

    # Importing the pipeline makes tens of thousands of objects that all stay alive; with torch
    # loaded, the collector's full walks over them cost ~0.1 s of a fresh process's first report.
    with paused_gc():
        value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
