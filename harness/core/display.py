"""Text from outside (a peer's model name, a run label, an error a server returned) shown on a terminal or in
a Markdown board: control characters removed (an ANSI escape cannot recolour or rewrite the terminal), and
in a table cell the Markdown that would break the table escaped."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 (but tab and newline) and C1, DEL


def plain(text: str) -> str:
    """`text` without control characters (an ANSI escape loses its ESC and shows as text)."""
    return _CONTROL.sub("", text)


def md_cell(text: str) -> str:
    """`text` as one Markdown table cell: plain, on one line, `|` escaped."""
    return " ".join(plain(text).split()).replace("|", "\\|")
