"""The report's HTML page: Python-Markdown with pipe tables, raw HTML shown as text, figures with captions."""

from __future__ import annotations

from analysis.page import figure_markdown, render_html


def test_a_figure_becomes_a_figure_element_with_alt_text_and_a_caption():
    source = "# Study x\n\n" + figure_markdown(3, "Rate vs *distortion*", "rd.png")
    assert source.endswith("![Rate vs \\*distortion\\*](rd.png)\n\n*Figure 3. Rate vs \\*distortion\\**\n")
    body = render_html("Study x", source).split("<body>")[1]
    assert ('<figure><img alt="Rate vs *distortion*" src="rd.png">'
            "<figcaption>Figure 3. Rate vs *distortion*</figcaption>") in body.replace("\n", "")


def test_tables_links_and_escaped_text_render_and_raw_html_does_not_pass_through():
    source = ("[CSV](t.csv) · [LaTeX](t.tex)\n\n| a | b\\|c |\n|---|---|\n| <b>1</b> | 0.048 ± 0.016 |\n\n"
              "<script>alert(1)</script>\n")
    page = render_html("<Study>", source)
    assert "<title>&lt;Study&gt;</title>" in page and "<style>" in page
    assert '<a href="t.csv">CSV</a> · <a href="t.tex">LaTeX</a>' in page
    assert "<th>b|c</th>" in page and "<td>&lt;b&gt;1&lt;/b&gt;</td>" in page and "<td>0.048 ± 0.016</td>" in page
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_an_image_paragraph_without_a_caption_stays_an_image():
    page = render_html("x", "![alt](a.png)\n\nplain text\n")
    assert "<figure>" not in page and '<img alt="alt" src="a.png">' in page
