"""Text from run folders, data files and storages, made safe to print on a terminal.

A task name, a LEAF user id, a task family or a study name is untrusted input. Printed raw,
an escape sequence in it (ESC, the C1 CSI, an OSC ended by BEL) sets the window title,
clears the screen or recolours what follows; a newline forges a line of output; a format
character (a right-to-left override, a zero-width joiner, a line separator) makes the text
read as something else; and a lone surrogate, which JSON may hold (``"\\ud800"``), cannot
be encoded at all, so ``print`` fails after a whole run has been trained.
:func:`terminal` shows each such character as its escape instead; letters, digits and
emoji of every script stay as they are.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_SUSPECT = re.compile(r"[^\x20-\x7e]")
"""Anything but printable ASCII: the only characters whose category needs a look."""

ESCAPED = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Control characters (C0, DEL, C1), format characters, lone surrogates, and the line and
paragraph separators: they act on the terminal, draw nothing, reorder what follows, break
lines or cannot be encoded."""


def _escape(match: re.Match) -> str:
    char = match.group()
    if unicodedata.category(char) not in ESCAPED:
        return char
    code = ord(char)
    if code < 0xA0:  # C0, DEL, C1: every control character, and nothing else
        return {"\t": "\\t", "\n": "\\n", "\r": "\\r"}.get(char, f"\\x{code:02x}")
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def terminal(text: Any) -> str:
    """``text`` (any value, as ``str`` gives it) with every character in :data:`ESCAPED`
    written as its Python escape (``\\x1b``, ``\\n``, ``\\u202e``, ``\\ud800``): one line of
    plain, encodable text that acts on nothing. Idempotent (escapes are printable ASCII), so
    a field escaped for a table's width may pass through again as part of its line."""
    return _SUSPECT.sub(_escape, str(text))


__all__ = ["ESCAPED", "terminal"]
