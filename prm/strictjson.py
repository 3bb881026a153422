"""JSON of a run folder, parsed so that only numbers a float can hold get through.

JSON allows an integer of any length, and Python's ``json`` reads ``NaN`` and ``Infinity``;
either would otherwise raise ``OverflowError`` (or ``ValueError`` past 4300 digits) far from
the file. Every JSON document of a run (``run.json``, ``summary.json``, each event line) is
parsed by :func:`load_json`; :func:`fits` is the one test of every number read from a run file.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any


class BadRecord(ValueError):
    """A record that is not the event it claims to be; the message names the field."""


# ----------------------------------------------------------------------------- numbers

FLOAT_DIGITS = len(str(int(sys.float_info.max)))
"""Digits of the largest finite float. An integer literal with more is beyond float range,
known from its length alone, before Python converts it (a conversion of millions of digits
is slow, and past 4300 digits Python refuses it)."""
FLOAT_MAX = sys.float_info.max


def fits(value: int | float) -> bool:
    """Is ``value`` a number a float can hold: finite and within float range? The one test
    every number read from a run file passes (in :func:`load_json` and in ``prm.records._num``);
    comparing an int with a float is exact and never raises, unlike ``float(value)`` or
    ``math.isfinite(value)`` on an integer beyond float range (OverflowError)."""
    return -FLOAT_MAX <= value <= FLOAT_MAX


class _UnfitNumber(Exception):
    """A number literal that fails :func:`fits`; the message says what it was."""


def _int_literal(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits >= FLOAT_DIGITS and (digits > FLOAT_DIGITS or not fits(int(text))):  # shorter ones all fit
        raise _UnfitNumber(f"a {digits}-digit integer, beyond float range")
    return int(text)


def _float_literal(text: str) -> float:
    value = float(text)
    if not fits(value):
        raise _UnfitNumber(f"{text[:24]}{'…' if len(text) > 24 else ''}, beyond float range")
    return value


def _constant_literal(name: str) -> float:
    raise _UnfitNumber(f"{name}, not a finite number")


def _marking(parse):
    """The literal parser returning the refusal in place of the number, so that
    :func:`_unfit_field` can find where it sits."""
    def mark(text: str) -> Any:
        try:
            return parse(text)
        except _UnfitNumber as exc:
            return exc
    return mark


_HOOKS = {"parse_int": _int_literal, "parse_float": _float_literal, "parse_constant": _constant_literal}
_STRICT = json.JSONDecoder(**_HOOKS)
_MARKING = json.JSONDecoder(**{name: _marking(hook) for name, hook in _HOOKS.items()})
_KEY = re.compile(r"[\w-]{1,40}", re.ASCII)


def load_json(text: str) -> Any:
    """Parse one JSON document of a run folder, or raise :class:`BadRecord` naming the field
    whose number fails :func:`fits` (``layers[0].xmeans.bic: NaN, not a finite number``). Text
    that is not JSON raises ``ValueError`` (``json.JSONDecodeError``) and nesting deeper than
    the parser's stack ``RecursionError``, as ``json.loads`` does. The field is looked up only
    after a refusal, by parsing the text again: a good document is parsed once."""
    try:
        return _STRICT.decode(text)
    except _UnfitNumber:
        raise BadRecord(_unfit_field(_MARKING.decode(text))) from None


def _unfit_field(document: Any) -> str:
    """Where the first refused number of a parsed document sits, and what it was (iterative:
    the document may be nested as deep as the parser allows)."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, _UnfitNumber):
            return f"{where or 'the document'}: {value}"
        if isinstance(value, dict):
            items = [(f"{where}." if where else "") + (k if _KEY.fullmatch(k) else "…") for k in value]
            stack.extend(reversed(list(zip(items, value.values()))))
        elif isinstance(value, list):
            stack.extend(reversed([(f"{where}[{n}]", v) for n, v in enumerate(value)]))
    return "a number beyond float range"
