"""The report's HTML page: its markdown rendered by Python-Markdown, in a small page shell.

``index.md`` is the one source of the report; :func:`render_html` turns it into ``index.html``
with Python-Markdown (the ``tables`` extension for pipe tables), so both show the same headings,
links, tables and cells. Two choices on top of the library's defaults:

* raw HTML in the markdown is not passed through (its block and inline processors are removed),
  so a parameter value or an error message that looks like a tag is shown as text;
* a paragraph holding only an image, followed by a paragraph that is all emphasis (the way
  :func:`figure_markdown` writes a figure and its caption), becomes ``<figure>`` with
  ``<figcaption>``.

References:
    Python-Markdown, https://python-markdown.github.io/ (extensions API: treeprocessors).
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as etree
from itertools import pairwise

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

from analysis.tables import markdown_cell

__all__ = ["STYLE", "figure_markdown", "render_html"]

# The page's stylesheet, inline: the report is one folder that opens anywhere (no network, no assets).
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; line-height: 1.45; color: #222; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .92em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 3px 9px; text-align: left; vertical-align: top; }
thead th { background: #f2f2f2; } tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1.2em 0 2em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .92em; margin-top: .3em; }
"""

_SHELL = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
{body}
</body>
</html>
"""


def figure_markdown(number: int, title: str, src: str) -> str:
    """A figure as markdown: the image with ``title`` as its alt text, then an emphasised caption
    line ``Figure N. title`` (a ``<figure>`` in :func:`render_html`).

    Args:
        number: The figure's number on the page (>= 1).
        title: What the figure shows, one line.
        src: The image file, relative to the page.
    """
    text = markdown_cell(" ".join(title.split()))
    return f"![{text}]({src})\n\n*Figure {number}. {text}*\n"


def render_html(title: str, source: str) -> str:
    """The HTML page of a markdown report: Python-Markdown with pipe tables, no raw HTML, figures.

    Args:
        title: The page title (``<title>``), plain text.
        source: The report in markdown (``index.md``).

    Returns:
        A complete HTML5 document with the inline :data:`STYLE`.
    """
    md = markdown.Markdown(extensions=["tables", _FigureExtension()], output_format="html")
    md.preprocessors.deregister("html_block")  # raw HTML is shown as text, never passed through
    md.inlinePatterns.deregister("html")
    return _SHELL.format(title=html.escape(title), style=STYLE.strip(), body=md.convert(source))


def _only_child(element: etree.Element, tag: str) -> bool:
    """``element`` is a ``<p>`` whose whole content is one ``<tag>`` element."""
    return (element.tag == "p" and len(element) == 1 and element[0].tag == tag
            and not (element.text or "").strip() and not (element[0].tail or "").strip())


class _Figures(Treeprocessor):
    """``<p><img></p><p><em>caption</em></p>`` -> ``<figure><img><figcaption>caption</figcaption></figure>``."""

    def run(self, root: etree.Element) -> None:
        children = list(root)
        for image, caption in pairwise(children):
            if _only_child(image, "img") and _only_child(caption, "em"):
                image.tag = "figure"
                caption.tag = "figcaption"
                caption.text, caption[0].tail = caption[0].text, None
                for child in list(caption[0]):  # the caption's inline markup, moved up out of <em>
                    caption.append(child)
                caption.remove(caption[0])
                image.append(caption)
                root.remove(caption)


class _FigureExtension(Extension):
    def extendMarkdown(self, md: markdown.Markdown) -> None:  # the library's name for the hook
        md.treeprocessors.register(_Figures(md), "figures", 15)  # after inline (20), before prettify (10)
