"""How the methods differ: one small strategy record each, read by the single training loop.

No method has a loop of its own. They differ only in whether the network is masked, which
mask protects earlier tasks (none, HAT's accumulated a_<=t-1, or PRM's relaxed p_<=t-1),
where PRM's dissimilar sets come from, whether an EWC penalty is added, and whether each
task starts from a fresh network.
"""

from __future__ import annotations

from dataclasses import dataclass

from prm.config import METHODS


@dataclass(frozen=True, kw_only=True)
class Strategy:
    masked: bool
    protect: str  # "none" | "accumulated" (HAT) | "relaxed" (PRM)
    similarity: str | None = None  # PRM only: "xmeans" | "all-similar" | "all-dissimilar" | "true"
    ewc: bool = False
    fresh_per_task: bool = False

    @property
    def runs_dtd(self) -> bool:
        """Every PRM variant runs DTD, so the ablations cost what PRM costs and the explorer
        can show what X-means would have decided next to what the ablation used."""
        return self.protect == "relaxed"


STRATEGIES: dict[str, Strategy] = {
    "prm": Strategy(masked=True, protect="relaxed", similarity="xmeans"),
    "prm-s": Strategy(masked=True, protect="relaxed", similarity="all-similar"),
    "prm-d": Strategy(masked=True, protect="relaxed", similarity="all-dissimilar"),
    "prm-t": Strategy(masked=True, protect="relaxed", similarity="true"),
    "hat": Strategy(masked=True, protect="accumulated"),
    "ncl": Strategy(masked=False, protect="none"),
    "ewc": Strategy(masked=False, protect="none", ewc=True),
    "stl": Strategy(masked=False, protect="none", fresh_per_task=True),
}
assert tuple(STRATEGIES) == METHODS


def dissimilar_set(
    *, similarity: str, task: int, xmeans_dissimilar: list[int], families: list[str]
) -> list[int]:
    """The earlier tasks whose masks protect the weights while task ``task`` is learnt."""
    if similarity == "xmeans":
        return list(xmeans_dissimilar)
    if similarity == "all-similar":
        return []
    if similarity == "all-dissimilar":
        return list(range(task))
    if similarity == "true":
        return [i for i in range(task) if families[i] != families[task]]
    raise ValueError(f"unknown similarity source {similarity!r}")
