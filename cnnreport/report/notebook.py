"""Reports in a notebook: :func:`show` builds one and displays it in the output cell."""

from __future__ import annotations

from typing import Any

from torch import nn

from .pipeline import build_report


def show(model: nn.Module, probes: Any = None, **options: Any) -> None:
    """Build the report of ``model`` on ``probes`` and display it inline; no file is written.

    >>> import cnnreport
    >>> cnnreport.show(model, "probes/", title="digits-cnn epoch 12")

    ``probes`` and ``options`` are :func:`cnnreport.build_report`'s (``title=``, ``layers=[...]``,
    ``max_channels=``, ``input_size=``, ``progress=False`` ...). In Jupyter the page appears in
    the output cell inside a sandboxed frame (``Report._repr_html_``), its scripts working there
    and none of them running on the notebook's own page; progress shows as a notebook bar while
    the report is built. Returns nothing, so a cell ending in ``show(...)`` shows the page once
    (a returned report would be shown a second time, as the cell's value). To keep the report,
    ``report = cnnreport.build_report(...)``: a :class:`Report` left as a cell's value displays
    the same way, and ``report.write_html(path)`` saves it. Without IPython, raises
    :class:`ImportError` saying so (there is nowhere to display to).
    """
    try:
        from IPython.display import display  # only where IPython is installed
    except ImportError:
        raise ImportError("cnnreport.show displays in Jupyter and needs IPython; elsewhere use build_report(...).write_html(path)") from None
    display(build_report(model, probes, **options))
