"""Which seed the Story tells, among the listed seeds of its experiment, and the spread over them.

One seed is one draw: a reader must know whether the told seed is typical. Each listed seed's
gain of the run's method over HAT of the same seed (their Acc) ranks the seeds; the median seed
is the typical one. With an even number of seeds the median is the *lower* middle, so that it is
always a seed that exists and never flatters the method. Everything here is computed from the
listed runs; nothing is hard-coded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from explorer.catalog import RunEntry
from explorer.figures.common import fmt, md
from explorer.figures.story import label, like_runs, siblings
from prm.metrics import median_seed


@dataclass(frozen=True, kw_only=True)
class SeedSpread:
    """The told ``seed``, each seed's Acc (``own``) and its HAT sibling's (``hat``: None when
    the method is HAT itself), and ``gains`` (own − HAT, or own Acc for HAT) over the seeds
    that have one."""

    seed: int
    own: Mapping[int, float]
    hat: Mapping[int, float] | None
    gains: Mapping[int, float]

    @property
    def ranked(self) -> tuple[int, ...]:
        """The seeds with a gain, lowest gain first (ties by seed, as ``median_seed`` ranks)."""
        return tuple(sorted(self.gains, key=lambda s: (self.gains[s], s)))

    @property
    def median(self) -> int | None:
        """The representative seed (``prm.metrics.median_seed``, the rule that picks the bundled
        samples and the app's default run); None without a ranked seed."""
        return median_seed(dict(self.gains)) if self.gains else None

    @property
    def is_median(self) -> bool:
        """The told seed's gain equals the median's (a tie is as typical as the median)."""
        return self.median is not None and self.seed in self.gains and self.gains[self.seed] == self.gains[self.median]


def seed_spread(own: Mapping[int, float], hat: Mapping[int, float] | None, *, seed: int) -> SeedSpread:
    """Rank the seeds of ``own`` by their gain over ``hat`` of the same seed (a seed without a
    HAT run is left out of the ranking, not of ``own``'s mean); ``hat`` None ranks by Acc."""
    gains = {s: a - hat[s] for s, a in own.items() if s in hat} if hat is not None else dict(own)
    return SeedSpread(seed=seed, own=dict(own), hat=None if hat is None else dict(hat), gains=gains)


def _mean_sd(values: Sequence[float]) -> str:
    """'0.905 ± 0.011 over 5 seeds' (population sd, as the Compare view's spread)."""
    return f"{fmt(float(np.mean(values)))} ± {fmt(float(np.std(values)))} over {len(values)} seeds"


def seed_sentence(spread: SeedSpread, *, method: str) -> str:
    """Which seed this is and why, then the method's Acc here beside its mean ± sd over the
    seeds (and HAT's); one seed alone claims no spread (Markdown)."""
    name = md(label(method))
    measure = f"{name} − HAT" if spread.hat is not None else f"{name}'s Acc"
    if len(spread.own) == 1:
        hat = (spread.hat or {}).get(spread.seed)
        return (f"Seed {spread.seed} is the only seed listed: {name} {fmt(spread.own[spread.seed])}"
                + (f", HAT {fmt(hat)}" if hat is not None else "") + "; no spread over seeds can be given.")
    values = f"{name} {fmt(spread.own[spread.seed])} here, {_mean_sd(list(spread.own.values()))}"
    if spread.hat:
        values += f"; HAT {_mean_sd(list(spread.hat.values()))}"
    return f"{_rank(spread, measure)}. {values}."


def _rank(spread: SeedSpread, measure: str) -> str:
    """Where the told seed stands among the ranked ones, in one clause."""
    n, gains, signed = len(spread.ranked), spread.gains, spread.hat is not None
    if n < 2:
        return f"Seed {spread.seed}: too few seeds have a HAT run to rank by {measure}"
    span = f"{fmt(gains[spread.ranked[0]], signed=signed)} to {fmt(gains[spread.ranked[-1]], signed=signed)}"
    over = f"over the {n} seeds" + (" listed" if n == len(spread.own) else " with a HAT run")
    if spread.seed not in gains:
        return f"Seed {spread.seed} has no HAT run; {over}, {measure} spans {span}, median seed {spread.median}"
    if spread.is_median:
        return f"Seed {spread.seed} is the median of {measure} {over} ({span})"
    here = fmt(gains[spread.seed], signed=signed)
    where = ("the highest" if spread.seed == spread.ranked[-1] else "the lowest" if spread.seed == spread.ranked[0]
             else "above the median" if gains[spread.seed] > gains[spread.median] else "below the median")
    return f"Seed {spread.seed} is {where} in {measure} {over} ({span}; here {here}); the median is seed {spread.median}"


def spread_of(entry: RunEntry, entries: Sequence[RunEntry]) -> SeedSpread | None:
    """:func:`seed_spread` over ``entry``'s like runs (:func:`like_runs`: same sequence, method,
    task count and configuration) and each one's finished HAT sibling (:func:`siblings`); None
    for an unfinished run, whose Acc is not final."""
    if entry.status != "finished" or entry.acc is None or entry.seed is None:
        return None
    runs = [e for e in like_runs(entry, entries) if e.acc is not None and e.seed is not None]
    own = {e.seed: float(e.acc) for e in runs}
    if entry.method == "hat":
        return seed_spread(own, None, seed=entry.seed)
    hat = {}
    for e in runs:
        found = siblings(e, entries).get("hat")
        if found is not None and found.status == "finished" and found.acc is not None:
            hat[e.seed] = float(found.acc)
    return seed_spread(own, hat, seed=entry.seed)
