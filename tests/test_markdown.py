"""The Markdown view: a GitHub-flavoured summary fit for a PR comment or $GITHUB_STEP_SUMMARY."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from torch import nn

from cnnreport.datamodel import Alert, AlertKind, Severity
from cnnreport.io.provenance import model_fingerprint
from cnnreport.render.views import MARKDOWN_LIMIT, fit_markdown, md_code, md_escape, render_markdown
from cnnreport.report.pipeline import build_report


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(x)).mean((2, 3)))


PROBES = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def report():
    torch.manual_seed(0)
    model = Small().eval()
    rep = build_report(model, PROBES, progress=False, attributions=False, graph=False, title="Bob's net & co", class_names=["cat", "dog", "b|rd"])
    rep.alerts = [Alert(kind=AlertKind.DEAD_CHANNELS, severity=Severity.WARNING, layer="conv", message="2 of 4 channels | constant")]
    return rep, model


def table_rows(md: str, header_start: str) -> list[list[str]]:
    """Cells of the GitHub table whose header row starts with ``header_start``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_summary_has_key_numbers_alerts_layers_and_provenance(report):
    rep, model = report
    md = render_markdown(rep)
    assert md.startswith("## Bob's net \\& co\n")
    assert f"| Parameters | {rep.model.total_params:,} ({rep.model.trainable_params:,} trainable, 0 frozen) |" in md
    assert "| Alerts | 0 errors, 1 warnings, 0 info |" in md
    assert table_rows(md, "| severity") == [["**warning**", "`conv`", "2 of 4 channels \\| constant"]]
    arch = table_rows(md, "| layer | type | output | parameters")
    assert [r[0] for r in arch] == ["`conv`", "`act`", "`head`"]
    assert arch[0][3] == "112" and arch[2][3] == "15"
    preds = table_rows(md, "| probe")
    assert len(preds) == 2 and preds[0][0] == "`probe 0`"
    assert model_fingerprint(model) in md
    assert "JSON schema version 1" in md


def test_markdown_is_escaped_for_markdown_not_html(report):
    rep, _ = report
    md = render_markdown(rep)
    assert "&amp;" not in md and "&#39;" not in md and "&lt;" not in md
    # A pipe in a class name must not split a table cell.
    if "b|rd" in {p.predictions[0].label for p in rep.probes}:
        assert "b\\|rd" in md


def test_escape_helpers():
    wj = "\u2060"  # WORD JOINER: breaks GitHub's mention and reference filters (see below)
    assert md_escape("a|b *c* _d_ [x](y) <s> @me #1 $x$ \\") == f"a\\|b \\*c\\* \\_d\\_ \\[x\\](y) \\<s\\> \\@{wj}me \\#{wj}1 \\$x\\$ \\\\"
    assert md_escape("two\nlines") == "two lines"
    assert md_code("features.0") == "`features.0`"
    assert md_code("a`b") == "``a`b``"
    assert md_code("`x`") == "`` `x` ``"
    assert md_code("a|b") == "`a\\|b`"
    assert md_code("<script>") == "`<script>`"  # code spans show text as is on GitHub


def test_layer_names_that_are_markup_stay_text():
    torch.manual_seed(0)
    model = Small().eval()
    model.add_module("x<img src=x onerror=alert(1)>", nn.Identity())
    md = render_markdown(build_report(model, PROBES, progress=False, attributions=False, graph=False))
    assert "<img" not in md.replace("`x<img src=x onerror=alert(1)>`", "")


def test_long_tables_are_cut_with_a_note_and_the_text_fits_a_comment(report):
    rep, _ = report
    row = next(r for r in rep.layers if r.is_leaf)
    rows = [dataclasses.replace(row, name=f"stage{i // 100}.block{i % 100}.conv_with_a_long_name") for i in range(5000)]
    alerts = [dataclasses.replace(rep.alerts[0], layer=f"layer{i}", message="x" * 300) for i in range(2000)]
    big = dataclasses.replace(rep, layers=rows, alerts=alerts)
    md = render_markdown(big)
    assert len(md) <= MARKDOWN_LIMIT
    assert "more layers in the HTML report" in md
    assert "more alerts in the HTML report" in md


def test_fit_markdown_takes_the_largest_table_that_fits():
    calls = []

    def render(rows: int) -> str:
        calls.append(rows)
        return "x" * (rows * 100)

    assert len(fit_markdown(render, limit=3500)) == 3000
    assert calls == [60, 30]
    cut = fit_markdown(lambda rows: "line\n" * 50000, limit=1000)
    assert len(cut) <= 1000 and cut.endswith("the HTML report has everything._\n")


