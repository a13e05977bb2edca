"""Stored text, shown safely: control characters escaped before anything reaches a terminal.

Ids, names, callables, format tags and quarantine messages are written by whoever can write the
collection. Printed raw, an escape sequence in one of them sets the terminal's title, clears the
screen, hides text or moves the cursor over earlier lines, and a bidi override reorders what the
operator reads. :func:`printable` shows every character that is not printable (C0 and C1 controls,
DEL, format characters such as U+202E, line and paragraph separators, lone surrogates,
unassigned and private-use code points, spaces other than U+0020) as a Python escape, and
:class:`SafeConsole` applies it to every string Rich renders: table cells, titles and lines.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.text import Text

__all__ = ["ERR", "OUT", "SafeConsole", "printable"]

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(value: object) -> str:
    """``value`` as text with every non-printable character shown as an escape (``\\x1b``, ``\\u202e``).

    Printable text (the usual case) is returned unchanged; a backslash is left as it is.
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


class SafeConsole(Console):
    """A Rich console that reads no markup or emoji codes in text and escapes what is not printable.

    Every string printed or put in a table goes through :meth:`render_str`, so nothing stored can
    reach the terminal as a control sequence, whichever command prints it. Print multi-line text
    line by line: a newline inside one string is shown as ``\\n``.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **options)

    def render_str(self, text: str, **options: Any) -> Text:
        return super().render_str(printable(text), **options)


# Off a terminal (a pipe, a log), tables are laid out wide rather than squeezed to 80 columns.
# Lines are not wrapped (a terminal wraps them); tables fit the width.
OUT = SafeConsole(width=None if sys.stdout.isatty() else 200, soft_wrap=True)
ERR = SafeConsole(stderr=True, soft_wrap=True)  # a message stays one line, however long
