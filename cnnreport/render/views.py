"""The renderers: one autoescaped Jinja2 environment for HTML, plus JSON and Markdown views,
and atomic writes so a good report is never replaced by half of a new one.

Only this module knows HTML. Templates live in the repository's top-level ``templates/``, which
the wheel maps to ``cnnreport/templates``; both places are searched.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import jinja2
from markupsafe import Markup, escape

from ..datamodel import JSON_SCHEMA_VERSION, ExampleSet, Figure, LayerExamples, LayerSection, Mosaic, _plain
from ..errors import OutputError
from ..figures import images as figures
from ..figures.spectral_svg import alpha_chart
from ..support.gcpause import gc_paused
from .outputs import plan_outputs, write_output_set
from .template_cache import attach_template_cache

if TYPE_CHECKING:  # the document classes call these views: a runtime import would be a cycle
    from ..report.document import Report


def template_dir() -> Path:
    """``cnnreport/templates`` in an installed wheel, ``templates/`` in a source checkout."""
    here = Path(__file__).resolve().parents[1]  # the package folder: this module sits in cnnreport/render/
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "base.html.j2").is_file():
            return candidate
    raise OutputError(f"cnnreport's templates are missing (looked in {here / 'templates'}): reinstall cnnreport")


# -- formatting filters --------------------------------------------------------------------


def fmt_int(value: Any) -> str:
    """Thousands separators; blanks for missing values."""
    if value is None or value == "":
        return ""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)


def fmt_float(value: Any, digits: int = 4) -> str:
    """Up to ``digits`` significant digits; scientific notation for tiny or huge values."""
    if value is None:
        return "–"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def fmt_pct(value: Any, digits: int = 1) -> str:
    """A percentage; "NaN" for a NaN (a NaN probability is not "nan%"), blank for None."""
    if value is None:
        return ""
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "∞%" if v > 0 else "−∞%"
    return f"{v:.{digits}f}%"


def bar_width(fraction: Any) -> str:
    """A bar's CSS width for a fraction in [0, 1]: "0%" where it is not a finite number."""
    try:
        v = float(fraction)
    except (TypeError, ValueError):
        return "0%"
    return f"{100 * min(max(v, 0.0), 1.0):.1f}%" if math.isfinite(v) else "0%"


def fmt_bytes(value: Any) -> str:
    v = float(value or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if v < 1024 or unit == "GB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} GB"


def fmt_shape(value: Any) -> str:
    """``[1, 16, 28, 28]`` as ``1×16×28×28``; nested shapes (several outputs) joined by commas."""
    if value is None or value == []:
        return ""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
        return "×".join(str(v) for v in value)
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_shape(v) for v in value)
    return str(value)


def fmt_large(value: Any) -> str:
    """Mult-adds and similar: 4.1 G, 230.4 M, 12.3 K."""
    v = float(value or 0)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.2f} {unit}"
    return f"{int(v):,}"


def data_uri(figure: Figure | None) -> Markup:
    """A figure's ``data:`` URI, marked safe: base64 has no character HTML escapes, and
    escaping would copy every image's bytes once more (megabytes on a deep model's page)."""
    return Markup(figure.data_uri()) if figure is not None else Markup("")


def tile_labels(mosaic: Mosaic) -> Markup:
    """The hover labels of a mosaic's tiles, each placed by its grid column and row.

    Built here rather than in a template loop: a ResNet-50 page has ~7,000 of them, and the
    loop's per-attribute escaping was a sixth of the render time. Labels are still escaped.
    """
    columns = max(mosaic.columns, 1)
    # Plain f-strings with explicit escape(): Markup.format goes through string.Formatter and
    # was most of this function's cost.
    return Markup(
        "".join(
            f'<span class="tile" style="--i:{i % columns};--j:{i // columns}" title="{escape(t.title)}">{escape(t.label)}</span>'
            for i, t in enumerate(mosaic.tiles)
        )
    )


def _finite(values: Any) -> list[float]:
    """The finite numbers of ``values``; the list itself when its sum is finite (one C loop:
    a NaN or an Inf anywhere makes the sum non-finite), so the common case costs no test per item."""
    if not isinstance(values, list):
        values = list(values)
    try:
        if math.isfinite(sum(values)):
            return values
    except TypeError:
        pass
    isfinite = math.isfinite
    return [v for v in values if isinstance(v, (int, float)) and isfinite(v)]