def test_generate_report_writes_markdown(tmp_path):
    from cnnreport import generate_report

    torch.manual_seed(0)
    out = tmp_path / "r.md"
    generate_report(Small().eval(), PROBES, output=None, markdown=str(out), progress=False, attributions=False, graph=False)
    text = out.read_text(encoding="utf-8")
    assert text.startswith("## Small report\n") and "### Alerts" in text


# -- links GitHub would make of plain text -------------------------------------------------------
# GitHub renders Markdown with cmark-gfm (its autolink extension links www., http(s)://,
# mailto:/xmpp: and e-mail addresses while parsing), then runs filters over the HTML's text
# (@mentions, #12 / GH-12 references, e-mails again), where Markdown escapes are already gone.
# The first is checked by rendering through cmarkgfm, GitHub's own C library; the second by
# the patterns those filters match, written out here from GitHub's documentation.

HOSTILE = [
    "https://evil.example/x",
    "see http://evil.example",
    "www.evil.example",
    "(www.evil.example/path)",
    "WWW.EVIL.EXAMPLE",
    "mailto:boss@evil.example",
    "xmpp:boss@evil.example",
    "boss@evil.example",
    "@octocat",
    "@org/team",
    "#12",
    "GH-12",
    "owner/repo#12",
    "<https://evil.example>",
    "[click](https://evil.example)",
]
# What GitHub's HTML-time filters match in text (mentions, issue references, e-mails, and the
# www/http autolinks it applies outside comments).
HTML_TIME = re.compile(
    r"(?<![\w`])@[a-z0-9][a-z0-9-]*"
    r"|(?<![\w&])#\d+|[\w.-]+/[\w.-]+#\d+"
    r"|\bGH-\d+"
    r"|[\w.+-]+@[a-z0-9-]+\.[a-z]"
    r"|\bwww\.[a-z0-9-]"
    r"|\b(?:https?|ftp|mailto|xmpp):/*[a-z0-9]",
    re.IGNORECASE,
)


def github_html(md: str) -> str:
    cmarkgfm = pytest.importorskip("cmarkgfm", reason="cmarkgfm is not installed (pip install -e '.[test]')")
    return cmarkgfm.github_flavored_markdown_to_html(md)


def visible_text(html: str) -> str:
    """The text GitHub's filters look at: code spans and blocks are skipped, as they skip them."""
    import html as html_lib

    html = re.sub(r"<code>.*?</code>", " ", html, flags=re.S)
    return html_lib.unescape(re.sub(r"<[^>]+>", " ", html))


def test_the_checks_below_see_links_in_unescaped_text():
    # Without escaping every hostile string becomes a link or a mention: the checks can fail.
    html = github_html("\n\n".join(HOSTILE))
    assert html.count("<a ") >= 9
    assert all(HTML_TIME.search(visible_text(github_html(t))) for t in HOSTILE if not t.startswith("["))


@pytest.mark.parametrize("text", HOSTILE)
def test_md_escape_leaves_no_link_for_github_to_make(text):
    escaped = md_escape(text)
    html = github_html(f"| cell |\n|---|\n| {escaped} |\n\ntext {escaped} here\n")
    assert "<a " not in html, html
    assert not HTML_TIME.search(visible_text(html)), visible_text(html)
    # What a reader sees is the text itself: the joiners are invisible.
    assert text in visible_text(html).replace("\u2060", "")


def test_titles_class_names_and_diff_labels_render_as_text_on_github():
    from cnnreport.render.diff_views import render_diff_markdown
    from cnnreport.report.diff import diff_reports
    from cnnreport.report.pipeline import make_options

    torch.manual_seed(0)
    model = Small().eval()
    names = ["https://evil.example/x", "www.evil.example", "@octocat"]
    rep = build_report(model, PROBES, progress=False, attributions=False, graph=False, title="net at www.evil.example by @octocat", class_names=names)
    torch.manual_seed(1)
    other = Small().eval()
    diff = diff_reports(model, other, PROBES, options=make_options(None, progress=False), class_names=names, old_label="https://evil.example/old", new_label="boss@evil.example #12")
    for md in (render_markdown(rep), render_diff_markdown(diff)):
        html = github_html(md)
        assert "<a " not in html, [line for line in html.splitlines() if "<a " in line]
        found = HTML_TIME.findall(visible_text(html))
        assert found == [], found
    assert "evil.example" in render_diff_markdown(diff)  # the labels are shown, as text
