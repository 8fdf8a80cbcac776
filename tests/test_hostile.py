"""Issue 3, hostile input: names from the model, the title and class names are text, never markup."""

from __future__ import annotations

from html import escape as html_escape
from html.parser import HTMLParser

import torch
from torch import nn

from cnnreport import build_report

EVIL = "<img src=x onerror=alert(1)>"


class TagCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _model(first_name):
    model = nn.Sequential()
    model.add_module(first_name, nn.Conv2d(3, 4, 3, padding=1))
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", nn.Flatten())
    model.add_module("head", nn.Linear(4, 2))
    return model


def _tags(html):
    parser = TagCollector()
    parser.feed(html)
    return parser


def test_hostile_layer_title_and_class_names_render_as_text():
    torch.manual_seed(0)
    benign = build_report(_model("conv"), torch.rand(2, 3, 8, 8), title="t", class_names=["a", "b"], progress=False)
    report = build_report(
        _model(EVIL),
        torch.rand(2, 3, 8, 8),
        title="<script>alert('title')</script>",
        class_names=["<b>cat</b>", "dog</script><script>alert(2)"],
        progress=False,
    )
    html = report.to_html()
    parser = TagCollector()
    parser.feed(html)
    # No element came from the names: every <img> is one of ours, with a data URI and no handler.
    for tag, attrs in parser.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
    # The same elements as a report of a model with plain names: nothing injected.
    expected = _tags(benign.to_html())
    assert [t for t, _ in parser.tags].count("script") == [t for t, _ in expected.tags].count("script")
    assert [t for t, _ in parser.tags].count("img") == [t for t, _ in expected.tags].count("img")
    assert [t for t, _ in parser.tags].count("b") == [t for t, _ in expected.tags].count("b")
    text = "".join(parser.text)
    assert EVIL in text
    assert "<script>alert('title')</script>" in text
    # two classes: each probe lists both, so both names are there as text
    assert "<b>cat</b>" in text
    assert "dog</script><script>alert(2)" in text
    # each probe's prediction list names both classes, escaped as the stdlib escapes them
    for index, name in enumerate(["<b>cat</b>", "dog</script><script>alert(2)"]):
        shown = html_escape(name, quote=False)
        assert html.count(f'<span class="plabel" title="class {index}: {shown}">{shown}</span>') == 2, name
