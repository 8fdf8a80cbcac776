"""The record of one snapshot on disk, beside its checkpoint and report.

A run's folder holds, per snapshot (``step-000012`` being the step, zero-padded to six digits)::

    step-000012.pt             the model's state_dict (or a record of the user's own checkpoint)
    step-000012.html / .json   its report
    step-000012.snapshot.json  this record, written last

The record (format ``cnnreport-snapshot/1``) is replaced atomically after the report is
complete, so a record exists only when its report does; readers (the history index) list the
records, never the reports. Paths in a record are relative to the folder when inside it.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import OptionError

SNAPSHOT_FORMAT = "cnnreport-snapshot/1"
RECORD_SUFFIX = ".snapshot.json"
_STEP_NAME = re.compile(r"step-(\d+)" + re.escape(RECORD_SUFFIX))


@dataclass(frozen=True)
class Snapshot:
    """One snapshot: its step, epoch, metrics and the files it wrote, relative to ``folder``.

    ``step`` is None only in a record of an archived checkpoint whose name holds no number
    (``cnnreport history`` writes those, ``x.pt`` -> ``x.snapshot.json``); a :class:`Run`
    always records one, and names its files by it."""

    folder: Path
    step: int | None
    epoch: int | None
    metrics: dict[str, float | None] = field(default_factory=dict)  # None: not finite (NaN, inf)
    checkpoint: str = ""
    report_html: str = ""
    report_json: str = ""
    name: str = ""  # the record's file name; "" for one not yet written (then step-NNNNNN)

    @property
    def record_path(self) -> Path:
        return self.folder / (self.name or stem(self.step or 0) + RECORD_SUFFIX)

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / self.checkpoint  # an absolute checkpoint stays itself

    @property
    def report_html_path(self) -> Path:
        return self.folder / self.report_html

    @property
    def report_json_path(self) -> Path:
        return self.folder / self.report_json

    def to_dict(self) -> dict[str, Any]:
        """The record as written (``folder`` is where it lies, not part of it)."""
        return {
            "format": SNAPSHOT_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "metrics": dict(self.metrics),
            "checkpoint": self.checkpoint,
            "report_html": self.report_html,
            "report_json": self.report_json,
        }


def stem(step: int) -> str:
    """``step-000012``: the name every file of the snapshot at ``step`` starts with."""
    return f"step-{step:06d}"


def check_step(value: Any, what: str = "step") -> int:
    """``value`` as a step or epoch number: an int >= 0 (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise OptionError(f"{what} must be a whole number >= 0, got {value!r}")
    return int(value)


def clean_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float | None]:
    """Metric values as floats, a NaN or infinity as None (JSON has neither); a 0-d tensor or
    numpy scalar counts as its number. Anything else names itself."""
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise OptionError(f"metrics must be a mapping of names to numbers, got {type(metrics).__name__}")
    cleaned: dict[str, float | None] = {}
    for name, value in metrics.items():
        if not isinstance(name, str):
            raise OptionError(f"metric names must be strings, got {name!r}")
        try:
            number = float(value)
        except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several values
            raise OptionError(f"metric {name!r} must be a number, got {type(value).__name__} {value!r:.60}") from None
        cleaned[name] = number if math.isfinite(number) else None
    return cleaned


def write_record(snapshot: Snapshot) -> Path:
    """Write ``snapshot``'s record atomically (temp file in the folder, then ``os.replace``)."""
    path = snapshot.record_path
    text = json.dumps(snapshot.to_dict(), indent=2, allow_nan=False) + "\n"
    # Not named *.snapshot.json until replaced: a reader listing the folder never sees it half-written.
    handle, temp = tempfile.mkstemp(dir=snapshot.folder, prefix=".snapshot-", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        user_mode(temp)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def user_mode(path: str | os.PathLike[str]) -> None:
    """Give a ``mkstemp`` file (mode 0600) the mode any file the user writes gets (umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _bad(path: Path, why: str) -> OptionError:
    return OptionError(f"{path} is not a cnnreport snapshot record: {why}")


def read_snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """The snapshot recorded in ``path`` (a ``step-NNNNNN.snapshot.json``); a malformed record
    raises :class:`~cnnreport.errors.OptionError` naming the file and what is wrong."""
    p = Path(path)

    def no_constants(name: str) -> Any:  # NaN, Infinity: Python's json reads them, JSON has none
        raise _bad(p, f"{name} is not JSON")

    try:
        data = json.loads(p.read_text(encoding="utf-8"), parse_constant=no_constants)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(p, str(exc)) from None
    if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
        raise _bad(p, f"its format is not {SNAPSHOT_FORMAT!r}")
    try:
        step = None if data.get("step") is None else check_step(data.get("step"))
        epoch = None if data.get("epoch") is None else check_step(data.get("epoch"), "epoch")
        metrics = data.get("metrics") or {}
        if not isinstance(metrics, dict) or not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in metrics.values()):
            raise OptionError("metrics must map names to numbers or null")
    except OptionError as exc:
        raise _bad(p, str(exc)) from None
    named = _STEP_NAME.fullmatch(p.name)
    if named is not None and int(named.group(1)) != step:
        raise _bad(p, f"its name says step {int(named.group(1))} but it records step {step}")
    files = {}
    for key in ("checkpoint", "report_html", "report_json"):
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise _bad(p, f"{key!r} must name a file")
        files[key] = value
    return Snapshot(folder=p.parent, step=step, epoch=epoch, metrics={k: None if v is None else float(v) for k, v in metrics.items()}, name=p.name, **files)


def read_snapshots(folder: str | os.PathLike[str]) -> list[Snapshot]:
    """Every snapshot recorded in ``folder`` (each ``*.snapshot.json``: a :class:`Run`'s and
    ``cnnreport history``'s), by step (999999 before 1000000; records without one last), then
    epoch, then name, as the index orders its rows."""
    records = sorted(p for p in Path(folder).iterdir() if p.name.endswith(RECORD_SUFFIX) and not p.name.startswith("."))
    snapshots = [read_snapshot(p) for p in records]
    return sorted(snapshots, key=lambda s: (s.step is None, s.step or 0, s.epoch is None, s.epoch or 0, s.name))
