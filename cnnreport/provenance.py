"""Where a report came from: model fingerprint, file hashes, versions, and checking a report
against a checkpoint.

Every report carries a :class:`~cnnreport.report.Provenance`. :func:`fill_provenance` adds the
hashes to it; :func:`verify_report` reads the provenance back out of a written report (the
``<script type="application/json" id="cnnreport-provenance">`` block of the HTML page, or the
JSON view) and says whether a checkpoint file is the one the report was made from.

The fingerprint hashes tensor *values*, so it is the same for the same weights whatever file
they were saved in; the checkpoint SHA-256 pins the exact file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

import torch
from torch import nn

from . import __version__
from .errors import OptionError, WeightsError
from .hashing import file_sha256
from .report import ProbeFile, Provenance

#: The ``id`` of the JSON block in a report page that carries its provenance.
PROVENANCE_SCRIPT_ID = "cnnreport-provenance"

# Changing what goes into the hash changes every fingerprint; the tag makes that explicit.
_FINGERPRINT_TAG = b"cnnreport-state-dict-v1\n"
_BLOCK = 1 << 20


def default_provenance() -> Provenance:
    """Versions and the command line; fill_provenance adds the hashes."""
    return Provenance(
        cnnreport_version=__version__,
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        command_line=" ".join(sys.argv) if sys.argv and sys.argv[0].endswith("cnnreport") else "",
    )


def _tensor_bytes(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's values as a flat uint8 CPU tensor, whatever its dtype, layout or device."""
    t = tensor.detach()
    if t.device.type == "meta":
        raise OptionError(f"cannot fingerprint the model: {key!r} is on the meta device and has no values; load its weights first")
    if t.is_quantized:
        t = t.int_repr()  # the stored integers; scale and zero point are separate state entries
    if t.layout != torch.strided:
        t = t.to_dense()
    t = t.cpu().contiguous().reshape(-1)
    return t.view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)


