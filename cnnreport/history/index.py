"""The index page of a history: one static page over every snapshot of a run or an archive.

Built from what each snapshot left beside its checkpoint (the snapshot record, the report's JSON
view) and from the checkpoints' own tensors, never from capture internals: a row per snapshot,
how far each layer's weights moved, each layer's activation statistics and the alerts across
snapshots, chosen layers' filters on one colour scale, and each probe's prediction.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..analysis.history import LayerTrend, WeightChange, activation_trends, weight_changes
from ..datamodel import Figure
from ..errors import OptionError
from ..figures.history_svg import heatmap_svg
from ..figures.images import draw_filters
from ..io.loading import read_checkpoint
from ..render.outputs import write_output_set
from ..render.views import environment
from ..support.version import __version__
from .snapshots import read_snapshots

#: Filter galleries drawn per evolving layer and snapshot.
EVOLUTION_FILTERS = 16


@dataclass
class IndexEntry:
    """One snapshot as the index shows it."""

    step: int | None
    epoch: int | None
    metrics: dict[str, float | None]
    report_href: str  # the report page, relative to the index
    checkpoint: str  # the checkpoint file, as its record names it
    report: dict[str, Any]  # the report's JSON view
    errors: int = 0
    warnings: int = 0
    infos: int = 0

    @property
    def label(self) -> str:
        if self.step is not None:
            return f"step {self.step}"
        return f"epoch {self.epoch}" if self.epoch is not None else Path(self.checkpoint).stem

    @property
    def short_label(self) -> str:
        """The label of a chart's column: the step alone."""
        return str(self.step) if self.step is not None else self.label


@dataclass
class FilterEvolution:
    """One layer's filters at every snapshot, drawn on one shared colour scale."""

    layer: str
    scale: float
    figures: list[Figure | None]  # per snapshot; None where the layer is missing
    note: str = ""


@dataclass
class HistoryIndex:
    """Everything the index page shows, computed once."""

    title: str
    entries: list[IndexEntry]
    metric_names: list[str]
    weight_changes: list[WeightChange]
    trends: list[LayerTrend]
    alert_rows: list[tuple[str, list[str | None]]]  # (kind · layer, worst severity per snapshot)
    evolutions: list[FilterEvolution]
    probes: list[str]
    predictions: list[list[str]]  # per probe, per snapshot: "label (p%)"
    charts: dict[str, str] = field(default_factory=dict)  # name -> inline SVG


