"""A tiny document model (sections of text, tables and images) rendered to self-contained HTML
(images as base64 data URIs, inline CSS, no scripts, no external references) or to Markdown with
the images written next to it."""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worldflux.core.io import atomic_write_bytes

__all__ = ["Image", "Section", "Table", "Text", "render_html", "render_markdown"]


@dataclass
class Text:
    """A paragraph of plain text (escaped on output); ``note`` renders it muted."""

    text: str
    note: bool = False


@dataclass
class Table:
    """A table of cells (numbers are formatted with 4 significant digits)."""

    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""


@dataclass
class Image:
    """An embedded image: PNG or GIF bytes."""

    data: bytes
    name: str
    """File name in the Markdown twin (``fidelity.png``); also the alt text's fallback."""
    caption: str = ""

    @property
    def mime(self) -> str:
        return "image/gif" if self.data[:4] == b"GIF8" else "image/png"


@dataclass
class Section:
    title: str
    blocks: list[Text | Table | Image] = field(default_factory=list)
    details: bool = False
    """Render collapsed (``<details>``) in HTML."""


def cell(value: Any) -> str:
    """Text of one table cell."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;
max-width:1200px;padding:1.5em;color:#1f1f1f;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;
padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:top;text-align:left;color:#555;padding-bottom:.3em}
figure{margin:.8em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}.note{color:#777;font-size:.9em}
summary{cursor:pointer;font-weight:600}
"""


def _html_block(block: Text | Table | Image) -> str:
    if isinstance(block, Text):
        cls = ' class="note"' if block.note else ""
        return f"<p{cls}>{html.escape(block.text)}</p>"
    if isinstance(block, Table):
        caption = f"<caption>{html.escape(block.caption)}</caption>" if block.caption else ""
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block.headers)
        body = []
        for row in block.rows:
            cells = "".join(
                f'<td class="num">{html.escape(cell(v))}</td>'
                if isinstance(v, (int, float)) and not isinstance(v, bool)
                else f"<td>{html.escape(cell(v))}</td>" for v in row)
            body.append(f"<tr>{cells}</tr>")
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}" \
               "</tbody></table>"
    encoded = base64.b64encode(block.data).decode("ascii")
    alt = html.escape(block.caption or block.name)
    caption = f"<figcaption>{html.escape(block.caption)}</figcaption>" if block.caption else ""
    return f'<figure><img alt="{alt}" src="data:{block.mime};base64,{encoded}">{caption}' \
           "</figure>"


def render_html(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """One self-contained HTML page."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", f'<p class="note">{html.escape(subtitle)}</p>']
    for section in sections:
        inner = "\n".join(_html_block(b) for b in section.blocks)
        if section.details:
            parts.append(f"<details><summary>{html.escape(section.title)}</summary>{inner}"
                         "</details>")
        else:
            parts.append(f"<h2>{html.escape(section.title)}</h2>\n{inner}")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _md_escape(text: str) -> str:
    return re.sub(r"([|\\`*_\[\]<>])", r"\\\1", text)


def render_markdown(title: str, subtitle: str, sections: Sequence[Section],
                    assets: str | os.PathLike, link_prefix: str) -> str:
    """Markdown text; images are written into ``assets`` and linked as ``link_prefix/name``."""
    assets = Path(assets)
    lines = [f"# {_md_escape(title)}", "", f"_{_md_escape(subtitle)}_", ""]
    for section in sections:
        lines += [f"## {_md_escape(section.title)}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                lines += [f"_{_md_escape(block.text)}_" if block.note else _md_escape(block.text),
                          ""]
            elif isinstance(block, Table):
                if block.caption:
                    lines += [f"**{_md_escape(block.caption)}**", ""]
                lines.append("| " + " | ".join(_md_escape(str(h)) for h in block.headers) + " |")
                lines.append("|" + "---|" * len(block.headers))
                lines += ["| " + " | ".join(_md_escape(cell(v)) for v in row) + " |"
                          for row in block.rows]
                lines.append("")
            else:
                atomic_write_bytes(assets / block.name, block.data)
                lines += [f"![{_md_escape(block.caption or block.name)}]"
                          f"({link_prefix}/{block.name})", ""]
                if block.caption:
                    lines += [f"_{_md_escape(block.caption)}_", ""]
    return "\n".join(lines)
