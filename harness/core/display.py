"""Text from outside (a peer's model name, a run label, an error a server returned) shown on a terminal or in
a Markdown board: control characters removed (an ANSI escape cannot recolour or rewrite the terminal), and
in Markdown the characters that would break a table (`md_cell`) or that Markdown or HTML give meaning to
(`md_text`) escaped."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 (but tab and newline) and C1, DEL


def plain(text: str) -> str:
    """`text` without control characters (an ANSI escape loses its ESC and shows as text)."""
    return _CONTROL.sub("", text)


def md_cell(text: str) -> str:
    """`text` as one Markdown table cell: plain, on one line, `|` escaped."""
    return " ".join(plain(text).split()).replace("|", "\\|")


# Markdown or HTML in a name: emphasis, code, links and images, HTML tags and entities, strikethrough, math
# and the backslash itself; `_` only where it can open or close emphasis (not inside a word: `grpo_lora`)
_MD_SPECIAL = re.compile(r"[\\`*\[\]<>&|~$]|(?<![^\W_])_|_(?![^\W_])")


def md_text(text: str) -> str:
    """`text` (a peer's model name, a run label, lineage) as literal Markdown on one line: plain, and every
    character Markdown or HTML gives meaning to backslash-escaped (`**x**`, `[a](u)`, `<img>` show as typed).
    Not for text meant as Markdown (`md_cell`), nor for numbers."""
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(), " ".join(plain(text).split()))
