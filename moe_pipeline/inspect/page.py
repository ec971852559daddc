"""The HTML page of a report: the Report being built, tables, the style, writing the file.

Knows nothing of models or the registry: sections hand it text and figures.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Report:
    """One expert's report as it is built: title, sections with their figures, and the JSON summary."""

    title: str
    out: Path
    summary: dict[str, Any] = field(default_factory=dict)
    sections: list[tuple[str, str, list[Path]]] = field(default_factory=list)  # heading, html text, figures
    header: str = ""  # status and upstream versions, above every section

    def add(self, heading: str, text: str, figures: list[Path] | None = None, how: str = "") -> None:
        """`how`: one line on how to read the section, shown first."""
        lead = f"<p class='how'>{how}</p>" if how else ""
        self.sections.append((heading, lead + text, figures or []))


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))


STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;margin:.5em 0;display:block;max-width:100%;overflow-x:auto}"
         "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}"
         "th{background:#f3f3f3;text-align:left}img{max-width:100%}section{margin-bottom:2em}"
         ".how{color:#555;font-style:italic}.head{background:#f7f7f7;border:1px solid #ddd;padding:.6em 1em}"
         ".fresh{color:#1a7f37}.stale,.pending,.failed,.untrained{color:#b35900}"
         ".toc{background:#fafafa;border:1px solid #e3e3e3;padding:.4em 1em;margin:1em 0}.toc ol{margin:.3em 0}")


def figure_html(path: Path, alt: str | None = None) -> str:
    """A PNG as an inline <figure>: the page stays one self-contained file."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt or path.stem)}" src="data:image/png;base64,{data}"></figure>'


def drawn(draw, alt: str | None = None) -> str:
    """`draw(path)` writes a PNG (and returns its path) into a folder of its own; the figure, inline."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return figure_html(draw(Path(folder) / "figure.png"), alt)


def write_html(rep: Report) -> Path:
    """The page: title, status, a table of contents, then each section with its figures inline."""
    anchors = [re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-") for heading, _, _ in rep.sections]
    contents = "".join(f"<li><a href='#{a}'>{html.escape(h)}</a></li>" for a, (h, _, _) in zip(anchors, rep.sections))
    parts = [f"<h1>{html.escape(rep.title)}</h1>", rep.header, f"<nav class='toc'><b>Contents</b><ol>{contents}</ol></nav>"]
    for anchor, (heading, text, figs) in zip(anchors, rep.sections):
        parts.append(f"<section id='{anchor}'><h2>{html.escape(heading)}</h2>{text}")
        parts += [figure_html(fig) for fig in figs]
        parts.append("</section>")
    path = rep.out / "report.html"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(rep.title)}</title>"
                    f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    return path
