"""One self-contained HTML page from msgnet's own report Markdown (images embedded as data URIs).

msgnet's reports use a small subset of Markdown — headings, paragraphs, bullet lists, pipe
tables, fenced code, images, ``**bold**`` and ``code`` — so a page can be rendered without a
Markdown dependency, and mailed or archived as a single file.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
         "th{background:#f2f2f2}pre{background:#f6f6f6;padding:.8em;overflow-x:auto}img{max-width:100%}"
         "code{background:#f2f2f2;padding:0 3px}")


def _inline(text: str, base: Path) -> str:
    def image(m: re.Match) -> str:
        path = base / m.group(2)
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode()
            return f'<img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}">'
        return f"[missing image {html.escape(m.group(2))}]"

    parts = re.split(r"(!\[[^\]]*\]\([^)]+\))", text)
    out = []
    for part in parts:
        m = re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", part)
        if m:
            out.append(image(m))
            continue
        s = html.escape(part)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        s = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)
        out.append(s)
    return "".join(out)


def markdown_to_html(markdown: str, base: Path, title: str) -> str:
    """The page for ``markdown`` whose image paths are relative to ``base``."""
    body: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            body.append(f"<pre>{html.escape(chr(10).join(block))}</pre>")
        elif m := re.match(r"(#{1,6}) (.*)", line):
            level = len(m.group(1))
            body.append(f"<h{level}>{_inline(m.group(2), base)}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            i -= 1
            head, *rest = rows
            body.append("<table><tr>" + "".join(f"<th>{_inline(c, base)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{_inline(c, base)}</td>" for c in r) + "</tr>"
                                  for r in rest) + "</table>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith(("- ", "  ")):
                if lines[i].startswith("- "):
                    items.append(lines[i][2:])
                else:
                    items[-1] += " " + lines[i].strip()
                i += 1
            i -= 1
            body.append("<ul>" + "".join(f"<li>{_inline(t, base)}</li>" for t in items) + "</ul>")
        elif line.strip():
            body.append(f"<p>{_inline(line, base)}</p>")
        i += 1
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
