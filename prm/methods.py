"""How the methods differ: one small strategy record each, read by the single training loop.

No method has a loop of its own. They differ only in whether the network is masked, which
mask protects earlier tasks (none, HAT's accumulated a_<=t-1, or PRM's relaxed p_<=t-1),
where PRM's dissimilar sets come from, whether CAT's transfer tests and attention run,
whether an EWC penalty is added, whether each
task starts from a fresh network, and whether it trains on every task's data so far (joint).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prm.config import METHODS


@dataclass(frozen=True, kw_only=True)
class Strategy:
    masked: bool
    protect: str  # "none" | "accumulated" (HAT) | "relaxed" (PRM)
    similarity: str | None = None  # PRM only: "xmeans" | "all-similar" | "all-dissimilar" | "true"
    ewc: bool = False
    cat: bool = False  # CAT: transfer/reference tests, relaxed first-claimed units, the KTA head
    fresh_per_task: bool = False
    joint: bool = False  # train on the data of every task so far at once (with fresh_per_task)

    @property
    def runs_dtd(self) -> bool:
        """Every PRM variant runs DTD, so the ablations cost what PRM costs and the explorer
        can show what X-means would have decided next to what the ablation used."""
        return self.protect == "relaxed"


STRATEGIES: dict[str, Strategy] = {
    "prm": Strategy(masked=True, protect="relaxed", similarity="xmeans"),
    "prm+": Strategy(masked=True, protect="relaxed", similarity="xmeans"),  # config.VARIANT_LEVERS
    "prm-s": Strategy(masked=True, protect="relaxed", similarity="all-similar"),
    "prm-d": Strategy(masked=True, protect="relaxed", similarity="all-dissimilar"),
    "prm-t": Strategy(masked=True, protect="relaxed", similarity="true"),  # see true_groups
    "hat": Strategy(masked=True, protect="accumulated"),
    "cat": Strategy(masked=True, protect="accumulated", cat=True),
    "ncl": Strategy(masked=False, protect="none"),
    "ewc": Strategy(masked=False, protect="none", ewc=True),
    "stl": Strategy(masked=False, protect="none", fresh_per_task=True),
    "joint": Strategy(masked=False, protect="none", fresh_per_task=True, joint=True),
}
assert tuple(STRATEGIES) == METHODS


def true_groups(tasks: Sequence[Mapping[str, Any]]) -> list[int]:
    """Ground-truth similarity as group ids: two tasks are similar when they share a family
    *and* a label set (writers of the same ten digits, one image style). Class-split tasks
    share the family 'classes' but not their classes, so each is its own group: dissimilar
    to every other task, as in the paper's dissimilar sequences."""
    ids: dict[tuple[str, tuple[int, ...]], int] = {}
    return [ids.setdefault((t["family"], tuple(t["classes"])), len(ids)) for t in tasks]


def dissimilar_set(*, similarity: str, task: int, xmeans_dissimilar: list[int], groups: list[int]) -> list[int]:
    """The earlier tasks whose masks protect the weights while task ``task`` is learnt;
    ``groups`` is :func:`true_groups` of the sequence (used by PRM(T) only)."""
    if similarity == "xmeans":
        return list(xmeans_dissimilar)
    if similarity == "all-similar":
        return []
    if similarity == "all-dissimilar":
        return list(range(task))
    if similarity == "true":
        return [i for i in range(task) if groups[i] != groups[task]]
    raise ValueError(f"unknown similarity source {similarity!r}")


def judged_right(*, groups: list[int], task: int, dissimilar: Sequence[int]) -> dict[int, bool]:
    """Each earlier task's call, right or wrong: a call is right when the task was called
    dissimilar exactly when its true group differs from ``task``'s (see :func:`true_groups`).
    Every view that marks a decision right or wrong asks this one function."""
    called = set(dissimilar)
    return {i: (i in called) == (groups[i] != groups[task]) for i in range(task)}


def calls_right(*, groups: list[int], task: int, dissimilar: Sequence[int]) -> float:
    """Fraction of the earlier tasks DTD judged right (:func:`judged_right`)."""
    if task == 0:
        raise ValueError("the first task has no earlier task to judge")
    return sum(judged_right(groups=groups, task=task, dissimilar=dissimilar).values()) / task
