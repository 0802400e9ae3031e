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
# math.
_MARKDOWN_SPECIAL = re.compile("([" + re.escape(string.punctuation) + "])")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")
# GitHub's autolinks (http://..., mailto:, www.example.com, name@example.com) are found in the
# text after escapes are resolved, so escaping cannot stop them (a browser test saw
# `http\://` become a link). A zero-width space after every ':' and '@' and inside 'www.'
# breaks each pattern and shows nothing.
_ZERO_WIDTH_SPACE = "\u200b"
_AUTOLINK_ANCHORS = re.compile(r"(\\[:@])|(?i:(www)(?=\\\.))")


def md(value: object) -> str:
    """`value` as literal text inside Streamlit Markdown (one line: a newline could start a block)."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(value)))
    return _AUTOLINK_ANCHORS.sub(lambda m: m.group(0) + _ZERO_WIDTH_SPACE, escaped)


def plot(value: object) -> str:
    """`value` as literal text inside a Plotly title, legend entry or hover label."""
    return html.escape(_LINE_BREAKS.sub(" ", str(value)), quote=False)
