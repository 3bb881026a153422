"""The PRM paper's results table as data, and recorded runs laid out beside it.

The paper reports its six sequences in one layout (Tables 2-4: Acc, PS, CT and FWT / BWT per
method; Table 5: the ablations' Acc). The bundled sequences are small analogues of those six,
so ``python -m prm table --paper FOLDERS`` puts what the runs measured beside what the paper
published, slot by slot, in the paper's own layout: a reader sees at once which of the paper's
claims the analogues repeat and which they do not, without the two being mixed into one number.
The paper's numbers are typed here as it prints them (percentages for PS, FWT and BWT, seconds
for CT, averages over its three task orders); the runs' numbers are never adjusted towards them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from prm import methods
from prm.config import RunConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class Published:
    """One method's numbers in one of the paper's slots, in the paper's units; None where it
    prints none (STL's FWT / BWT, the ablations' everything but Acc)."""

    acc: float
    ps_pct: float | None = None
    ct: float | None = None  # seconds
    fwt_pct: float | None = None
    bwt_pct: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Slot:
    number: int
    sequence: str  # the paper's name; runnable here too, with its data files (docs/data.md)
    kind: str  # dissimilar | similar | mixed
    table: str  # where the main numbers come from
    analogue: str  # the bundled sequence that stands in for it
    results: Mapping[str, Published]  # paper method -> numbers


def _published(acc: float, ps: float, ct: float, fwt: float | None = None, bwt: float | None = None) -> Published:
    return Published(acc=acc, ps_pct=ps, ct=ct, fwt_pct=fwt, bwt_pct=bwt)


BASELINES = ("STL", "NCL", "ACL", "PNT", "SS", "HYP", "HAT", "EHAT", "CAT", "PRM")
"""The rows of the paper's Tables 2-4, in its order."""
ABLATIONS = ("PRM(S)", "PRM(D)", "PRM(T)", "PRM", "w/o 2SO")
"""The columns of its Table 5 (Acc only)."""

_MAIN: dict[int, tuple[tuple[float, ...], ...]] = {  # (Acc, PS %, CT s, FWT %, BWT %) per BASELINES row
    1: ((0.929, 0.6, 45), (0.879, 0.3, 26, -1.7, -3.4), (0.902, 0.5, 916, -2.6, -0.1),  # Table 2, #1
        (0.910, 0.3, 43, -2.0, 0.0), (0.829, 11.9, 172, -5.6, -4.4), (0.822, 10.9, 1105, -10.7, -0.1),
        (0.905, 0.3, 101, -2.4, 0.0), (0.899, 0.3, 187, -3.1, 0.0), (0.907, 0.3, 1276, -2.2, 0.0),
        (0.897, 0.4, 80, -2.3, -1.0)),
    2: ((0.612, 1.4, 142), (0.534, 1.1, 123, -2.3, -5.5), (0.508, 0.6, 6328, -10.3, -0.1),  # Table 2, #2
        (0.571, 0.5, 394, -4.1, 0.0), (0.462, 11.2, 2800, -10.8, -4.2), (0.219, 3.4, 10825, -38.8, -0.5),
        (0.582, 0.8, 912, -3.0, 0.0), (0.578, 0.6, 1011, -3.4, 0.0), (0.587, 0.7, 6018, -2.5, 0.0),
        (0.582, 0.9, 635, -2.8, -0.1)),
    3: ((0.717, 3.2, 126), (0.654, 10.0, 48, -5.3, -0.9), (0.043, 0.9, 1633, -66.4, -0.9),  # Table 3, #3
        (0.572, 15.7, 178, -14.5, 0.0), (0.456, 14.6, 1022, -14.3, -11.7), (0.060, 1.5, 3313, -65.5, -0.2),
        (0.655, 3.7, 245, -6.2, 0.0), (0.655, 3.8, 497, -6.1, 0.0), (0.643, 2.1, 2171, -7.4, 0.0),
        (0.657, 3.3, 176, -5.7, -0.2)),
    4: ((0.823, 0.6, 15), (0.820, 1.2, 14, -3.7, 3.4), (0.695, 2.4, 628, -14.3, 1.5),  # Table 3, #4
        (0.716, 1.1, 32, -10.6, 0.0), (0.780, 9.5, 440, -5.0, 0.8), (0.525, 1.5, 1495, -26.6, -3.2),
        (0.759, 1.1, 70, -6.3, 0.0), (0.769, 0.8, 110, -5.3, 0.0), (0.781, 0.7, 707, -4.1, 0.0),
        (0.796, 1.4, 54, -5.5, 2.8)),
    5: ((0.791, 1.4, 113), (0.728, 5.0, 87, -5.6, -0.6), (0.370, 9.3, 5437, -41.6, -0.5),  # Table 4, #5
        (0.628, 4.7, 281, -16.3, 0.0), (0.572, 16.2, 586, -7.6, -14.3), (0.322, 6.0, 6439, -46.2, -0.7),
        (0.721, 3.6, 357, -7.0, 0.0), (0.728, 6.9, 854, -6.3, 0.0), (0.737, 7.2, 9851, -5.3, 0.0),
        (0.720, 3.4, 310, -6.8, -0.3)),
    6: ((0.629, 1.1, 254), (0.540, 1.0, 154, -3.1, -5.9), (0.521, 0.4, 7515, -10.9, 0.0),  # Table 4, #6
        (0.556, 0.7, 425, -7.3, 0.0), (0.461, 10.5, 1865, -11.1, -5.7), (0.199, 1.7, 19973, -42.2, -0.8),
        (0.572, 0.5, 891, -5.8, 0.0), (0.572, 0.6, 1801, -5.8, 0.0), (0.581, 0.8, 22810, -4.8, 0.0),
        (0.582, 0.6, 642, -4.2, -0.6)),
}
ABLATION_ACC: dict[int, tuple[float | None, ...]] = {  # Table 5, per ABLATIONS column; None: the paper's "-"
    1: (0.882, 0.904, None, 0.897, 0.897),  # PRM(T) = PRM(S) on a one-data-set sequence: not printed
    2: (0.562, 0.581, None, 0.582, 0.579),
    3: (0.633, 0.654, None, 0.657, 0.658),
    4: (0.825, 0.759, None, 0.796, 0.775),
    5: (0.713, 0.731, 0.720, 0.720, 0.721),
    6: (0.568, 0.571, 0.567, 0.582, 0.586),
}


