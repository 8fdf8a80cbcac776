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

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

import torch
from torch import nn

from ..datamodel import ProbeFile, Provenance
from ..errors import OptionError, ProvenanceError, WeightsError
from ..support.hashing import file_sha256
from ..support.version import __version__
from .loading import STRIP_PREFIXES, read_checkpoint

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
#
# verify must read the block the browser reads, and only a block nobody can dispute. The page
# is parsed the way a browser would for what matters here: comments and raw-text elements
# (noscript with scripting on, textarea, title, style, iframe ...) hold text, not elements; a
# <template>'s content is not in the document; <svg>/<math> content is foreign, where <script>
# is no data block. Every element carrying the block's id counts, wherever it sits (a copy in a
# comment too), so that a page with two blocks, or with its block where the browser would not
# see it, is refused instead of read one way here and another there.

_HASH_FIELDS = ("model_fingerprint", "checkpoint_sha256")
_TEXT_FIELDS = ("cnnreport_version", "torch_version", "python_version", "checkpoint_path", "command_line", "created")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Elements whose content the browser's tokenizer reads as text (noscript: with scripting on,
# as every browser opening a report has it; plaintext: to the end of the file).
_RAW_TEXT = ("script", "style", "noscript", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "plaintext")
_FOREIGN = ("svg", "math")
_NESTED_SCAN_DEPTH = 4
# cnnreport writes exactly these two forms of <script> start tag. Any other (a src, another
# type, a self-closing or oddly spaced tag, an end tag with attributes) is where Python's HTML
# parser and a browser could disagree on where an element ends, so it is refused.
_SCRIPT_START = re.compile(r"<script\b", re.IGNORECASE)
_SCRIPT_FORMS = ("<script>", f'<script type="application/json" id="{PROVENANCE_SCRIPT_ID}">')
# Where Python's HTML parser and a browser end a comment or a raw-text element at different
# places (``</ x>`` is a comment to a browser, ``-- >`` does not close one, ``<!-->`` does,
# ``</title x>`` closes a title), a block could be read here and hidden there. cnnreport writes
# none of these, so a page holding one is refused rather than read.
_DIVERGENT = re.compile(
    r"</\s|--\s+>|--!>|<!---?>|</(?:" + "|".join(_RAW_TEXT) + r")\b(?!>)",
    re.IGNORECASE,
)


class _Candidate(NamedTuple):
    tag: str
    attrs: dict[str, str | None]
    hidden: str  # "" where the browser parses it as an element of the document, else where it hides
    text: str


