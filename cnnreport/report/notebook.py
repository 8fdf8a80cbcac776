"""Reports in a notebook: :func:`show` builds one and displays it in the output cell."""

from __future__ import annotations

from typing import Any

from torch import nn

from .document import Report
from .pipeline import build_report


def show(model: nn.Module, probes: Any = None, **options: Any) -> Report:
    """Build the report of ``model`` on ``probes`` and display it inline; no file is written.

    >>> import cnnreport
    >>> report = cnnreport.show(model, "probes/", title="digits-cnn epoch 12")

    ``probes`` and ``options`` are :func:`cnnreport.build_report`'s (``title=``, ``layers=[...]``,
    ``max_channels=``, ``input_size=``, ``progress=False`` ...). In Jupyter the page appears in
    the output cell inside a sandboxed frame (``Report._repr_html_``), its scripts working there
    and none of them running on the notebook's own page; progress shows as a notebook bar while
    the report is built. Without IPython nothing is displayed. Returns the :class:`Report`
    either way: ``report.write_html(path)`` saves the page later, ``report.to_dict()`` is its
    JSON view.
    """
    report = build_report(model, probes, **options)
    try:
        from IPython.display import display  # only where IPython is installed
    except ImportError:
        return report
    display(report)
    return report
