"""What every sub-command shares: one way to print and one way to fail, the argument types
that refuse a bad value while the command line is read (before anything is made), the
checks of names and output folders, and the formatting of numbers that come from run
folders and storages (untrusted input: any JSON value)."""

from __future__ import annotations

import argparse
import numbers
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from prm import methods
from prm.data import SEQUENCES
from prm.text import terminal


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, not the whole usage block
        command = " ".join(["python -m prm", *self.prog.split()[1:]])  # prog is "prm" or "prm run"
        self.exit(2, f"prm: error: {terminal(message)} (see '{command} --help')\n")


def say(*lines: str, err: bool = False) -> None:
    """Print ``lines``, one each, on stdout (stderr with ``err``), each made safe for a
    terminal first (:func:`prm.text.terminal`). Every line the CLI prints goes through here:
    nearly all quote a run folder, a data file or a storage, untrusted input all (a task
    name carrying an escape sequence, a folder name that is not UTF-8: a lone surrogate)."""
    print("\n".join(map(terminal, lines)), file=sys.stderr if err else sys.stdout)


def fail(message: str) -> None:
    say(f"prm: error: {message}", err=True)
    raise SystemExit(2)


# ----------------------------------------------------------------------------- argument types


def path(text: str) -> str:
    """A folder, file or storage named on the command line. An empty or blank name is refused
    here: the commands read a false value as "not given" and would put the output in the
    default place without a word (``run --out ''`` wrote to runs/...)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path names no folder or file; give one or leave the option out")
    return text


def _once(values: list, what: str, text: str) -> None:
    """Refuse a list naming one item twice: compare would train it twice and keep one (or,
    with --out-dir, write its run folder twice and fail half-way)."""
    seen = set()
    for value in values:
        if value in seen:
            raise argparse.ArgumentTypeError(f"{text!r} names {what} {value} twice; give each once")
        seen.add(value)


def int_list(text: str) -> list[int]:
    """``--seeds``: comma-separated non-negative integers, at least one, each once."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    _once(values, "seed", text)
    return values


def name_list(what: str) -> Callable[[str], list[str]]:
    """An argparse type for ``compare --sequence`` and ``--methods``: comma-separated names,
    at least one, each once (``--methods ,`` trained STL alone and printed an empty table)."""
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"{text!r} names no {what}")
        _once(names, what, text)
        return names

    return parse


def study_name(text: str) -> str:
    """``--study``: a study name that is also one plain folder name, since it names the folder
    its runs go to (RUNS_DIR/STUDY for tune, runs/compare/STUDY for compare): no '/', not '.'
    or '..' (``../../x`` put the runs three folders above RUNS_DIR), printable characters
    only (no newline, NUL or right-to-left override) and at most 255 bytes."""
    plain = (text.strip() and text not in (".", "..") and "/" not in text and (os.altsep or "/") not in text
             and text.isprintable() and len(os.fsencode(text)) <= 255)
    if not plain:
        raise argparse.ArgumentTypeError(f"{text!r} is not a plain folder name (printable characters, no '/', "
                                         "not '.' or '..', at most 255 bytes); the study names its runs' folder")
    return text


# ----------------------------------------------------------------------------- checks


def check_sequence(name: str) -> None:
    if name not in SEQUENCES:
        fail(f"unknown sequence {name!r}; choose one of {', '.join(SEQUENCES)}")


def check_method(name: str) -> None:
    try:
        methods.get(name)
    except ValueError as exc:  # the registry's message: the name and the known ones
        fail(str(exc))


def check_out(folder: Path, option: str, *, may_hold_files: bool = False) -> None:
    """Refuse an output folder before anything is created: ``folder`` must be a folder or not
    exist yet, be empty unless ``may_hold_files``, and not lie under a file."""
    try:
        if folder.exists() and not folder.is_dir():
            fail(f"{option} {folder} is a file, not a folder")
        if folder.is_dir():
            if not may_hold_files and any(folder.iterdir()):
                fail(f"{option} {folder} already exists and is not empty; choose another")
            return
        for parent in folder.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    fail(f"{option} {folder} lies under {parent}, which is a file")
                return
    except OSError as exc:
        fail(f"{option} {folder}: {exc}")


# ----------------------------------------------------------------------------- values


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a number a float holds, else None: what is printed comes
    from run folders and Optuna storages, which may hold any JSON value (a string, 10**400)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; '-' for one that is missing, not finite or not a number."""
    number = _number(value)
    return "-" if number is None or not np.isfinite(number) else f"{number:.{digits}f}"


def shown(value: Any, limit: int = 60) -> str:
    """A study's value on one short line: a number to 4 significant digits, a printable string
    as it is, anything else as its repr, cut at ``limit`` characters."""
    number = _number(value)
    if number is not None:
        return f"{number:.4g}"
    if isinstance(value, str):
        text = terminal(value)
    else:
        try:
            text = repr(value)
        except (ValueError, RecursionError):  # an int past Python's 4300-digit limit, deep nesting
            text = f"<{type(value).__name__}>"
        text = terminal(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def params_text(params: dict[str, Any], sep: str) -> str:
    """A trial's parameters as ``name value`` pairs, whatever types the storage gave them."""
    return sep.join(f"{shown(k, 40)} {shown(v)}" for k, v in params.items())
