"""Option values as the API takes them: class names from a file or a list, ``--mean``/``--std``
numbers, and the keyword overrides of :class:`~cnnreport.ReportOptions` that the options give.

Pure functions of the option text (and of a class-name file); nothing here imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import OptionError

#: Largest ``--class-names`` file read: its names are held in memory and shown on the page.
MAX_CLASS_NAMES_BYTES = 16 * 10**6


def parse_class_names(value: str | None) -> list[str] | dict[int, str] | None:
    """Class names from a text file (one a line), a JSON list or index map, or 'a,b,c'.

    Every form keeps each name's slot: a blank line or an empty field between commas is a
    class without a name (shown by its number), never a shift of every later name. Trailing
    blanks (a final newline, a trailing comma) are not classes. A JSON map stays a map of the
    indices it names, however far apart they are; the report matches it to the model's
    classes and says what did not fit (:func:`cnnreport.capture.predictions.resolve_class_names`).
    """
    if not value:
        return None
    path = Path(value)
    if path.is_file():
        size = path.stat().st_size
        if size > MAX_CLASS_NAMES_BYTES:
            raise OptionError(
                f"--class-names {value} is {size / 1e6:.1f} MB; a class-name file is a few KB "
                f"(ImageNet-21k's 21,843 names are under 1 MB): limit {MAX_CLASS_NAMES_BYTES // 10**6} MB"
            )
        try:
            text = path.read_text(encoding="utf-8-sig")  # a BOM is not part of the first name
        except (OSError, UnicodeDecodeError) as exc:
            raise OptionError(f"--class-names {value}: cannot read it as UTF-8 text ({exc})") from None
        if path.suffix.lower() != ".json":
            names = _slots(text.splitlines())
            if not any(names):
                raise OptionError(f"--class-names {value}: the file holds no names; give one name a line")
            return names
        try:
            return names_from_json(json.loads(text, object_pairs_hook=_unique_keys))
        except (ValueError, TypeError) as exc:
            raise OptionError(
                f"--class-names {value}: {exc}; give a JSON list of names, or a map of index to name "
                '(also {"0": ["n01440764", "tench"]}) or of name to index'
            ) from None
    if "," in value:
        names = _slots(value.split(","))
        if not any(names):
            raise OptionError(f"--class-names {value!r} holds no names; give them as 'cat,dog,...'")
        return names
    raise OptionError(f"--class-names {value!r}: not a file; give a text file (one name a line), a JSON file or a comma-separated list")


def _slots(fields: list[str]) -> list[str]:
    """Names by position, stripped; blank ones keep their place, trailing blanks are dropped."""
    names = [f.strip() for f in fields]
    while names and not names[-1]:
        names.pop()
    return names


def names_from_json(data: Any) -> list[str] | dict[int, str]:
    """Class names by index: a list, or a map of only the indices the file names.

    A map is never expanded here: ``{"0": "cat", "20000000": "dog"}`` is two names, and the
    report matches them against the model's own class count.
    """
    if isinstance(data, list):
        return [_json_name(v, f"entry {i}") for i, v in enumerate(data)]
    if not isinstance(data, dict):
        raise TypeError(f"a JSON {type(data).__name__} is neither a list nor a map")
    if not data:
        raise ValueError("the map is empty")
    by_index: dict[int, str] = {}
    if all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):  # {"cat": 0, ...}
        for name, index in data.items():
            if index < 0:
                raise ValueError(f"{name!r} maps to {index}, not a class index 0, 1, 2 ...")
            if index in by_index:
                raise ValueError(f"class {index} is named twice ({by_index[index]!r} and {name!r})")
            by_index[index] = name.strip()
        return by_index
    for key, v in data.items():  # {"0": "cat"} or {"0": ["wnid", "cat"]}
        text = key.strip()
        if not (text.isascii() and text.isdigit()):  # int() also takes "-1", "+1", "1_000"
            raise ValueError(f"key {key!r:.40} is not a class index 0, 1, 2 ...")
        index = int(text)
        if index in by_index:
            raise ValueError(f"class {index} is named twice")
        by_index[index] = _json_name(v, f"class {key}")
    return by_index


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique: a repeated key would silently drop a name."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r:.40} appears twice")
        out[key] = value
    return out


def _json_name(value: Any, where: str) -> str:
    """One class name from a JSON value: a string, a number, ``[wnid, name]``, or null (no name)."""
    if isinstance(value, list):
        value = value[-1] if value else None
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"{where} is a JSON {type(value).__name__}, not a name")


def parse_floats(value: str | None, option: str) -> Any:
    """``--mean``/``--std`` text as numbers or a preset name; whether the values can work
    (finite, a positive std, presets only where they mean what they say) is
    :func:`cnnreport.io.probes.normalisation`'s to judge, for the API and the CLI alike."""
    if value is None:
        return None
    if value.strip().lower() in ("imagenet", "none"):
        return value.strip().lower()
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        if option == "--std":
            raise OptionError(f"--std {value!r}: give comma-separated numbers such as 0.229,0.224,0.225") from None
        raise OptionError(f"{option} {value!r}: give 'imagenet', 'none' or comma-separated numbers such as 0.5,0.5,0.5") from None


def report_overrides(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword overrides of ReportOptions that the CLI options give."""
    out: dict[str, Any] = {
        "title": kwargs.get("title"),
        "layers": list(kwargs.get("layers") or []),
        "exclude_layers": list(kwargs.get("exclude_layers") or []),
        "layer_types": list(kwargs.get("layer_types") or []),
        "max_channels": kwargs.get("max_channels"),
        "max_probes": kwargs.get("max_probes"),
        "tile_size": kwargs.get("tile_size"),
        "batch_size": kwargs.get("batch_size"),
        "max_html_mb": kwargs.get("max_html_mb"),
        "target_class": kwargs.get("target_class"),
        "cam_layer": kwargs.get("cam_layer"),
        "timestamp": kwargs.get("timestamp") or None,
        "progress": not kwargs.get("quiet"),
    }
    if kwargs.get("no_attributions"):
        out["attributions"] = False
    if kwargs.get("saliency"):
        out["saliency"] = True
    if kwargs.get("no_graph"):
        out["graph"] = False
    if kwargs.get("spectral"):
        out["spectral"] = True
    names = parse_class_names(kwargs.get("class_names"))
    if names:
        out["class_names"] = names
    for key in ("example_top_k", "example_batch_size", "example_workers"):
        out[key] = kwargs.get(key)
    out["example_channels"] = parse_channels(kwargs.get("example_channels"))
    return {k: v for k, v in out.items() if v is not None}


def parse_channels(value: str | None) -> int | list[int] | None:
    """``--channels`` text: a count (``16``) or channel indices (``3,9,12``)."""
    if value is None:
        return None
    text = value.strip()
    try:
        if "," not in text:
            count = int(text)
            if count < 0:
                raise ValueError
            return count
        channels = [int(v) for v in text.split(",")]
        if not channels or any(c < 0 for c in channels):
            raise ValueError
        return channels
    except ValueError:
        raise OptionError(f"--channels {value!r}: give a count such as 16, or channel indices such as 3,9,12") from None


__all__ = ["MAX_CLASS_NAMES_BYTES", "names_from_json", "parse_channels", "parse_class_names", "parse_floats", "report_overrides"]