def smallest(values: Any) -> Any:
    """``min`` of the finite numbers (None if there is none): Jinja's own ``min`` filter calls
    a Python function per item (case folding): a tenth of the page's render time on a
    ResNet-50's channel means. NaN is left out: ``min`` with a NaN depends on the order."""
    finite = _finite(values)
    return min(finite) if finite else None


def largest(values: Any) -> Any:
    """``max`` of the finite numbers, without Jinja's per-item overhead (see :func:`smallest`)."""
    finite = _finite(values)
    return max(finite) if finite else None


#: A kind of alert raised on more layers than this reads as one line: the count, the worst
#: layers first, the rest folded (all of them stay in the JSON view).
FOLD_ALERTS_OVER = 4
#: Alerts of a folded kind shown before the fold.
FOLDED_ALERTS_SHOWN = 3


@dataclass
class AlertGroup:
    """The alerts of one kind as the page lists them: worst first, folded past a few."""

    kind: str
    alerts: list[Any]  # worst first: severity, then the alert's figure (its value), then position
    folded: bool

    @property
    def shown(self) -> list[Any]:
        return self.alerts[:FOLDED_ALERTS_SHOWN] if self.folded else self.alerts

    @property
    def rest(self) -> list[Any]:
        return self.alerts[FOLDED_ALERTS_SHOWN:] if self.folded else []

    def count(self, severity: str) -> int:
        return sum(1 for alert in self.alerts if alert.severity.value == severity)


def alert_groups(alerts: Sequence[Any]) -> list[AlertGroup]:
    """``alerts`` (worst first, as :func:`~cnnreport.analysis.alerts.health_alerts` sorts them) by
    kind, kinds in the order of their worst alert; a kind with more than :data:`FOLD_ALERTS_OVER`
    alerts is folded, its worst first (by severity, then by its figure: the dead fraction, the
    scale ratio, ...)."""
    by_kind: dict[str, list[Any]] = {}
    for alert in alerts:
        by_kind.setdefault(alert.kind.value, []).append(alert)
    groups = []
    for kind, members in by_kind.items():
        folded = len(members) > FOLD_ALERTS_OVER
        if folded:
            members = sorted(members, key=lambda a: (-a.severity.rank, -_figure(a.value)))  # stable: position breaks ties
        groups.append(AlertGroup(kind, members, folded))
    return groups


def mean_of(values: Any) -> float | None:
    """The mean of the finite numbers (None if there is none): a layer's statistic over the
    example set from its channels' own, each over the same number of values."""
    finite = _finite(values)
    return math.fsum(finite) / len(finite) if finite else None


