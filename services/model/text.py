"""Text for messages and terminals: one bounded printable line, a value shown without echoing it whole.

Error messages of validation (symbols, names, ids) and every refusal of a command quote what they were
given through :func:`shown`, so an input never reaches a log or a reply whole, nor with control
characters or terminal escape sequences in it.
"""

from __future__ import annotations

import re

MAX_ERROR = 300  # characters of an error message sent back or printed

CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
LINE_BREAKS = re.compile(r"[\r\n\t\u2028\u2029]+")
TERMINAL_ESCAPE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])")


def one_line(text: str, limit: int = MAX_ERROR) -> str:
    """``text`` as one printable line of at most ``limit`` characters (control characters dropped)."""
    flat = CONTROL_CHARACTERS.sub("", LINE_BREAKS.sub(" ", TERMINAL_ESCAPE.sub("", text))).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def printable(text: str) -> str:
    """``text`` without terminal escape sequences or control characters (newlines and tabs kept): safe
    to print on a terminal whatever a feed or a name carried."""
    return CONTROL_CHARACTERS.sub("", TERMINAL_ESCAPE.sub("", text))


def shown(value: object, limit: int = 40) -> str:
    """A value for an error message: its repr, cut to ``limit`` characters (never the whole input)."""
    return one_line(repr(value), limit)