def _results(number: int) -> dict[str, Published]:
    """Tables 2-4's rows, then Table 5's ablations (PRM itself stays as Tables 2-4 give it)."""
    out = {name: _published(*row) for name, row in zip(BASELINES, _MAIN[number])}
    for name, acc in zip(ABLATIONS, ABLATION_ACC[number]):
        if acc is not None and name not in out:
            out[name] = Published(acc=acc)
    return out


SLOTS: tuple[Slot, ...] = tuple(
    Slot(number=n, sequence=seq, kind=kind, table=table, analogue=analogue, results=_results(n))
    for n, seq, kind, table, analogue in (
        (1, "EMNIST-10T", "dissimilar", "Table 2", "digits-classes"),
        (2, "CIFAR100-10T", "dissimilar", "Table 2", "mnist5k-classes"),
        (3, "F-EMNIST-10T", "similar", "Table 3", "digits-writers-few"),
        (4, "F-CelebA-10T", "similar", "Table 3", "digits-writers-binary"),
        (5, "EMNIST-10T+F-EMNIST-10T", "mixed", "Table 4", "digits-mixed-few"),
        (6, "CIFAR100-10T+F-CelebA-10T", "mixed", "Table 4", "digits-mixed-binary"),
    ))
"""The paper's six sequences with their bundled analogues: class splits for the dissimilar
ones, few-shot writers for F-EMNIST's ~20 images a class, and one yes/no question per writer
for F-CelebA's "smiling?" per celebrity."""

ENGINE = {m.paper: m.name for m in methods.REGISTRY.values() if m.paper is not None}
ENGINE["w/o 2SO"] = f"{ENGINE['PRM']} --no-2so"
"""The paper's methods this engine has (``Method.paper``), as :func:`method_label` names their
runs (EHAT is the paper's EWC as HAT's code implements it, on an unmasked network, as ``ewc``
here), and the paper's "w/o 2SO" ablation, PRM without DTD's head-only 1st optimisation."""
NOT_HERE = tuple(m for m in BASELINES if m not in ENGINE)
_VARIANT = methods.get(methods.VARIANT)
_TRUTH = ENGINE["PRM(T)"]
PROJECT_ORDER = (_VARIANT.name, f"{_TRUTH}+", methods.with_role("upper-bound").name)
"""This project's methods, shown after the paper's; any other label follows alphabetically."""


def method_label(config: RunConfig) -> str:
    """The method a run stands for in a table: its ``method``, except for the variants a
    table must keep apart from it: PRM(T) with PRM+'s relaxation and head copy (``prm-t+``)
    and DTD without the head-only 1st optimisation (the paper's "w/o 2SO", ``--no-2so``)."""
    levers = _VARIANT.levers
    label = config.method
    if label == _TRUTH and (config.prm.relax, config.prm.head_init) == (levers["relax"], levers["head_init"]):
        label += "+"
    if methods.get(config.method).runs_dtd and not config.prm.two_stage:
        label += " --no-2so"
    return label


