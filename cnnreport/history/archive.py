"""A history from an archive of checkpoints: one report per checkpoint, kept beside it and reused
while it is current, then the index page over all of them."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..datamodel import ReportOptions
from ..errors import CnnReportError, OptionError
from ..io.provenance import default_provenance, model_fingerprint
from ..report.pipeline import build_report
from ..support.version import __version__
from .index import write_index
from .snapshots import RECORD_SUFFIX, Snapshot, write_record

_DIGITS = re.compile(r"(\d+)")


@dataclass
class ArchivedReport:
    """What :func:`report_checkpoints` did for one checkpoint."""

    checkpoint: str
    step: int | None
    html: str
    json: str
    reused: bool  # the report beside it was current: nothing was built


def checkpoint_step(path: str | os.PathLike[str]) -> int | None:
    """The step a checkpoint's file name says (the last number in it: ``epoch_12.pt`` -> 12)."""
    found = _DIGITS.findall(Path(path).stem)
    return int(found[-1]) if found else None


def report_checkpoints(
    checkpoints: Sequence[str],
    load: Callable[[str], Any],
    probes: Any,
    options: ReportOptions,
    *,
    input_size: Any = None,
    on_checkpoint: Callable[[ArchivedReport], None] | None = None,
) -> list[ArchivedReport]:
    """A report beside each checkpoint (``x.pt`` -> ``x.html``, ``x.json``, ``x.snapshot.json``),
    built only where the one there is not current: made by this cnnreport version from the same
    tensors (model fingerprint), the same probes (SHA-256 of each) and the same options.
    ``load(checkpoint)`` returns a :class:`~cnnreport.io.loading.LoadedModel`."""
    wanted = _comparable_options(options)
    done = []
    for checkpoint in sorted(checkpoints, key=lambda c: (checkpoint_step(c) is None, checkpoint_step(c) or 0, str(c))):
        base = Path(checkpoint).with_suffix("")
        html, json_path = f"{base}.html", f"{base}.json"
        try:
            loaded = load(checkpoint)
        except CnnReportError as exc:
            raise _naming(exc, checkpoint) from exc
        fingerprint = model_fingerprint(loaded.model)
        reused = _current(json_path, fingerprint, probes, wanted)
        if not reused:
            provenance = default_provenance()
            provenance.checkpoint_path = loaded.checkpoint_path
            provenance.checkpoint_sha256 = loaded.checkpoint_sha256
            try:
                report = build_report(loaded.model, probes, options=options, provenance=provenance, input_size=input_size, notes=loaded.notes)
                report.write(html=html, json=json_path)
            except CnnReportError as exc:
                raise _naming(exc, checkpoint) from exc
        step = checkpoint_step(checkpoint)
        write_record(
            Snapshot(
                folder=Path(checkpoint).parent, step=step, epoch=None, checkpoint=Path(checkpoint).name,
                report_html=Path(html).name, report_json=Path(json_path).name, name=f"{base.name}{RECORD_SUFFIX}",
            )
        )
        result = ArchivedReport(str(checkpoint), step, html, json_path, reused)
        if on_checkpoint is not None:
            on_checkpoint(result)
        done.append(result)
    return done


def write_history(
    checkpoints: Sequence[str],
    load: Callable[[str], Any],
    probes: Any,
    options: ReportOptions,
    output: str,
    *,
    input_size: Any = None,
    evolve_layers: Sequence[str] = (),
    weights_key: str | None = None,
    on_checkpoint: Callable[[ArchivedReport], None] | None = None,
) -> list[ArchivedReport]:
    """:func:`report_checkpoints`, then the index page at ``output`` over the checkpoints' folder."""
    folders = {Path(c).resolve().parent for c in checkpoints}
    if len(folders) != 1:
        raise OptionError(f"the checkpoints are in {len(folders)} folders; a history is one folder of checkpoints (its reports go beside them)")
    done = report_checkpoints(checkpoints, load, probes, options, input_size=input_size, on_checkpoint=on_checkpoint)
    write_index(folders.pop(), output, title=options.title, evolve_layers=evolve_layers, weights_key=weights_key)
    return done


def _naming(exc: CnnReportError, checkpoint: str) -> CnnReportError:
    """The same error, its message starting with the checkpoint it is about (of many)."""
    named = type(exc).__new__(type(exc))
    CnnReportError.__init__(named, f"{checkpoint}: {exc.message}", hint=exc.hint)
    return named


#: Options the report records as it resolved them (the batch size it started with, one class
#: name per class), not as given: they cannot tell whether a report is current.
_RESOLVED_OPTIONS = frozenset({"batch_size", "class_names"})


def _comparable_options(options: ReportOptions) -> dict[str, Any]:
    """The options as the JSON view records them (what a report was made with)."""
    plain = json.loads(json.dumps(options.to_dict(), default=str))
    return {k: v for k, v in plain.items() if k not in _RESOLVED_OPTIONS}


def _current(json_path: str, fingerprint: str, probes: Any, options: Mapping[str, Any]) -> bool:
    try:
        with open(json_path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError):
        return False
    provenance = report.get("provenance") or {}
    if provenance.get("cnnreport_version") != __version__ or provenance.get("model_fingerprint") != fingerprint:
        return False
    recorded = [p.get("sha256") for p in report.get("probes") or []]
    given = list(getattr(probes, "sha256", None) or [])
    if not given or recorded[: len(given)] != given[: len(recorded)] or report.get("probe_count") != len(given):
        return False
    recorded_options = report.get("options") or {}
    return all(recorded_options.get(k) == v for k, v in options.items())


__all__ = ["ArchivedReport", "checkpoint_step", "report_checkpoints", "write_history"]