class _PageReader(HTMLParser):
    """Every element with the provenance id (and where it sits), and the text of every element
    marked ``data-provenance`` (the hashes the page shows)."""

    def __init__(self, hidden: str = "", depth: int = 0) -> None:
        super().__init__(convert_charrefs=True)
        self.outer_hidden = hidden
        self.depth = depth
        self.candidates: list[_Candidate] = []
        self.shown: dict[str, list[str]] = {}
        self.problems: list[str] = []
        self._template = 0
        self._foreign = 0
        self._raw: str | None = None  # the raw-text element we are inside
        self._raw_chunks: list[str] = []
        self._block: _Candidate | None = None
        self._marked: str | None = None
        self._marked_chunks: list[str] = []

    def _where(self) -> str:
        if self.outer_hidden:
            return self.outer_hidden
        if self._template:
            return "inside a <template>, whose content is not part of the page"
        if self._foreign:
            return "inside <svg>/<math>, where a <script> is not a data block"
        return ""

    def _first_attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> dict[str, str | None]:
        first: dict[str, str | None] = {}
        for name, value in attrs:
            if name in first:  # the browser keeps the first; Python's dict() would keep the last
                if name in ("id", "type", "data-provenance"):
                    self.problems.append(f"a <{tag}> has two {name!r} attributes")
                continue
            first[name] = value
        return first

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=True)

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], *, closed: bool) -> None:
        first = self._first_attrs(tag, attrs)
        where = self._where()
        if first.get("id") == PROVENANCE_SCRIPT_ID:
            candidate = _Candidate(tag, first, where, "")
            if tag == "script" and not closed:
                self._block = candidate  # its text is the raw text that follows
            else:
                self.candidates.append(candidate)
        marked = first.get("data-provenance")
        if marked and not where and not closed:
            self._marked, self._marked_chunks = marked, []
        if tag == "template" and not closed:
            self._template += 1
        elif tag in _FOREIGN and not closed:
            self._foreign += 1
        if tag in _RAW_TEXT and not closed:
            self._raw, self._raw_chunks = tag, []
            self.set_cdata_mode(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._raw is not None and tag == self._raw:
            self._end_raw()
            return
        if tag == "template" and self._template:
            self._template -= 1
        elif tag in _FOREIGN and self._foreign:
            self._foreign -= 1
        if self._marked is not None:
            self.shown.setdefault(self._marked, []).append("".join(self._marked_chunks).strip())
            self._marked = None

    def _end_raw(self) -> None:
        text = "".join(self._raw_chunks)
        if self._block is not None:
            self.candidates.append(self._block._replace(text=text))
            self._block = None
        else:
            reason = f"inside <{self._raw}>, which the browser reads as text" if self._raw != "script" else "inside another <script>"
            self._scan_nested(text, reason)
        self._raw = None
        self.clear_cdata_mode()

    def _scan_nested(self, text: str, reason: str) -> None:
        # A copy of the block hidden in a comment or a raw-text element is still a second
        # block to a reader of the file: find it by parsing that text as a page of its own.
        if PROVENANCE_SCRIPT_ID not in text and "&" not in text:
            return
        if self.depth >= _NESTED_SCAN_DEPTH:
            self.problems.append("markup nested too deep to read")
            return
        inner = _PageReader(self.outer_hidden or reason, self.depth + 1)
        inner.feed(text)
        inner.close()
        self.candidates.extend(c._replace(hidden=c.hidden or reason) for c in inner.candidates)
        self.problems.extend(inner.problems)

    def handle_data(self, data: str) -> None:
        if self._raw is not None:
            self._raw_chunks.append(data)
        if self._marked is not None:
            self._marked_chunks.append(data)

    def handle_comment(self, data: str) -> None:
        self._scan_nested(data, "inside an HTML comment")

    def close(self) -> None:
        super().close()
        if self._raw is not None:  # an element left open runs to the end of the file
            self._end_raw()


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # JSON readers disagree on which copy wins; a report must not say two things.
            raise ProvenanceError(f"the key {key!r} appears twice in one object")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    # cnnreport writes strict JSON (allow_nan=False): NaN and Infinity are never in a report.
    raise ProvenanceError(f"it holds the non-JSON constant {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ProvenanceError(f"it holds the number {text[:20]}, beyond any float cnnreport writes")
    return value


def _load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant, parse_float=_finite_float)
    except ProvenanceError as exc:
        raise ProvenanceError(f"{what}: {exc.message}; cnnreport never writes that, so the report was edited") from None
    except json.JSONDecodeError as exc:
        raise ProvenanceError(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise ProvenanceError(f"{what} is JSON nested too deep to be a cnnreport report") from None


_PROVENANCE_KEYS = {f.name for f in dataclasses.fields(Provenance)}
_PROBE_FILE_KEYS = {f.name for f in dataclasses.fields(ProbeFile)}


def _check_provenance(prov: Any, where: str) -> dict[str, Any]:
    """The provenance object, or ProvenanceError naming the first malformed field."""
    if not isinstance(prov, dict):
        raise ProvenanceError(f"{where} is a JSON {type(prov).__name__}, not an object")
    for name in _HASH_FIELDS:
        value = prov.get(name, "")
        if not isinstance(value, str) or (value and not _SHA256.fullmatch(value)):
            raise ProvenanceError(f"{where}.{name} is {_shown(value)}, not a SHA-256 (64 lower-case hex digits)")
    for name in _TEXT_FIELDS:
        if not isinstance(prov.get(name, ""), str):
            raise ProvenanceError(f"{where}.{name} is {_shown(prov.get(name))}, not a string")
    if not isinstance(prov.get("probe_files", []), list):
        raise ProvenanceError(f"{where}.probe_files is {_shown(prov.get('probe_files'))}, not a list")
    # A key cnnreport never writes could carry a second, contradicting fingerprint.
    unknown = sorted(set(prov) - _PROVENANCE_KEYS)
    if unknown:
        raise ProvenanceError(f"{where} has the key {_shown(unknown[0])}, which cnnreport never writes, so the report was edited")
    for i, entry in enumerate(prov.get("probe_files", [])):
        if not isinstance(entry, dict) or set(entry) - _PROBE_FILE_KEYS:
            raise ProvenanceError(f"{where}.probe_files[{i}] is {_shown(entry)}, not a probe file entry cnnreport writes, so the report was edited")
    return prov


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, float) or value == value else "NaN"
    return text if len(text) <= 40 else text[:37] + "..."


def _check_structure(data: Any, what: str) -> dict[str, Any]:
    """The report's provenance data as ``read_embedded`` returns it, every field checked."""
    if not isinstance(data, dict):
        raise ProvenanceError(f"{what} is a JSON {type(data).__name__}, not a cnnreport report")
    is_report, is_diff = "provenance" in data, "old" in data or "new" in data
    kind = data.get("kind", "report" if is_report else "diff" if is_diff else None)
    if is_report and is_diff:
        raise ProvenanceError(f"{what} holds both a report's provenance and a diff's old/new sides; cnnreport writes one or the other")
    if not is_report and not is_diff:
        raise ProvenanceError(f"{what} is not a cnnreport report (no provenance in it)")
    if kind != ("report" if is_report else "diff"):
        raise ProvenanceError(f"{what} says kind {_shown(kind)} but holds a {'report' if is_report else 'diff'}'s provenance")
    data["kind"] = kind
    if is_report:
        _check_provenance(data["provenance"], "provenance")
        return data
    for side in ("old", "new"):
        entry = data.get(side)
        if not isinstance(entry, dict):
            raise ProvenanceError(f"{what}: the diff's {side!r} side is {_shown(entry)}, not an object")
        _check_provenance(entry.get("provenance"), f"{side}.provenance")
    if "identical_weights" in data:  # the JSON view of a diff restates what the fingerprints say
        old_fp, new_fp = (data[s]["provenance"].get("model_fingerprint", "") for s in ("old", "new"))
        if data["identical_weights"] is not (bool(old_fp) and old_fp == new_fp):
            raise ProvenanceError(
                f"{what} says identical_weights is {_shown(data['identical_weights'])}, but its old and new model "
                f"fingerprints are {_short(old_fp)} and {_short(new_fp)}; the report was edited"
            )
    return data


def _fields(data: Mapping[str, Any]) -> dict[str, str]:
    """``{"model_fingerprint": ..., "old.checkpoint_sha256": ...}``: what the page must show."""
    sides = [("", data["provenance"])] if data["kind"] == "report" else [(f"{s}.", data[s]["provenance"]) for s in ("old", "new")]
    return {prefix + name: prov.get(name, "") for prefix, prov in sides for name in _HASH_FIELDS}


def _read_page(text: str, p: Path) -> dict[str, Any]:
    for match in _SCRIPT_START.finditer(text):
        if not any(text.startswith(form, match.start()) for form in _SCRIPT_FORMS):
            tag = text[match.start() : text.find(">", match.start()) + 1 or match.start() + 60][:60]
            raise ProvenanceError(f"{p} has a script tag cnnreport never writes ({tag!r}), so where its provenance block ends is not certain; the page was edited")
    odd = _DIVERGENT.search(text)
    if odd:
        raise ProvenanceError(
            f"{p} holds {text[odd.start():odd.start() + 20]!r}, markup cnnreport never writes and that parsers end "
            "differently, so which provenance block a browser sees is not certain; the page was edited"
        )
    reader = _PageReader()
    reader.feed(text)
    reader.close()
    if reader.problems:
        raise ProvenanceError(f"{p}: {reader.problems[0]}; cnnreport never writes that, so the page was edited")
    blocks = reader.candidates
    if not blocks:
        raise ProvenanceError(f"{p} carries no cnnreport provenance block (id={PROVENANCE_SCRIPT_ID!r}); was it made by cnnreport 0.1 or later?")
    if len(blocks) > 1:
        places = "; ".join(f"<{b.tag}> {b.hidden or 'in the page'}" for b in blocks[:3])
        raise ProvenanceError(f"{p} has {len(blocks)} elements with id={PROVENANCE_SCRIPT_ID!r} ({places}); a report has one, so it was edited")
    block = blocks[0]
    if block.hidden:
        raise ProvenanceError(f"{p}: its provenance block is {block.hidden}, so the browser does not read it as data")
    if block.tag != "script" or (block.attrs.get("type") or "").strip().lower() != "application/json" or "src" in block.attrs:
        raise ProvenanceError(f'{p}: the element with id={PROVENANCE_SCRIPT_ID!r} is not a <script type="application/json"> data block')
    if "<" in block.text:  # cnnreport's JSON escapes every "<"; one here changes where the block ends
        raise ProvenanceError(f"{p}: the provenance block contains '<', which cnnreport's JSON never does; the page was edited")
    data = _check_structure(_load_json(block.text, f"{p}: the provenance block"), f"{p}: the provenance block")
    # The page shows the hashes too (data-provenance marks them): the block must agree with
    # what a person reading the footer sees, and every recorded hash must be shown.
    for field_name, recorded in _fields(data).items():
        shown = reader.shown.get(field_name, [])
        if recorded and not shown:
            raise ProvenanceError(
                f"{p}: the provenance block records {field_name} {_short(recorded)} but the page does not show it "
                "(the page was edited, or made by a cnnreport older than its verify: generate it again)"
            )
        for value in shown:
            if value != recorded:
                raise ProvenanceError(
                    f"{p}: the provenance block records {field_name} {_short(recorded)} but the page shows {_shown(value)}; the report was edited"
                )
    unknown = sorted(set(reader.shown) - set(_fields(data)))
    if unknown:
        raise ProvenanceError(f"{p}: the page shows {unknown[0]} {_shown(reader.shown[unknown[0]][0])}, which its provenance block does not record; the report was edited")
    return data


def read_embedded(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance of a report: the HTML page's JSON block, or the JSON view itself.

    Returns ``{"kind": "report", "provenance": {...}, ...}`` or, for a diff,
    ``{"kind": "diff", "old": {"provenance": ...}, "new": {"provenance": ...}, ...}``.
    Raises :class:`~cnnreport.errors.ProvenanceError` (exit status 2) when the report cannot
    vouch for anything: no block, a malformed one, two blocks, a block the browser would not
    read as data, or a block that contradicts the hashes the page shows. A Markdown view
    carries no provenance and is refused saying so.
    """
    p = Path(path)
    if p.suffix.lower() in (".md", ".markdown"):
        raise ProvenanceError(f"{p} is a Markdown view, which carries no provenance; verify the HTML report or its JSON view (--json) instead")
    if not p.is_file():
        raise ProvenanceError(f"report {p} not found" if not p.exists() else f"report {p} is not a file")
    try:
        text = p.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise ProvenanceError(f"cannot read report {p}: {exc.strerror or exc}") from None
    if text.lstrip().startswith("{"):
        return _check_structure(_load_json(text, str(p)), str(p))
    if "<" not in text:
        raise ProvenanceError(f"{p} is neither a cnnreport HTML page nor a JSON view (a Markdown view carries no provenance)")
    return _read_page(text, p)


def _sides(data: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if data["kind"] == "report":
        return [("", data["provenance"])]
    return [(side, data[side]["provenance"]) for side in ("old", "new")]


class Verification(NamedTuple):
    """The answer of :func:`verify_report`: ``ok`` and a one-line reason."""

    ok: bool
    message: str


def _short(sha: str) -> str:
    return sha[:12] if sha else "(none)"


def verify_report(
    report_path: str | os.PathLike[str],
    checkpoint_path: str | os.PathLike[str],
    *,
    weights_key: str | None = None,
    trust_checkpoint: bool = False,
) -> Verification:
    """Does ``report_path`` (HTML or JSON; a report or a diff) belong to ``checkpoint_path``?

    A match needs the tensors: the state dict in the checkpoint (under ``weights_key`` when
    given; wrapper prefixes such as ``module.`` stripped as loading strips them) must have the
    recorded model fingerprint. Then the recorded checkpoint SHA-256 says whether it is also the
    very file. A diff report matches either of its two sides.

    This checks that a report agrees with a checkpoint and with itself; it is not a signature:
    whoever can edit a report can recompute every hash in it.

    Raises :class:`~cnnreport.errors.ProvenanceError` for a report that cannot vouch (see
    :func:`read_embedded`) or contradicts the checkpoint (the file's SHA-256 recorded but other
    tensors), :class:`~cnnreport.errors.WeightsError` for a checkpoint that cannot be read.
    """
    data = read_embedded(report_path)
    ckpt = os.fspath(checkpoint_path)
    if not os.path.isfile(ckpt):
        raise WeightsError(f"checkpoint {ckpt} not found" if not os.path.exists(ckpt) else f"checkpoint {ckpt} is not a file")
    sides = _sides(data)
    if not any(p.get("model_fingerprint") for _, p in sides):
        has_sha = any(p.get("checkpoint_sha256") for _, p in sides)
        raise ProvenanceError(
            f"{report_path} records "
            + ("a checkpoint SHA-256 but no model fingerprint" if has_sha else "neither a checkpoint SHA-256 nor a model fingerprint")
            + "; nothing to verify against (verify compares the checkpoint's tensors with the fingerprint)"
        )
    sha = file_sha256(ckpt)
    fingerprints = _checkpoint_fingerprints(ckpt, weights_key=weights_key, trust_checkpoint=trust_checkpoint)
    matches: list[str] = []
    for side, prov in sides:
        where = f" ({side} side)" if side else ""
        recorded_fp, recorded_sha = prov.get("model_fingerprint", ""), prov.get("checkpoint_sha256", "")
        if recorded_fp and recorded_fp in fingerprints:
            if recorded_sha == sha:
                matches.append(f"match{where}: {ckpt} has the recorded SHA-256 {_short(sha)} and the recorded tensors (model fingerprint {_short(recorded_fp)})")
            else:
                file_note = "though the file itself differs" if recorded_sha else "the report records no checkpoint file"
                matches.append(f"match{where}: {ckpt} holds the recorded tensors (model fingerprint {_short(recorded_fp)}); {file_note}")
        elif recorded_sha == sha:
            # The file is the recorded one, its tensors are not: the report contradicts itself.
            raise ProvenanceError(
                f"{report_path}{where} records {ckpt}'s SHA-256 {_short(sha)} but model fingerprint {_short(recorded_fp)}, "
                f"while the file's tensors fingerprint {_short(fingerprints[0])}: the report was edited"
                + ("" if weights_key else ", or the model was loaded from another key of the checkpoint (pass --weights-key)")
            )
    if matches:
        return Verification(True, matches[0])
    recorded = ", ".join(
        f"{side + ': ' if side else ''}checkpoint {_short(p.get('checkpoint_sha256', ''))}"
        + (f" from {p['checkpoint_path']}" if p.get("checkpoint_path") else "")
        + f", fingerprint {_short(p.get('model_fingerprint', ''))}"
        for side, p in sides
    )
    return Verification(False, f"no match: {ckpt} has SHA-256 {_short(sha)}, fingerprint {_short(fingerprints[0])}; the report records {recorded}")


def _checkpoint_fingerprints(path: str, *, weights_key: str | None = None, trust_checkpoint: bool = False) -> list[str]:
    """Fingerprints of the state dict inside a checkpoint: as stored, then with each wrapper
    prefix that every key carries (``module.`` from DataParallel, ``_orig_mod.`` from
    torch.compile ...) stripped, as loading would. Raises WeightsError when it cannot be read
    (a pickled whole model without ``trust_checkpoint``, a damaged file)."""

    try:
        state = dict(read_checkpoint(path, key=weights_key, trust_checkpoint=trust_checkpoint).state_dict)
    except WeightsError as exc:
        raise WeightsError(f"verify needs the tensors of {path} to compare with the report's fingerprint: {exc.one_line()}") from None
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
