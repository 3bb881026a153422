"""Which seed the Story tells, among the listed seeds of its experiment, and the spread over
them, in words.

One seed is one draw: a reader must know whether the told seed is typical. Each listed seed's
gain of the run's method over HAT of the same seed (their Acc) ranks the seeds; the median seed
is the typical one. With an even number of seeds the median is the *lower* middle, so that it is
always a seed that exists and never flatters the method. The ranking is ``prm.analysis.SeedSpread``
(:func:`prm.analysis.spread_of`), computed from the listed runs; nothing is hard-coded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from explorer.figures.common import fmt, md
from explorer.figures.story import label
from prm.analysis import SeedSpread


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
