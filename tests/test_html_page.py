"""The report page: Markdown rendered by Python-Markdown, local images inlined."""

import numpy as np
from PIL import Image

from msgnet.evaluation.html_page import markdown_to_html


def test_the_page_renders_tables_code_and_inlines_images(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    page = markdown_to_html("# Title\n\n**Bold** `x < y`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![pic](a.png)\n\n"
                            "![gone](b.png)\n\n```\ncode <here>\n```\n", tmp_path, "the <title>")
    assert page.startswith("<!DOCTYPE html>") and "<title>the &lt;title&gt;</title>" in page
    assert "<h1>Title</h1>" in page and "<strong>Bold</strong>" in page and "<code>x &lt; y</code>" in page
    assert "<th>a</th>" in page and "<td>2</td>" in page
    assert 'alt="pic" src="data:image/png;base64,' in page and "a.png" not in page
    assert "[missing image b.png]" in page and "<img alt=\"gone\"" not in page
    assert "code &lt;here&gt;" in page
