"""compare's tables, as ``compare`` and ``table`` print them: Acc, BWT, FWT (against STL of
the same sequence and seed) and CT per method, mean and std over seeds, and the same split
per task family."""

from __future__ import annotations

from typing import Any

import numpy as np

from prm import analysis
from prm.cli.common import fmt, say
from prm.text import terminal


Results = dict[tuple[str, str, int], tuple[np.ndarray, float, list[str]]]  # (sequence, method, seed) -> R, CT, families


def _mean_std(values: dict[str, list[float]]) -> dict[str, tuple[float, float] | None]:
    """Each metric's (mean, std) over seeds; None where no seed gave a value."""
    return {key: (float(np.mean(v)), float(np.std(v))) if v else None for key, v in values.items()}


def _metrics(R: np.ndarray, stl: tuple | None, *, tasks: list[int] | None = None) -> dict[str, Any]:
    """``analysis.matrix_metrics`` of one run, FWT against the STL run of its seed when there is one."""
    return analysis.matrix_metrics(R, stl_diag=None if stl is None else np.diag(stl[0]), tasks=tasks)


def compare_table(results: Results) -> list[dict[str, Any]]:
    """Acc, BWT, FWT (against STL of the same sequence and seed), CT: mean and std over seeds."""
    rows = []
    for sequence in dict.fromkeys(k[0] for k in results):
        for method in dict.fromkeys(k[1] for k in results if k[0] == sequence):
            seeds = sorted(k[2] for k in results if k[:2] == (sequence, method))
            values: dict[str, list[float]] = {"acc": [], "bwt": [], "fwt": [], "ct": []}
            for seed in seeds:
                R, seconds, _ = results[(sequence, method, seed)]
                found = _metrics(R, results.get((sequence, analysis.SINGLE_TASK, seed)))
                for key in ("acc", "bwt", "fwt"):
                    if found[key] is not None:
                        values[key].append(found[key])
                values["ct"].append(seconds)
            rows.append({"sequence": sequence, "method": method, "seeds": len(seeds), **_mean_std(values)})
    return rows


def family_table(results: Results) -> list[dict[str, Any]]:
    """Per task family (writers, classes, style-A ...): just-learnt accuracy (the diagonal),
    Acc, BWT and FWT over that family's tasks only, mean and std over seeds. This splits the
    stability-plasticity picture: forward gains show in FWT, losses of earlier similar tasks
    in BWT."""
    rows = []
    for sequence, method in dict.fromkeys(k[:2] for k in results):
        seeds = sorted(k[2] for k in results if k[:2] == (sequence, method))
        families = dict.fromkeys(f for seed in seeds for f in results[(sequence, method, seed)][2])
        for family in families:
            values: dict[str, list[float]] = {"diag": [], "acc": [], "bwt": [], "fwt": []}
            counts = []
            for seed in seeds:
                R, _, fams = results[(sequence, method, seed)]
                tasks = [i for i, f in enumerate(fams) if f == family]
                found = _metrics(R, results.get((sequence, analysis.SINGLE_TASK, seed)), tasks=tasks)
                if found["acc"] is None:  # none of the family's tasks learnt yet
                    continue
                counts.append(len(tasks))
                found["diag"] = found.pop("just_learnt")
                for key in values:
                    if found[key] is not None:
                        values[key].append(found[key])
            tasks = (f"{min(counts)}-{max(counts)}" if counts and min(counts) != max(counts)
                     else str(counts[0] if counts else 0))
            rows.append({"sequence": sequence, "method": method, "family": family, "tasks": tasks, **_mean_std(values)})
    return rows


def _cell(v: tuple[float, float] | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"


def layout(head: list[str], body: list[list[str]], *, markdown: bool) -> str:
    """The table's text; its cells made safe for a terminal first, so that the columns are
    measured as they are printed (a family or sequence name comes from a run file)."""
    body = [[terminal(x) for x in line] for line in body]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths)) for line in [head, *body])


def format_family_table(rows: list[dict[str, Any]], *, markdown: bool) -> str:
    head = ["sequence", "method", "family", "tasks", "just learnt", "Acc", "BWT", "FWT"]
    body = [[r["sequence"], r["method"], r["family"], r["tasks"], _cell(r["diag"]), _cell(r["acc"]), _cell(r["bwt"]),
             _cell(r["fwt"])] for r in rows]
    return layout(head, body, markdown=markdown)


def format_table(rows: list[dict[str, Any]], *, markdown: bool) -> str:
    """compare's table; with a PS column (``compare --tuned``) when the rows carry "ps"."""
    with_ps = any("ps" in r for r in rows)
    head = ["sequence", "method", "seeds", "Acc", "BWT", "FWT", "CT s", *(["PS"] if with_ps else [])]
    body = [[r["sequence"], r["method"], str(r["seeds"]), _cell(r["acc"]), _cell(r["bwt"]), _cell(r["fwt"]),
             _cell(r["ct"], 1), *([fmt(r.get("ps"))] if with_ps else [])] for r in rows]
    return layout(head, body, markdown=markdown)


def say_tables(rows: list[dict[str, Any]], families: list[dict[str, Any]] | None, *, markdown: bool) -> None:
    """compare's table, and the per-family one unless ``families`` is None (compare, table)."""
    say(*format_table(rows, markdown=markdown).split("\n"))
    if families is not None:
        say("", "per task family (FWT against STL of the same seed):",
            *format_family_table(families, markdown=markdown).split("\n"))
