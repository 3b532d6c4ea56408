"""The report as a list of blocks (headings, paragraphs, tables, figures, formulas), rendered as
one self-contained HTML page (figures embedded as base64 PNG, inline CSS, no script, no network)
or as Markdown (figures linked)."""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ferkeras.report.tex import tex_to_html


@dataclass
class Heading:
    """A question's title (level 2) or a part's (level 3); anchor links to it in HTML."""

    text: str
    anchor: str = ""
    level: int = 2  # 2: a question, 3: a part of one


@dataclass
class Paragraph:
    """Plain text; `code` spans become code in HTML."""

    text: str


@dataclass
class Table:
    """Rows of strings under a header; cells that are numbers are right-aligned in HTML."""

    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    """A PNG file: embedded in HTML, linked in Markdown."""

    path: Path
    caption: str


@dataclass
class Formula:
    """A displayed formula."""

    tex: str  # a small TeX subset (see tex_to_html); Markdown keeps it as $$...$$


Block = Heading | Paragraph | Table | Image | Formula


_CSS = """
body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; color: #1d1d1f;
       max-width: 1150px; margin: 2em auto; padding: 0 1.5em; line-height: 1.5; }
h1 { font-size: 1.7em; border-bottom: 2px solid #1d1d1f; padding-bottom: .2em; }
h2 { font-size: 1.35em; margin-top: 2.2em; border-bottom: 1px solid #bbb; padding-bottom: .15em; }
h3 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .8em 0 1.2em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f0f0f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 1.6em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #444; margin-top: .3em; }
.formula { font-family: "DejaVu Serif", "STIX Two Math", "Cambria Math", serif; font-size: 1.15em;
           margin: .7em 0 .7em 1.5em; }
.frac { display: inline-flex; flex-direction: column; vertical-align: middle; text-align: center;
        margin: 0 .15em; }
.frac > span:first-child { border-bottom: 1px solid; padding: 0 .2em; }
.radicand { border-top: 1px solid; padding: 0 .1em; }
.sum { display: inline-flex; align-items: center; margin: 0 .15em; }
.limits { display: inline-flex; flex-direction: column; font-size: .65em; margin-left: .1em;
          line-height: 1.2; }
nav ol { columns: 2; }
.meta td:first-child { font-weight: bold; white-space: nowrap; }
"""
_CODE = re.compile(r"`([^`]+)`")  # `name` in a paragraph: code, as Markdown has it
_NUMBER = re.compile(r"^[-+−]?[\d,]*\.?\d+(e[-+]?\d+)?%?$")

def render_html(title: str, blocks: list[Block]) -> str:
    """One self-contained page: inline CSS, figures as data: URIs, no script."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f' id="{block.anchor}"' if block.anchor else ""
            body.append(f"<h{block.level}{anchor}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            text = _CODE.sub(r"<code>\1</code>", html.escape(block.text))
            body.append(f"<p>{text}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            head = f"<thead><tr>{head}</tr></thead>" if any(block.header) else ""
            rows = "".join(
                "<tr>" + "".join(f'<td{" class=num" if _NUMBER.match(c) else ""}>{html.escape(c)}</td>'
                                 for c in row) + "</tr>\n" for row in block.rows)
            body.append(f"<table>{head}<tbody>\n{rows}</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
                        f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
        elif isinstance(block, Formula):
            body.append(f'<div class="formula">{tex_to_html(block.tex)}</div>')
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def render_markdown(title: str, blocks: list[Block], base: Path) -> str:
    """The same document in Markdown, figures linked relative to base (the report's folder)."""
    out = [f"# {title}"]
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, Table):
            cells = [block.header, ["---"] * len(block.header), *block.rows]
            out.append("\n".join("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
                                 for row in cells))
        elif isinstance(block, Image):
            out.append(f"![{block.caption}]({os.path.relpath(block.path, base)})\n\n*{block.caption}*")
        elif isinstance(block, Formula):
            out.append(f"$$\n{block.tex}\n$$")
    return "\n\n".join(out) + "\n"
