"""The renderers' escaping, on literal inputs with literal expected strings: Markdown escaping
and code spans, the Markdown finalizer, both Jinja environments' settings, the mosaics' tile
labels and the Markdown summary's fitting to GitHub's comment limit.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import jinja2
import pytest
from markupsafe import Markup

from cnnreport.datamodel import Figure, Mosaic, Tile
from cnnreport.render.views import (
    MarkdownText,
    fit_markdown,
    make_environment,
    make_markdown_environment,
    md_code,
    md_escape,
    tile_labels,
)

WJ = "\u2060"  # WORD JOINER
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"

# -- md_escape -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\\b", "a\\\\b"),
        ("a`b", "a\\`b"),
        ("a*b", "a\\*b"),
        ("a_b", "a\\_b"),
        ("[a]", "\\[a\\]"),
        ("<a>", "\\<a\\>"),
        ("a|b", "a\\|b"),
        ("~a~", "\\~a\\~"),
        ("a&b", "a\\&b"),
        ("$a$", "\\$a\\$"),
        ("a@b", f"a\\@{WJ}b"),
        ("#1", f"\\#{WJ}1"),
        ("(a). !b-c+d", "(a). !b-c+d"),  # punctuation without a meaning here is left alone
        ("plain words", "plain words"),
        ("", ""),
    ],
)
def test_md_escape_backslashes_each_special_character(text, expected):
    assert md_escape(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://x.org", f"https:{WJ}//x.org"),
        ("mailto:me", f"mailto:{WJ}me"),
        ("a:1", f"a:{WJ}1"),
        ("a: b", "a: b"),  # a colon before a space is no scheme
        ("1:2", "1:2"),  # nor after a digit
        ("www.x.org", f"www{WJ}.x.org"),
        ("WwW.x", f"WwW{WJ}.x"),
        ("awww.x", "awww.x"),  # www inside a word
        ("www x", "www x"),
        ("GH-12", f"GH{WJ}-12"),
        ("gh-1", f"gh{WJ}-1"),
        ("ugh-1", "ugh-1"),  # gh inside a word
        ("@@", f"\\@{WJ}\\@{WJ}"),
    ],
)
def test_md_escape_breaks_autolink_triggers_with_a_word_joiner(text, expected):
    assert md_escape(text) == expected


def test_md_escape_joins_lines_with_spaces():
    assert md_escape("one\ntwo\r\nthree\rfour") == "one two three four"
    assert md_escape("end\n") == "end"
    assert md_escape("a\n\nb") == "a  b"


def test_md_escape_takes_any_value_and_returns_markdown_text():
    assert md_escape(12) == "12"
    assert md_escape(None) == "None"
    assert md_escape(["a|b"]) == "\\['a\\|b'\\]"
    out = md_escape("a|b")
    assert type(out) is MarkdownText
    # already Markdown: passed through unchanged, not escaped twice
    assert md_escape(out) == "a\\|b"
    assert md_escape(MarkdownText("**bold**")) == "**bold**"


# -- md_code -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("x", "`x`"),
        (5, "`5`"),
        ("a_b*c", "`a_b*c`"),  # nothing is escaped inside a code span
        ("a``b", "```a``b```"),  # fence one longer than the longest run
        ("a`b``c```d", "````a`b``c```d````"),
        ("`a", "`` `a ``"),  # a backtick at one end needs a space inside the fence
        ("a`", "`` a` ``"),
        (" a ", "` a `"),
        ("a|b|c", "`a\\|b\\|c`"),
        ("two\nlines", "`two lines`"),
    ],
)
def test_md_code_fences_and_pads(value, expected):
    assert md_code(value) == expected


def test_md_code_of_nothing_is_nothing():
    assert md_code("") == ""
    assert type(md_code("")) is MarkdownText
    assert md_code("\n") == ""
    assert type(md_code("x")) is MarkdownText


# -- the Markdown environment ---------------------------------------------------------------------


@pytest.fixture
def md_env(tmp_path):
    return make_markdown_environment(tmp_path)


def test_markdown_values_are_escaped_for_markdown_and_none_is_blank(md_env):
    t = md_env.from_string("[{{ a }}][{{ b }}][{{ c }}][{{ d }}][{{ e }}]")
    assert t.render(a=None, b="x|<y>", c=0, d=False, e="") == "[][x\\|\\<y\\>][0][False][]"


def test_markdown_filters_code_and_md_pass_through_the_finalizer(md_env):
    t = md_env.from_string("{{ name|code }} {{ name|md }} {{ 0.5|textbar }} {{ 1234567|int }}")
    assert t.render(name="a_<b>") == "`a_<b>` a\\_\\<b\\> ██████░░░░░░ 1,234,567"


def test_markdown_environment_is_strict_about_undefined_names(md_env):
    with pytest.raises(jinja2.UndefinedError):
        md_env.from_string("{{ missing }}").render()


def test_markdown_environment_trims_blocks_and_keeps_the_last_newline(md_env):
    t = md_env.from_string("  {% if x %}\nA\n  {% endif %}\nB\n")
    assert t.render(x=True) == "A\nB\n"


def test_markdown_environment_loads_from_the_given_folder_or_the_templates(tmp_path):
    (tmp_path / "t.md.j2").write_text("# {{ title }}\n", encoding="utf-8")
    assert make_markdown_environment(tmp_path).get_template("t.md.j2").render(title="a*b") == "# a\\*b\n"
    default = make_markdown_environment()
    assert default.get_template("report.md.j2").filename == str(TEMPLATES / "report.md.j2")
    with pytest.raises(jinja2.TemplateNotFound):
        default.get_template("t.md.j2")


# -- the HTML environment -------------------------------------------------------------------------


@pytest.fixture
def html_env(tmp_path):
    return make_environment(tmp_path)


def test_html_values_are_escaped(html_env):
    t = html_env.from_string("<p title=\"{{ x }}\">{{ x }}</p>")
    assert t.render(x="<b>&'\"") == '<p title="&lt;b&gt;&amp;&#39;&#34;">&lt;b&gt;&amp;&#39;&#34;</p>'
    assert html_env.from_string("{{ x }}").render(x=Markup("<i>ok</i>")) == "<i>ok</i>"


def test_html_environment_is_strict_trims_blocks_and_keeps_the_last_newline(html_env):
    with pytest.raises(jinja2.UndefinedError):
        html_env.from_string("{{ missing }}").render()
    assert html_env.from_string("  {% if x %}\nA\n  {% endif %}\nB\n").render(x=True) == "A\nB\n"


def test_html_environment_has_the_filters(html_env):
    t = html_env.from_string("{{ 1234567|int }} {{ [1, 16, 28]|shape }} {{ 0.25|bar_width }}")
    assert t.render() == "1,234,567 1×16×28 25.0%"


def test_html_json_is_sorted_ascii_and_safe_in_a_script(html_env):
    t = html_env.from_string("{{ d|tojson }}")
    assert t.render(d={"b": 1, "a": "é</"}) == r'{"a": "\u00e9\u003c/", "b": 1}'


def test_html_environment_writes_the_page_scripts_and_their_hashes(tmp_path):
    env = make_environment(tmp_path)
    script = (TEMPLATES / "script.js").read_text(encoding="utf-8")
    assert env.from_string("{{ inline_script('script.js') }}").render() == script
    expected = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256((TEMPLATES / n).read_bytes()).digest()).decode() + "'"
        for n in ("script.js", "graph.js")
    )
    assert env.from_string("{{ script_src() }}").render() == expected


def test_html_environment_loads_from_the_given_folder_or_the_templates(tmp_path):
    (tmp_path / "t.html.j2").write_text("<h1>{{ title }}</h1>\n", encoding="utf-8")
    assert make_environment(tmp_path).get_template("t.html.j2").render(title="a<b") == "<h1>a&lt;b</h1>\n"
    default = make_environment()
    assert default.get_template("base.html.j2").filename == str(TEMPLATES / "base.html.j2")
    with pytest.raises(jinja2.TemplateNotFound):
        default.get_template("t.html.j2")


# -- tile labels ---------------------------------------------------------------------------------


def mosaic(columns: int, tiles: list[Tile]) -> Mosaic:
    return Mosaic(figure=Figure(png=b"", width=1, height=1, alt=""), columns=columns, rows=2, tiles=tiles,
                  vmin=0.0, vmax=1.0, colormap="gray")


def test_tile_labels_place_each_tile_by_column_and_row_and_escape_the_text():
    tiles = [Tile("0", 0, 0, 1, 1, title="ch <0>"), Tile("a&b", 1, 0, 1, 1, title='say "hi"'),
             Tile("2", 2, 0, 1, 1), Tile("<3>", 0, 1, 1, 1, title="it's")]
    out = tile_labels(mosaic(3, tiles))
    assert out == (
        '<span class="tile" style="--i:0;--j:0" title="ch &lt;0&gt;">0</span>'
        '<span class="tile" style="--i:1;--j:0" title="say &#34;hi&#34;">a&amp;b</span>'
        '<span class="tile" style="--i:2;--j:0" title="">2</span>'
        '<span class="tile" style="--i:0;--j:1" title="it&#39;s">&lt;3&gt;</span>'
    )
    assert type(out) is Markup


def test_tile_labels_with_no_columns_put_one_tile_per_row():
    tiles = [Tile("a", 0, 0, 1, 1), Tile("b", 0, 1, 1, 1)]
    expected = ('<span class="tile" style="--i:0;--j:0" title="">a</span>'
                '<span class="tile" style="--i:0;--j:1" title="">b</span>')
    assert tile_labels(mosaic(0, tiles)) == expected
    assert tile_labels(mosaic(-2, tiles)) == expected
    assert tile_labels(mosaic(1, tiles)) == expected
    assert tile_labels(mosaic(2, [])) == ""


# -- fitting the summary -----------------------------------------------------------------------

NOTE = "\n\n_Summary cut to fit GitHub's comment limit; the HTML report has everything._\n"  # 79 characters


def test_fit_markdown_returns_the_first_render_that_fits_exactly():
    calls = []

    def render(rows):
        calls.append(rows)
        return "x" * {60: 500, 30: 400, 15: 300, 5: 250, 0: 100}[rows]

    assert fit_markdown(render, limit=250) == "x" * 250
    assert calls == [60, 30, 15, 5]
    calls.clear()
    assert fit_markdown(render, limit=500) == "x" * 500
    assert calls == [60]
    calls.clear()
    assert fit_markdown(render, limit=100) == "x" * 100
    assert calls == [60, 30, 15, 5, 0]


def test_fit_markdown_at_the_default_limit_of_65000():
    assert fit_markdown(lambda rows: "y" * 65_000) == "y" * 65_000
    assert fit_markdown(lambda rows: "y" * (65_001 if rows == 60 else 64_000)) == "y" * 64_000


def test_fit_markdown_cuts_the_last_render_at_a_line_and_adds_a_note():
    assert len(NOTE) == 79
    calls = []

    def render(rows):
        calls.append(rows)
        return "ab\n" * (200 + rows)

    # limit 100: the cut is the last newline before 100 - 79 = 21, at index 20
    out = fit_markdown(render, limit=100)
    assert out == "ab\n" * 6 + "ab" + NOTE
    assert calls == [60, 30, 15, 5, 0]
    # newlines at 2, 5, ..., 20, 23: at limit 102 the search ends before 23, at 103 it reaches 23
    assert fit_markdown(render, limit=102) == "ab\n" * 6 + "ab" + NOTE
    assert fit_markdown(render, limit=103) == "ab\n" * 7 + "ab" + NOTE


def test_fit_markdown_without_a_newline_keeps_only_the_note():
    assert fit_markdown(lambda rows: "z" * 500, limit=100) == NOTE