def state_dict_fingerprint(state_dict: Mapping[str, Any]) -> str:
    """SHA-256 over a state dict's entries in sorted key order: key, dtype, shape and bytes.

    Sorted, so the same tensors fingerprint the same however a file stored them (safetensors
    sorts its keys; torch.save keeps the module's order).

    Each entry is framed by a JSON header line, so no two different state dicts hash the same
    bytes. Non-tensor entries (``_extra_state``) count by key and, for plain Python values,
    by ``repr``; other objects by type name only, since their repr may hold memory addresses.
    """
    digest = hashlib.sha256(_FINGERPRINT_TAG)
    for key, value in sorted(state_dict.items(), key=lambda kv: str(kv[0])):
        if isinstance(value, torch.Tensor):
            data = _tensor_bytes(str(key), value)
            header = [str(key), str(value.dtype).replace("torch.", ""), list(value.shape), int(data.numel())]
            digest.update(json.dumps(header).encode("utf-8") + b"\n")
            digest.update(memoryview(data.numpy()))
        else:
            plain = isinstance(value, (int, float, str, bool, type(None), list, tuple, dict))
            shown = repr(value) if plain else type(value).__name__
            digest.update(json.dumps([str(key), "object", shown]).encode("utf-8") + b"\n")
    return digest.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 over ``model.state_dict()``: parameters and persistent buffers, in key order.

    Two models with equal fingerprints hold bit-identical tensors under the same names.
    """
    return state_dict_fingerprint(model.state_dict())


def probe_files(probes: Any) -> list[ProbeFile]:
    """Name, SHA-256 and path of each probe file.

    ``probes``: a :class:`~cnnreport.probes.ProbeBatch` (its recorded hashes are used) or file
    paths. Tensors given in memory have no file: they are listed with an empty hash.
    """
    if probes is None:
        return []
    names = getattr(probes, "names", None)
    if names is not None:  # a ProbeBatch
        shas = list(getattr(probes, "sha256", []) or [])
        sources = list(getattr(probes, "sources", []) or [])
        return [
            ProbeFile(
                name=str(name),
                sha256=shas[i] if i < len(shas) else "",
                source=sources[i] if i < len(sources) else "",
            )
            for i, name in enumerate(names)
        ]
    if isinstance(probes, (str, os.PathLike)):
        probes = [probes]
    out = []
    for item in probes if isinstance(probes, Iterable) else []:
        if isinstance(item, (str, os.PathLike)) and os.path.isfile(item):
            out.append(ProbeFile(name=os.path.basename(item), sha256=file_sha256(item), source=str(item)))
    return out


def creation_time() -> str:
    """UTC creation time, or ``SOURCE_DATE_EPOCH`` when set (reproducible builds' convention)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.strip().isdigit():
        moment = _dt.datetime.fromtimestamp(int(epoch), tz=_dt.timezone.utc)
    else:
        moment = _dt.datetime.now(tz=_dt.timezone.utc)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def fill_provenance(
    prov: Provenance,
    model: nn.Module | None = None,
    *,
    checkpoint_path: str | os.PathLike[str] | None = None,
    probes: Any = None,
    timestamp: bool = False,
) -> Provenance:
    """Add the model fingerprint, checkpoint hash, probe file hashes (and, only when asked, the
    creation time) to ``prov``; returns it. Fields already set are kept, so a caller that
    hashed the checkpoint while loading it does not hash it twice.
    """
    if model is not None and not prov.model_fingerprint:
        prov.model_fingerprint = model_fingerprint(model)
    if checkpoint_path:
        path = os.fspath(checkpoint_path)
        if not prov.checkpoint_path:
            prov.checkpoint_path = path
        if not prov.checkpoint_sha256:
            if not os.path.isfile(path):
                raise WeightsError(f"checkpoint {path} not found; cannot record its SHA-256")
            prov.checkpoint_sha256 = file_sha256(path)
    if probes is not None and not prov.probe_files:
        prov.probe_files = probe_files(probes)
    if timestamp and not prov.created:
        prov.created = creation_time()
    return prov


# --------------------------------------------------------------------------------------------
# Reading provenance back from a written report


class _ScriptFinder(HTMLParser):
    """Collects the text of ``<script id="cnnreport-provenance">``; the rest of the page is skipped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self._inside = False
        self.found = False
        self.chunks: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script" and dict(attrs).get("id") == PROVENANCE_SCRIPT_ID and not self.found:
            self._inside = True
            self.found = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._inside = False

    def handle_data(self, data: str) -> None:
        if self._inside:
            self.chunks.append(data)


def read_embedded(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance block of a report: the HTML page's JSON block, or the JSON view itself.

    Returns ``{"kind": "report"|"diff", "provenance": {...}}`` or, for a diff,
    ``{"kind": "diff", "old": {"provenance": ...}, "new": {"provenance": ...}}``.
    """
    p = Path(path)
    if not p.is_file():
        raise OptionError(f"report {p} not found")
    text = p.read_text(encoding="utf-8", errors="replace")
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OptionError(f"{p} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    else:
        finder = _ScriptFinder()
        finder.feed(text)
        finder.close()
        if not finder.found:
            raise OptionError(f"{p} carries no cnnreport provenance block (id={PROVENANCE_SCRIPT_ID!r}); was it made by cnnreport 0.1 or later?")
        try:
            data = json.loads("".join(finder.chunks))
        except json.JSONDecodeError as exc:
            raise OptionError(f"{p}: the provenance block is not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not ("provenance" in data or ("old" in data and "new" in data)):
        raise OptionError(f"{p} is not a cnnreport report (no provenance in it)")
    data.setdefault("kind", "diff" if "old" in data and "provenance" not in data else "report")
    return data


def _sides(data: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if "provenance" in data:
        return [("", dict(data["provenance"] or {}))]
    return [(side, dict((data.get(side) or {}).get("provenance") or {})) for side in ("old", "new")]


class Verification(NamedTuple):
    """The answer of :func:`verify_report`: ``ok`` and a one-line reason."""

    ok: bool
    message: str


def _short(sha: str) -> str:
    return sha[:12] if sha else "(none)"


def verify_report(report_path: str | os.PathLike[str], checkpoint_path: str | os.PathLike[str]) -> Verification:
    """Does ``report_path`` (HTML or JSON; a report or a diff) belong to ``checkpoint_path``?

    A match is either the same file (the checkpoint's SHA-256 equals the recorded one) or the
    same tensors (the state dict in the file has the recorded model fingerprint, e.g. a
    checkpoint re-saved without change). A diff report matches either of its two sides.
    Raises :class:`OptionError` for an unreadable report, :class:`WeightsError` for a missing
    checkpoint.
    """
    data = read_embedded(report_path)
    ckpt = os.fspath(checkpoint_path)
    if not os.path.isfile(ckpt):
        raise WeightsError(f"checkpoint {ckpt} not found")
    sha = file_sha256(ckpt)
    sides = _sides(data)
    if not any(p.get("checkpoint_sha256") or p.get("model_fingerprint") for _, p in sides):
        raise OptionError(f"{report_path} records neither a checkpoint SHA-256 nor a model fingerprint; nothing to verify against")
    for side, prov in sides:
        where = f" ({side} side)" if side else ""
        if prov.get("checkpoint_sha256") == sha:
            return Verification(True, f"match{where}: {ckpt} has the recorded SHA-256 {_short(sha)}")
    fingerprints: list[str] = []
    if any(p.get("model_fingerprint") for _, p in sides):
        fingerprints = _checkpoint_fingerprints(ckpt)
    fingerprint = fingerprints[0] if fingerprints else ""
    for side, prov in sides:
        where = f" ({side} side)" if side else ""
        if prov.get("model_fingerprint") in fingerprints:
            fingerprint = prov["model_fingerprint"]
            file_note = "though the file itself differs" if prov.get("checkpoint_sha256") else "the report records no checkpoint file"
            return Verification(True, f"match{where}: {ckpt} holds the recorded tensors (model fingerprint {_short(fingerprint)}); {file_note}")
    recorded = ", ".join(
        f"{side + ': ' if side else ''}checkpoint {_short(p.get('checkpoint_sha256', ''))}"
        + (f" from {p['checkpoint_path']}" if p.get("checkpoint_path") else "")
        + f", fingerprint {_short(p.get('model_fingerprint', ''))}"
        for side, p in sides
    )
    got = f"SHA-256 {_short(sha)}" + (f", fingerprint {_short(fingerprint)}" if fingerprint else "")
    return Verification(False, f"no match: {ckpt} has {got}; the report records {recorded}")


def _checkpoint_fingerprints(path: str) -> list[str]:
    """Fingerprints of the state dict inside a checkpoint: as stored, then with each wrapper
    prefix that every key carries (``module.`` from DataParallel, ``_orig_mod.`` from
    torch.compile ...) stripped, as loading would. Empty when it cannot be read safely."""
    from .errors import CnnReportError
    from .loading import STRIP_PREFIXES, read_checkpoint

    try:
        state = dict(read_checkpoint(path).state_dict)
    except CnnReportError:  # a pickled whole model needs trust; a mismatch is the honest answer
        return []
    found = [state_dict_fingerprint(state)]
    for _ in range(3):  # prefixes can stack: module._orig_mod.
        prefix = next((p for p in STRIP_PREFIXES if state and all(str(k).startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {str(k)[len(prefix):]: v for k, v in state.items()}
        found.append(state_dict_fingerprint(state))
    return found


__all__ = [
    "PROVENANCE_SCRIPT_ID",
    "Verification",
    "file_sha256",
    "fill_provenance",
    "model_fingerprint",
    "probe_files",
    "read_embedded",
    "state_dict_fingerprint",
    "verify_report",
]