def read_entries(folder: str | os.PathLike[str], index_path: str | os.PathLike[str]) -> list[IndexEntry]:
    """Every snapshot recorded in ``folder`` (:func:`~.snapshots.read_snapshots`: step order)
    whose report JSON is there. Raises :class:`OptionError` for a malformed record, or when
    there is no snapshot at all."""
    index_dir = Path(index_path).resolve().parent
    entries = []
    for snapshot in read_snapshots(folder):
        try:
            report = json.loads(snapshot.report_json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a record whose report was removed since: that snapshot is not in the index
        counts = {s: sum(1 for a in report.get("alerts") or [] if a.get("severity") == s) for s in ("error", "warning", "info")}
        entries.append(
            IndexEntry(
                step=snapshot.step,
                epoch=snapshot.epoch,
                metrics=dict(snapshot.metrics),
                report_href=os.path.relpath(snapshot.report_html_path.resolve(), index_dir),
                checkpoint=str(snapshot.checkpoint_path),
                report=report,
                errors=counts["error"],
                warnings=counts["warning"],
                infos=counts["info"],
            )
        )
    if not entries:
        raise OptionError(f"{folder}: no snapshots (no *.snapshot.json with its report); snapshot a run or give checkpoints first")
    return entries


def build_index(entries: Sequence[IndexEntry], *, title: str = "", evolve_layers: Sequence[str] = (), weights_key: str | None = None) -> HistoryIndex:
    """The index of ``entries``: reads each checkpoint's tensors for the weight changes and the
    filter evolution (``evolve_layers``: module-path globs; default the first convolution)."""
    states = [_state_dict(e.checkpoint, weights_key) for e in entries]
    changes = weight_changes(states)
    trends = activation_trends([e.report for e in entries])
    metric_names = sorted({name for e in entries for name in e.metrics})
    probes, predictions = _predictions(entries)
    index = HistoryIndex(
        title=title or _default_title(entries),
        entries=list(entries),
        metric_names=metric_names,
        weight_changes=changes,
        trends=trends,
        alert_rows=_alert_timeline(entries),
        evolutions=_evolutions(states, evolve_layers),
        probes=probes,
        predictions=predictions,
    )
    index.charts = _charts(index)
    return index


def write_index(
    folder: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    title: str = "",
    evolve_layers: Sequence[str] = (),
    weights_key: str | None = None,
) -> str:
    """Read the snapshots in ``folder`` and write their index page (default ``folder/index.html``)
    atomically; returns its path."""
    output = Path(output) if output is not None else Path(folder) / "index.html"
    index = build_index(read_entries(folder, output), title=title, evolve_layers=evolve_layers, weights_key=weights_key)
    write_output_set([(output, render_index(index))])
    return str(output)


def render_index(index: HistoryIndex) -> str:
    """The index page's HTML."""
    return environment().get_template("history.html.j2").render(index=index, version=__version__)


# -- the parts --------------------------------------------------------------------------------


def _state_dict(path: str, weights_key: str | None) -> dict[str, torch.Tensor]:
    try:
        return read_checkpoint(path, key=weights_key).state_dict
    except Exception:  # a checkpoint that moved or cannot be read: its column stays empty
        return {}


def _alert_timeline(entries: Sequence[IndexEntry]) -> list[tuple[str, list[str | None]]]:
    """A row per (kind, layer) alert found in any snapshot, its severity in each (None: absent)."""
    rank = {"info": 0, "warning": 1, "error": 2}
    rows: dict[str, list[str | None]] = {}
    for column, entry in enumerate(entries):
        for alert in entry.report.get("alerts") or []:
            key = f"{alert.get('kind', '')} · {alert.get('layer') or 'model'}"
            row = rows.setdefault(key, [None] * len(entries))
            severity = alert.get("severity")
            if row[column] is None or rank.get(str(severity), 0) > rank.get(str(row[column]), 0):
                row[column] = severity
    return sorted(rows.items(), key=lambda item: (-max(rank.get(str(s), -1) for s in item[1]), item[0]))


def _predictions(entries: Sequence[IndexEntry]) -> tuple[list[str], list[list[str]]]:
    names: list[str] = []
    for entry in entries:
        for probe in entry.report.get("probes") or []:
            if probe.get("name") not in names:
                names.append(probe.get("name"))
    table = []
    for name in names:
        row = []
        for entry in entries:
            probe = next((p for p in entry.report.get("probes") or [] if p.get("name") == name), None)
            top = (probe or {}).get("predictions") or []
            row.append(f"{top[0].get('label')} ({100 * float(top[0].get('probability') or 0):.0f}%)" if top else "–")
        table.append(row)
    return names, table


def _evolutions(states: Sequence[Mapping[str, torch.Tensor]], patterns: Sequence[str]) -> list[FilterEvolution]:
    """The chosen convolutions' filters across snapshots on one scale (the largest |weight| over
    every snapshot of the filters drawn), so a reader sees them form."""
    first = next((s for s in states if s), {})
    convs = [k[: -len(".weight")] for k, v in first.items() if k.endswith(".weight") and isinstance(v, torch.Tensor) and v.dim() in (3, 4, 5)]
    if patterns:
        chosen = [name for name in convs if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
        if not chosen:
            raise OptionError(f"--evolve-layers {', '.join(patterns)}: no convolution matches; the first few: {', '.join(convs[:5]) or 'none'}")
    else:
        chosen = convs[:1]
    out = []
    for layer in chosen:
        weights = [s.get(layer + ".weight") for s in states]
        drawn = [w[:EVOLUTION_FILTERS].detach().float() for w in weights if isinstance(w, torch.Tensor)]
        finite = [float(w[torch.isfinite(w)].abs().max()) for w in drawn if bool(torch.isfinite(w).any())]
        scale = max(finite) if finite else 0.0
        figures = []
        note = ""
        for w in weights:
            if not isinstance(w, torch.Tensor) or w.dim() not in (3, 4, 5):
                figures.append(None)
                continue
            gallery = draw_filters(w, layer=layer, max_filters=EVOLUTION_FILTERS, scale=scale)
            figures.append(gallery.figure)
            note = gallery.note
        out.append(FilterEvolution(layer=layer, scale=scale, figures=figures, note=note))
    return out


def _charts(index: HistoryIndex) -> dict[str, str]:
    columns = [e.short_label for e in index.entries]
    charts = {}
    if index.weight_changes and len(columns) > 1:
        rows = [c.layer for c in index.weight_changes]
        charts["weights_previous"] = heatmap_svg(rows, columns, [c.from_previous for c in index.weight_changes], title="weight change from the previous snapshot, by step", log=True, fmt="{:.2%}")
        charts["weights_first"] = heatmap_svg(rows, columns, [c.from_first for c in index.weight_changes], title="weight change from the first snapshot, by step", log=True, fmt="{:.2%}")
    if index.trends:
        rows = [t.layer for t in index.trends]
        charts["mean"] = heatmap_svg(rows, columns, [t.mean for t in index.trends], title="activation mean")
        charts["std"] = heatmap_svg(rows, columns, [t.std for t in index.trends], title="activation std")
        charts["frac_zero"] = heatmap_svg(rows, columns, [t.frac_zero for t in index.trends], title="fraction of zeros", fmt="{:.1%}")
        charts["dead"] = heatmap_svg(rows, columns, [[None if d is None else float(d) for d in t.dead_channels] for t in index.trends], title="dead channels", fmt="{:.0f}")
    return charts


def _default_title(entries: Sequence[IndexEntry]) -> str:
    name = (entries[0].report.get("model") or {}).get("class_name") or "model"
    return f"History of {name}: {len(entries)} snapshot{'' if len(entries) == 1 else 's'}"


__all__ = ["FilterEvolution", "HistoryIndex", "IndexEntry", "build_index", "read_entries", "render_index", "write_index"]