def slot_of(sequence: str) -> Slot | None:
    """The slot a sequence fills: its analogue's, or the paper's own sequence's."""
    return next((s for s in SLOTS if sequence in (s.analogue, s.sequence)), None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Block:
    title: str
    head: list[str]
    body: list[list[str]]


HEAD = ["method", "Acc ± sd (seeds)", "PS", "CT s", "FWT / BWT",
        "paper Acc", "paper PS", "paper CT s", "paper FWT / BWT"]
DASH = "–"


def blocks(rows: Sequence[Mapping[str, Any]], *, ps: Mapping[tuple[str, str], float | None] | None) -> list[Block]:
    """One block per slot and sequence run for it (the analogue, the paper's own sequence, or
    both), a slot without runs as its analogue with every measured cell '–'. ``rows`` are
    ``compare_table``'s (mean, sd) rows; ``ps`` maps (sequence, method) to a tune study's PS."""
    out = []
    for slot in SLOTS:
        for sequence in [s for s in (slot.analogue, slot.sequence) if any(r["sequence"] == s for r in rows)] \
                or [slot.analogue]:
            ran = {r["method"]: r for r in rows if r["sequence"] == sequence}
            body = [_line(slot, label, ran.get(label), None if ps is None else ps.get((sequence, label)))
                    for label in _order(slot, ran)]
            out.append(Block(title=_title(slot, sequence, ran), head=HEAD, body=body))
    return out


def _order(slot: Slot, ran: Mapping[str, Any]) -> list[str]:
    """The paper's methods this engine has and the paper reports for the slot, or that ran,
    in the paper's order; then this project's methods that ran."""
    paper = list(dict.fromkeys(ENGINE[m] for m in (*BASELINES, *ABLATIONS)
                               if m in ENGINE and (m in slot.results or ENGINE[m] in ran)))
    own = [m for m in PROJECT_ORDER if m in ran] + sorted(m for m in ran if m not in (*paper, *PROJECT_ORDER))
    return paper + own


def _title(slot: Slot, sequence: str, ran: Mapping[str, Any]) -> str:
    where = "the paper's own sequence" if sequence == slot.sequence else "bundled analogue"
    where += "" if ran else ", no runs given"
    return (f"#{slot.number} {slot.sequence} ({slot.kind} tasks; paper: {slot.table} and Table 5) "
            f"beside {sequence} ({where})")


def _line(slot: Slot, label: str, row: Mapping[str, Any] | None, ps: float | None) -> list[str]:
    paper_name = next((m for m, e in ENGINE.items() if e == label), None)
    name = f"{paper_name} ({label})" if paper_name else f"{label} (this project's)"
    pub = slot.results.get(paper_name) if paper_name else None
    measured = [DASH] * 4 if row is None else [
        DASH if row["acc"] is None else f"{row['acc'][0]:.3f} ± {row['acc'][1]:.3f} ({row['seeds']})",
        _pct(None if ps is None else 100 * ps),
        DASH if row["ct"] is None else f"{row['ct'][0]:.1f}",
        _pair(*(None if row[k] is None else 100 * row[k][0] for k in ("fwt", "bwt")))]
    published = [DASH] * 4 if pub is None else [
        f"{pub.acc:.3f}", _pct(pub.ps_pct), DASH if pub.ct is None else f"{pub.ct:.0f}",
        _pair(pub.fwt_pct, pub.bwt_pct)]
    return [name, *measured, *published]


def _pct(value: float | None) -> str:
    """A percentage as the paper prints it (one decimal), with a true minus sign; '–' if none."""
    if value is None:
        return DASH
    shown = round(value, 1) + 0.0  # + 0.0 turns -0.0 into 0.0: no "−0.0%"
    return f"{shown:.1f}%".replace("-", "−")


def _pair(fwt: float | None, bwt: float | None) -> str:
    return DASH if fwt is None and bwt is None else f"{_pct(fwt)} / {_pct(bwt)}"


def unplaced(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sequences among ``rows`` that fill no slot of the paper's table."""
    return list(dict.fromkeys(r["sequence"] for r in rows if slot_of(r["sequence"]) is None))


def notes(*, storage: str | None) -> list[str]:
    """What the columns are, said under the blocks."""
    return [
        "Left: the runs given (Acc mean ± sd over seeds, their count in brackets; CT mean seconds; FWT against "
        "STL of the same seed; FWT, BWT and PS in %). Right: the paper's numbers (averages over its three task "
        "orders; Tables 2-4, the ablations' Acc from Table 5).",
        f"PS: std of test Acc over the complete trials of the tune study of the same sequence and method on "
        f"{storage}." if storage else "PS: give --storage with tune studies (python -m prm tune) to fill it.",
        *([f"The paper's {', '.join(NOT_HERE)} are not in this engine; their rows are in the paper only."]
          if NOT_HERE else []),
    ]
