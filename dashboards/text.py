"""Text from run files (names, metadata, error messages) made safe to show.

A run folder is data someone else may have written: its metadata must never become markup.
Streamlit renders Markdown (images, links, autolinked URLs, colour and emoji directives,
LaTeX) in st.markdown, captions, alerts and headers; Plotly renders a subset of HTML
(`<a href>`, `<b>`, `<br>`) in titles, legends and hover labels. Every string that comes
from a run goes through `md` or `plot` before it reaches either. Tables (st.dataframe) and
widget options show plain text and need neither.
"""

from __future__ import annotations

import html
import re
import string

# CommonMark lets a backslash escape any ASCII punctuation, and an escaped character is
# literal text: no link, image, emphasis, HTML, directive (":red[...]"), emoji shortcode or
# math. Escaping ':' and '.' also breaks GitHub's autolinks (http://..., www.example.com).
_MARKDOWN_SPECIAL = re.compile("([" + re.escape(string.punctuation) + "])")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")


def md(value: object) -> str:
    """`value` as literal text inside Streamlit Markdown (one line: a newline could start a block)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(value)))


def plot(value: object) -> str:
    """`value` as literal text inside a Plotly title, legend entry or hover label."""
    return html.escape(_LINE_BREAKS.sub(" ", str(value)), quote=False)