def _figure(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf


FILTERS: dict[str, Callable[..., str]] = {
    "smallest": smallest,
    "largest": largest,
    "mean_of": mean_of,
    "tile_labels": tile_labels,
    "int": fmt_int,
    "num": fmt_float,
    "pct": fmt_pct,
    "bar_width": bar_width,
    "bytes": fmt_bytes,
    "shape": fmt_shape,
    "large": fmt_large,
    "data_uri": data_uri,
    "alert_groups": alert_groups,
}


# -- the page's own scripts -------------------------------------------------------------------
# The pages' Content-Security-Policy lets a script run only when its text hashes to one of
# these files, so nothing that ever slipped past escaping can run. A template writes a script
# as ``<script>{{ inline_script("script.js") }}</script>``: the element's text is then exactly
# the file's, the text the hash was computed over.

#: The inline scripts a page may run, by file name in ``templates/``.
PAGE_SCRIPTS = ("script.js", "graph.js")


@functools.lru_cache(maxsize=None)
def _script_text(name: str) -> str:
    if name not in PAGE_SCRIPTS:
        raise OutputError(f"template asks for script {name!r}, which is not one of the page scripts {PAGE_SCRIPTS}")
    text = (template_dir() / name).read_text(encoding="utf-8")
    # Either would end or re-nest the <script> element early, so the browser's text would
    # differ from the hashed one (and the page's script would be refused).
    lowered = text.lower()
    if "</script" in lowered or "<!--" in lowered:
        raise OutputError(f"templates/{name} contains '</script' or '<!--'; split the string so the page script stays one element")
    return text


def inline_script(name: str) -> Markup:
    """The text of one of :data:`PAGE_SCRIPTS`, for the inside of a ``<script>`` element."""
    return Markup(_script_text(name))


@functools.lru_cache(maxsize=None)
def script_src() -> Markup:
    """The CSP ``script-src`` sources: ``'sha256-…'`` of each page script's UTF-8 text."""
    hashes = (base64.b64encode(hashlib.sha256(_script_text(n).encode("utf-8")).digest()).decode("ascii") for n in PAGE_SCRIPTS)
    return Markup(" ".join(f"'sha256-{h}'" for h in hashes))


def make_environment(directory: Path | None = None) -> jinja2.Environment:
    """The one Jinja2 environment: autoescape on for everything, undefined names are errors."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory or template_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(FILTERS)
    env.globals.update(inline_script=inline_script, script_src=script_src)
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": True}
    return attach_template_cache(env) if directory is None else env


_ENV: jinja2.Environment | None = None


def environment() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        _ENV = make_environment()
    return _ENV


# -- Markdown --------------------------------------------------------------------------------
# The HTML environment's autoescaping would turn a layer named ``a<b`` into ``a&lt;b``, which
# GitHub shows literally inside code spans. Markdown gets its own environment: no HTML
# autoescaping, but a finalizer that escapes every ``{{ value }}`` for Markdown instead, so a
# name can neither break a table nor inject a link, a mention or markup. Text a filter already
# formatted as Markdown (``|code``) is a :class:`MarkdownText` and passes unchanged.

#: GitHub rejects comments over 65,536 characters; summaries stay under this.
MARKDOWN_LIMIT = 65_000


class MarkdownText(str):
    """Markdown that is already escaped; the Markdown finalizer leaves it alone."""


# ASCII punctuation that means something in GitHub Markdown inline text ($ is math, @ a
# mention, # an issue link); a backslash makes each literal (CommonMark allows it before any).
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&@$#])")


# GitHub turns plain text into links in two places: cmark-gfm's autolink extension while
# parsing (``www.`` + domain, ``http(s)://``, ``mailto:``/``xmpp:``, ``user@host.tld``; GFM spec,
# "Autolinks (extension)"), and filters over the rendered HTML (``@user`` mentions, ``#12`` and
# ``GH-12`` references, e-mail addresses again). The second pass sees text after Markdown
# escapes are gone, so a backslash cannot stop it. A WORD JOINER (U+2060: invisible, no line
# break) placed inside each trigger does: after a scheme's ``:`` before ``/`` or a letter (``https://``,
# ``mailto:``), between ``www`` and its dot, after ``@`` and ``#``, and inside ``GH-``.
WORD_JOINER = "\u2060"
_MD_AUTOLINK = re.compile(r"(?<=[A-Za-z]:)(?=[/\w])|(?<=[@#])|(?<=(?<![^\W_])[wW]{3})(?=\\?\.)|(?<=\b[gG][hH])(?=-)")


def md_escape(value: Any) -> MarkdownText:
    """Plain text for a Markdown line or table cell: specials escaped, newlines as spaces,
    and every autolink or mention trigger broken by an invisible WORD JOINER, so text from a
    model or a label never becomes a link, a mention or markup on GitHub."""
    if isinstance(value, MarkdownText):
        return value
    text = " ".join(str(value).splitlines())
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return MarkdownText(_MD_AUTOLINK.sub(WORD_JOINER, text))


def md_code(value: Any) -> MarkdownText:
    """An inline code span that survives backticks and table pipes in ``value``."""
    text = " ".join(str(value).splitlines()).replace("|", "\\|")  # GFM splits cells first
    if not text:
        return MarkdownText("")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return MarkdownText(f"{fence}{pad}{text}{pad}{fence}")


def text_bar(fraction: Any, width: int = 12) -> str:
    """A bar of block characters for a value in [0, 1]: a bar chart that survives Markdown."""
    try:
        filled = int(round(min(1.0, max(0.0, float(fraction))) * width))
    except (TypeError, ValueError):
        filled = 0
    return "█" * filled + "░" * (width - filled)


def _md_finalize(value: Any) -> Any:
    if value is None:
        return ""
    return md_escape(value)


def make_markdown_environment(directory: Path | None = None) -> jinja2.Environment:
    """The Markdown environment: the same filters, Markdown escaping instead of HTML escaping."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory or template_dir())),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        finalize=_md_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(FILTERS)
    env.filters.update({"code": md_code, "md": md_escape, "textbar": text_bar})
    return attach_template_cache(env) if directory is None else env


_MD_ENV: jinja2.Environment | None = None


def markdown_environment() -> jinja2.Environment:
    global _MD_ENV
    if _MD_ENV is None:
        _MD_ENV = make_markdown_environment()
    return _MD_ENV


def fit_markdown(render: Callable[[int], str], limit: int = MARKDOWN_LIMIT) -> str:
    """Render with fewer table rows until the text fits ``limit`` characters.

    ``render(max_rows)`` renders the template with at most ``max_rows`` rows per table; the
    template says how many rows it left out. A last resort cuts the text at a line boundary.
    """
    text = ""
    for rows in (60, 30, 15, 5, 0):
        text = render(rows)
        if len(text) <= limit:
            return text
    note = "\n\n_Summary cut to fit GitHub's comment limit; the HTML report has everything._\n"
    cut = text.rfind("\n", 0, limit - len(note))
    return text[: max(cut, 0)] + note


# -- views ---------------------------------------------------------------------------------


@gc_paused
def render_html(report: Report) -> str:
    """The whole self-contained page as a string."""

    colour_bars = {name: figures.colour_bar(name) for name in (figures.ACTIVATION_CMAP, figures.WEIGHT_CMAP, figures.HEAT_CMAP)}
    return environment().get_template("base.html.j2").render(
        report=report,
        # The page needs only these two as plain data; the whole to_dict() costs ~0.3 s on a
        # ResNet-50 report and is built for the JSON view instead.
        data={"options": _plain(report.options), "provenance": _plain(report.provenance)},
        colour_bars=colour_bars,
        json_schema_version=JSON_SCHEMA_VERSION,
        # The SVGs are markup our graph module built with every text escaped.
        graph_svg=report.graph_svg,
        graph_full_svg=report.graph_full_svg,
        graph_group_svgs=report.graph_group_svgs,
        # Markup the chart's module built with every name escaped; drawn only with --spectral.
        spectral_svg=alpha_chart(report.spectral, low=report.options.spectral_alpha_low, high=report.options.spectral_alpha_high) if report.spectral else "",
        **_examples_context(report.examples, report.sections),
    )


def _examples_context(examples: ExampleSet | None, sections: Sequence[LayerSection]) -> dict[str, Any]:
    """The dataset examples by the section they show in (a layer without one is not shown)."""
    if examples is None:
        return {"examples_by_section": {}, "examples_shown": []}
    ids = {s.id for s in sections}
    shown = [lx for lx in examples.layers if lx.section_id in ids]
    return {"examples_by_section": {lx.section_id: lx for lx in shown}, "examples_shown": shown}


_EXAMPLES_MARKUP = """{% from "_examples.html.j2" import examples_nav, examples_overview, examples_block %}
{% include "_examples.css" %}
{{ examples_nav(ex) }}
{{ examples_overview(ex, shown) }}
{% for lx, section in pairs %}
{{ examples_block(ex, lx, section, probe_count) }}
{% endfor %}
"""


@functools.lru_cache(maxsize=None)
def _examples_template() -> jinja2.Template:
    return environment().from_string(_EXAMPLES_MARKUP)


def examples_markup(examples: ExampleSet, sections: Sequence[LayerSection] | None = None, probe_count: int = 0) -> str:
    """Everything the page writes for ``examples``, as the page writes it (the same macros):
    their style sheet, nav entry, overview paragraph, and a block per layer whose section is
    among ``sections``, figures inline. For the size budget, which measures these bytes
    instead of guessing them. ``sections=None``: every layer, as if each had its section
    (without the probes' side of the comparison, a few hundred bytes a layer)."""
    if sections is None:
        pairs: list[tuple[LayerExamples, LayerSection | None]] = [(lx, None) for lx in examples.layers]
        shown = list(examples.layers)
    else:
        by_id = {s.id: s for s in sections}
        pairs = [(lx, by_id[lx.section_id]) for lx in examples.layers if lx.section_id in by_id]
        shown = [lx for lx, _ in pairs]
    return _examples_template().render(ex=examples, shown=shown, pairs=pairs, probe_count=probe_count)


def report_json(report: Report) -> str:
    """The JSON view: everything the page shows but the figures, with a schema version."""
    payload = {"schema_version": JSON_SCHEMA_VERSION, **report.to_dict()}
    return json.dumps(payload, indent=2, sort_keys=False, ensure_ascii=False, allow_nan=False) + "\n"


def render_markdown(report: Report) -> str:
    """The GitHub-flavoured Markdown summary (PR comment, ``$GITHUB_STEP_SUMMARY``), under
    :data:`MARKDOWN_LIMIT` characters."""
    template = markdown_environment().get_template("report.md.j2")
    return fit_markdown(lambda rows: template.render(report=report, max_rows=rows, json_schema_version=JSON_SCHEMA_VERSION))


#: The inline frame's starting height; the reader can drag its bottom edge to resize it.
FRAME_HEIGHT_PX = 800


def framed_html(page: str, title: str = "") -> str:
    """``page`` inside a sandboxed inline frame, for a notebook's output cell (``_repr_html_``).

    The page travels whole in ``srcdoc`` (HTML-escaped), so its Content-Security-Policy and
    script hashes apply inside the frame as in a file. ``sandbox="allow-scripts"`` without
    ``allow-same-origin`` gives the frame an opaque origin: its scripts run, but they cannot
    reach the notebook's page, cookies or kernel, and the notebook's styles cannot reach it.
    Nothing outside the attribute is a script, so the notebook's page runs none of ours.
    """
    label = escape(f"cnnreport: {title}" if title else "cnnreport report")
    srcdoc = escape(page)  # &, <, >, " and ' escaped: the attribute holds the page as text
    return (
        f'<div class="cnnreport-frame" style="resize:vertical;overflow:hidden;width:100%;height:{FRAME_HEIGHT_PX}px;'
        'border:1px solid #d0d7de;box-sizing:border-box">'
        f'<iframe sandbox="allow-scripts" title="{label}" style="width:100%;height:100%;border:0;display:block" srcdoc="{srcdoc}"></iframe>'
        "</div>"
    )


# -- writing -------------------------------------------------------------------------------


def write_views(
    views: Sequence[tuple[str | os.PathLike[str], Callable[[], str]]],
    inputs: Sequence[tuple[str, str]] = (),
) -> list[str]:
    """Render every ``(path, render)`` view first, then write them as one set: a failure in any
    rendering or write leaves every path as it was (see :mod:`cnnreport.outputs`).

    Before anything is rendered, the paths are checked as every run's outputs are: a path that
    is one of ``inputs`` (the files the report was made from), the source of a loaded Python
    module, another of the paths, or cannot be written raises :class:`OutputError`.
    """

    plan_outputs([("output", path) for path, _ in views], inputs)
    texts = [(path, render()) for path, render in views]
    return write_output_set(texts)


def provenance_inputs(*provenances: Any) -> list[tuple[str, str]]:
    """The files a report records it was made from (checkpoint, probe files): never outputs."""
    found: list[tuple[str, str]] = []
    for prov in provenances:
        if prov is None:
            continue
        if getattr(prov, "checkpoint_path", ""):
            found.append(("the checkpoint", prov.checkpoint_path))
        found += [("the probe", f.source) for f in getattr(prov, "probe_files", []) if getattr(f, "source", "")]
    return found


def write_html(report: Report, path: str) -> str:
    return report.write(html=path)[0]


def write_json(report: Report, path: str) -> str:
    return report.write(json=path)[0]


def write_markdown(report: Report, path: str) -> str:
    return report.write(markdown=path)[0]
