"""The two documents the pipeline builds, the report and the diff, with their views (HTML, JSON, Markdown) and ``write``.

Each is built once, as a value, by :func:`cnnreport.build_report` or :func:`cnnreport.diff_reports`;
the dataclasses they hold live in :mod:`cnnreport.datamodel`. Rendering is :mod:`cnnreport.render`'s,
which sees these classes only as type hints, so the views below can call it without a cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..analysis.diff import ActivationChange, DiffSide, FilterComparison, LayerChange, PredictionChange, WeightChange
from ..datamodel import (
    Alert,
    Attribution,
    ExampleSet,
    ForwardFailure,
    LayerRow,
    LayerSection,
    LayerSpectrum,
    ModelSummary,
    ProbeInfo,
    Provenance,
    ReportOptions,
    _plain,
)
from ..render.diff_views import diff_json, render_diff_html, render_diff_markdown
from ..render.views import framed_html, provenance_inputs, render_html, render_markdown, report_json, write_html, write_json, write_markdown, write_views


@dataclass
class Report:
    """Everything the page shows. Build it with :func:`cnnreport.build_report`."""

    title: str
    model: ModelSummary
    layers: list[LayerRow]
    sections: list[LayerSection]
    probes: list[ProbeInfo]
    options: ReportOptions
    provenance: Provenance
    alerts: list[Alert] = field(default_factory=list)
    attributions: list[Attribution] = field(default_factory=list)
    synthetic_input: bool = False
    notes: list[str] = field(default_factory=list)
    graph_svg: str = ""
    graph_full_svg: str = ""
    graph_group_svgs: dict[str, str] = field(default_factory=dict)  # block token -> view with it opened
    failure: ForwardFailure | None = None
    # Probes the statistics cover; ``probes`` lists the first ``options.max_probes`` of them.
    probe_count: int = 0
    # Each convolution and linear layer's weight spectrum (``ReportOptions.spectral``); None: not asked for.
    spectral: list[LayerSpectrum] | None = None
    # What each section layer's channels respond to over a large example set (``examples=``); None: not asked for.
    examples: ExampleSet | None = None

    def __post_init__(self) -> None:
        # A report built outside the pipeline counts the probes it lists.
        if not self.probe_count:
            self.probe_count = len(self.probes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of everything the page shows, figures excepted."""
        return _plain(self)

    def to_html(self) -> str:
        return render_html(self)

    def _repr_html_(self) -> str:
        """How Jupyter shows a report: the page in a sandboxed inline frame, scripts working
        inside it and none of them on the notebook's page (see :func:`cnnreport.show`)."""
        return framed_html(render_html(self), self.title)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # IPython's text/plain beside the frame: one line, not the dataclass's whole repr
        # (figures included, megabytes) stored in every notebook that shows a report.
        printer.text(f"<cnnreport Report {self.title!r}: {len(self.layers)} layers, {self.probe_count} probes, {len(self.alerts)} alerts>")

    def write_html(self, path: str) -> str:
        return write_html(self, path)

    def write_json(self, path: str) -> str:
        return write_json(self, path)

    def write_markdown(self, path: str) -> str:
        return write_markdown(self, path)

    def write(self, html: str | None = None, json: str | None = None, markdown: str | None = None) -> list[str]:
        """Write the views asked for as one set: all are rendered first, then all replace their
        files together, or none does (an existing report is never left beside a new JSON)."""
        views = [(p, r) for p, r in ((html, lambda: render_html(self)), (json, lambda: report_json(self)), (markdown, lambda: render_markdown(self))) if p]
        inputs = provenance_inputs(self.provenance) + [("the probe", p.source) for p in self.probes if p.source]
        return write_views(views, inputs)


@dataclass
class DiffReport:
    """Everything the diff page shows. Build it with :func:`diff_reports`."""

    title: str
    old: DiffSide
    new: DiffSide
    architecture: list[LayerChange]
    unchanged_layers: int
    weight_changes: list[WeightChange]
    activation_changes: list[ActivationChange]
    predictions: list[PredictionChange]
    galleries: list[FilterComparison]
    alerts_appeared: list[Alert]
    alerts_disappeared: list[Alert]
    alerts_kept: int
    options: ReportOptions
    notes: list[str] = field(default_factory=list)

    @property
    def param_delta(self) -> int:
        return self.new.model.total_params - self.old.model.total_params

    @property
    def mult_adds_delta(self) -> int:
        return self.new.model.mult_adds - self.old.model.mult_adds

    @property
    def predictions_changed(self) -> int:
        return sum(1 for p in self.predictions if p.changed)

    @property
    def identical_weights(self) -> bool:
        """Same fingerprint: the two state dicts hold bit-identical tensors."""
        return bool(self.old.provenance.model_fingerprint) and self.old.provenance.model_fingerprint == self.new.provenance.model_fingerprint

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of everything the page shows, figures excepted."""
        out = _plain(self)
        out["param_delta"] = self.param_delta
        out["mult_adds_delta"] = self.mult_adds_delta
        out["predictions_changed"] = self.predictions_changed
        out["identical_weights"] = self.identical_weights
        return out

    def to_html(self) -> str:
        return render_diff_html(self)

    def _repr_html_(self) -> str:
        """How Jupyter shows a diff: the page in a sandboxed inline frame (see :meth:`Report._repr_html_`)."""
        return framed_html(render_diff_html(self), self.title)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"<cnnreport DiffReport {self.title!r}: {len(self.weight_changes)} weight changes, {self.predictions_changed} predictions changed>")

    def write_html(self, path: str) -> str:
        return self.write(html=path)[0]

    def write_json(self, path: str) -> str:
        return self.write(json=path)[0]

    def write_markdown(self, path: str) -> str:
        return self.write(markdown=path)[0]

    def write(self, html: str | None = None, json: str | None = None, markdown: str | None = None) -> list[str]:
        """Write the views asked for as one set (see :meth:`cnnreport.report.Report.write`)."""
        views = [(p, r) for p, r in ((html, lambda: render_diff_html(self)), (json, lambda: diff_json(self)), (markdown, lambda: render_diff_markdown(self))) if p]
        return write_views(views, provenance_inputs(self.old.provenance, self.new.provenance))
