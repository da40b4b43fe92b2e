"""Reports people look at: ``report.md`` and a self-contained ``report.html``.

A :class:`Report` is a list of sections, each a sequence of blocks: paragraphs, key/value
tables, row tables, code (preformatted text) and images (PNG). Images are written to
``figures/`` and linked from the Markdown; the HTML embeds them as data URIs so the one file can
be mailed around.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from genrep.core.rundir import atomic_write_bytes, atomic_write_text


@dataclass
class _Block:
    kind: str  # text | table | code | image
    payload: Any


@dataclass
class Section:
    title: str
    blocks: list[_Block] = field(default_factory=list)

    def text(self, markdown_text: str) -> "Section":
        self.blocks.append(_Block("text", markdown_text))
        return self

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> "Section":
        rows = list(rows)
        cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
        self.blocks.append(_Block("table", (cols, rows)))
        return self

    def kv(self, mapping: dict[str, Any]) -> "Section":
        return self.table([{"key": k, "value": v} for k, v in mapping.items()], ["key", "value"])

    def code(self, text: str) -> "Section":
        self.blocks.append(_Block("code", text))
        return self

    def image(self, png: bytes | Path, caption: str, name: str | None = None) -> "Section":
        data = Path(png).read_bytes() if isinstance(png, Path) else png
        self.blocks.append(_Block("image", (data, caption, name)))
        return self


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Report:
    def __init__(self, title: str):
        self.title = title
        self.sections: list[Section] = []

    def section(self, title: str) -> Section:
        s = Section(title)
        self.sections.append(s)
        return s

    def write(self, out: str | Path) -> tuple[Path, Path]:
        """Write ``report.md`` (+ ``figures/*.png``) and ``report.html``; returns their paths."""
        out = Path(out)
        figures = out / "figures"
        md = [f"# {self.title}", ""]
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        n_img = 0
        for s_idx, section in enumerate(self.sections):
            md += [f"## {section.title}", ""]
            body.append(f"<h2>{html.escape(section.title)}</h2>")
            for block in section.blocks:
                if block.kind == "text":
                    md += [block.payload, ""]
                    paras = [p.strip() for p in block.payload.split("\n\n") if p.strip()]
                    body += [f"<p>{html.escape(p)}</p>" for p in paras]
                elif block.kind == "code":
                    md += ["```", block.payload.rstrip(), "```", ""]
                    body.append(f"<pre>{html.escape(block.payload)}</pre>")
                elif block.kind == "table":
                    cols, rows = block.payload
                    md.append("| " + " | ".join(cols) + " |")
                    md.append("|" + "---|" * len(cols))
                    for r in rows:
                        md.append("| " + " | ".join(_fmt(r.get(c, "")).replace("|", "\\|") for c in cols) + " |")
                    md.append("")
                    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
                    trs = "".join(
                        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                        for r in rows
                    )
                    body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
                elif block.kind == "image":
                    data, caption, name = block.payload
                    n_img += 1
                    fname = name or f"fig{s_idx:02d}_{n_img:02d}.png"
                    atomic_write_bytes(figures / fname, data)
                    md += [f"![{caption}](figures/{fname})", "", f"*{caption}*", ""]
                    b64 = base64.b64encode(data).decode("ascii")
                    body.append(
                        f'<figure><img src="data:image/png;base64,{b64}" alt="{html.escape(caption)}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                    )
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
            "text-align:left;font-size:14px}th{background:#f3f3f3}pre{background:#f6f6f6;padding:8px;"
            "overflow-x:auto;white-space:pre-wrap}img{max-width:100%}figcaption{color:#555;font-size:13px}"
        )
        page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
        )
        md_path = atomic_write_text(out / "report.md", "\n".join(md).rstrip() + "\n")
        html_path = atomic_write_text(out / "report.html", page)
        return md_path, html_path
