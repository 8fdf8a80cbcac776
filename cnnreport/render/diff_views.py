"""The diff page's views: HTML (the report page's frame and CSP), JSON and Markdown."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..datamodel import (
    JSON_SCHEMA_VERSION,
)
from ..figures import images as figures
from . import views as render

if TYPE_CHECKING:  # the document classes call these views: a runtime import would be a cycle
    from ..report.document import DiffReport


def render_diff_html(diff: DiffReport) -> str:
    """The self-contained diff page (same look and CSP as a report page)."""

    colour_bars = {name: figures.colour_bar(name) for name in (figures.WEIGHT_CMAP,)}
    return render.environment().get_template("diff.html.j2").render(
        diff=diff,
        data=diff.to_dict(),
        colour_bars=colour_bars,
        json_schema_version=JSON_SCHEMA_VERSION,
    )


def diff_json(diff: DiffReport) -> str:
    """The JSON view of a diff: everything the page shows but the figures, with a schema version."""
    payload = {"schema_version": JSON_SCHEMA_VERSION, "kind": "diff", **diff.to_dict()}
    return json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def render_diff_markdown(diff: DiffReport) -> str:
    """The GitHub-flavoured Markdown summary of a diff, under ``render.MARKDOWN_LIMIT`` characters."""

    template = render.markdown_environment().get_template("diff.md.j2")
    return render.fit_markdown(lambda rows: template.render(diff=diff, max_rows=rows, json_schema_version=JSON_SCHEMA_VERSION))
