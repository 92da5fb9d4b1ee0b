"""One self-contained HTML page from a report's Markdown (images embedded as data URIs).

The Markdown is rendered by Python-Markdown (tables and fenced code enabled); every local PNG the
page shows is then inlined, so the page can be mailed or archived as a single file.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import markdown

STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
         "th{background:#f2f2f2}pre{background:#f6f6f6;padding:.8em;overflow-x:auto}img{max-width:100%}"
         "code{background:#f2f2f2;padding:0 3px}")


def _embed_images(body: str, base: Path) -> str:
    """Each ``<img src="relative.png">`` as a data URI; a missing file is said in the page."""

    def embed(m: re.Match) -> str:
        tag, src = m.group(0), html.unescape(m.group(1))
        if ":" in src:  # already a URI
            return tag
        path = base / src
        if not path.is_file():
            return f"[missing image {html.escape(src)}]"
        data = base64.b64encode(path.read_bytes()).decode()
        return tag.replace(f'src="{m.group(1)}"', f'src="data:image/png;base64,{data}"')

    return re.sub(r'<img [^>]*src="([^"]+)"[^>]*>', embed, body)


def markdown_to_html(text: str, base: Path, title: str) -> str:
    """The page for Markdown ``text`` whose image paths are relative to ``base``."""
    body = markdown.markdown(text, extensions=["tables", "fenced_code"], output_format="html")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + _embed_images(body, base) + "\n</body></html>\n")
