"""Which seed the Story tells and the spread over the listed seeds (prm.analysis, told by
explorer.figures.seeds), against numbers worked out by hand. The Acc values are dyadic
fractions (exact in binary), so gains that are equal by hand are equal in floating point too
and the ranking is the hand's."""

from __future__ import annotations

from dataclasses import replace

from explorer.figures.seeds import seed_sentence
from prm.analysis import seed_spread, spread_of
from tests.test_story import entry

HAT = {s: 0.5 for s in range(5)}
OWN = {0: 0.5625, 1: 0.75, 2: 0.4375, 3: 0.625, 4: 0.53125}
"""Gains over HAT: seed 0 +0.0625, 1 +0.25, 2 −0.0625, 3 +0.125, 4 +0.03125; ranked from the
lowest: 2, 4, 0, 3, 1. Mean Acc 2.90625 / 5 = 0.58125; population sd sqrt(0.05390625 / 5) =
0.1038 (deviations −0.01875, 0.16875, −0.14375, 0.04375, −0.05)."""


def test_an_odd_number_of_seeds_has_the_middle_one_as_median():
    spread = seed_spread(OWN, HAT, seed=0)
    assert spread.ranked == (2, 4, 0, 3, 1) and spread.median == 0 and spread.is_median
    assert seed_sentence(spread, method="prm") == (
        "Seed 0 is the median of PRM − HAT over the 5 seeds listed (−0.062 to +0.250). "
        "PRM 0.562 here, 0.581 ± 0.104 over 5 seeds; HAT 0.500 ± 0.000 over 5 seeds.")


def test_a_seed_that_is_not_the_median_says_where_it_stands_and_which_seed_is():
    assert seed_sentence(seed_spread(OWN, HAT, seed=1), method="prm+").startswith(
        "Seed 1 is the highest in PRM\\+ − HAT over the 5 seeds listed (−0.062 to +0.250; here +0.250); "
        "the median is seed 0. PRM\\+ 0.750 here, 0.581 ± 0.104 over 5 seeds;")
    assert "Seed 3 is above the median" in seed_sentence(seed_spread(OWN, HAT, seed=3), method="prm")
    assert "Seed 4 is below the median" in seed_sentence(seed_spread(OWN, HAT, seed=4), method="prm")
    assert "Seed 2 is the lowest" in seed_sentence(seed_spread(OWN, HAT, seed=2), method="prm")


def test_an_even_number_of_seeds_takes_the_lower_middle():
    four = {s: OWN[s] for s in (0, 1, 2, 3)}  # ranked 2, 0, 3, 1: middles 0 (+0.0625) and 3 (+0.125)
    assert seed_spread(four, HAT, seed=3).median == 0
    assert not seed_spread(four, HAT, seed=3).is_median
    tie = {**four, 3: 0.5625}  # seed 3 now gains as much as the median seed 0: as typical
    assert seed_spread(tie, HAT, seed=3).is_median


def test_a_seed_without_hat_is_left_out_of_the_ranking_not_of_the_mean():
    hat = {s: v for s, v in HAT.items() if s != 3}
    spread = seed_spread(OWN, hat, seed=3)
    assert spread.ranked == (2, 4, 0, 1) and spread.median == 4  # lower middle of four
    assert seed_sentence(spread, method="prm") == (
        "Seed 3 has no HAT run; over the 4 seeds with a HAT run, PRM − HAT spans −0.062 to +0.250, median seed 4. "
        "PRM 0.625 here, 0.581 ± 0.104 over 5 seeds; HAT 0.500 ± 0.000 over 4 seeds.")
    only_one = seed_spread(OWN, {0: 0.5}, seed=0)
    assert seed_sentence(only_one, method="prm").startswith("Seed 0: too few seeds have a HAT run to rank by PRM − HAT.")


def test_one_seed_claims_no_spread():
    assert seed_sentence(seed_spread({4: 0.53125}, {4: 0.5}, seed=4), method="prm") == (
        "Seed 4 is the only seed listed: PRM 0.531, HAT 0.500; no spread over seeds can be given.")
    assert seed_sentence(seed_spread({4: 0.53125}, {}, seed=4), method="prm") == (
        "Seed 4 is the only seed listed: PRM 0.531; no spread over seeds can be given.")


def test_a_hat_run_is_ranked_by_its_own_acc():
    spread = seed_spread({0: 0.5, 1: 0.75, 2: 0.625}, None, seed=2)
    assert spread.median == 2 and seed_sentence(spread, method="hat") == (
        "Seed 2 is the median of HAT's Acc over the 3 seeds listed (0.500 to 0.750). "
        "HAT 0.625 here, 0.625 ± 0.102 over 3 seeds.")


def test_the_spread_is_computed_from_the_listed_runs():
    """Like runs: same sequence, method, task count and configuration, one per seed, finished;
    each paired with its finished HAT sibling of the same seed."""
    me = replace(entry("prm", seed=0), acc=OWN[0])
    listed = [me, *(replace(entry("prm", seed=s), acc=OWN[s]) for s in (1, 2, 3)),
              replace(entry("prm", seed=4, config="other"), acc=0.99),  # another experiment: left out
              *(replace(entry("hat", seed=s), acc=0.5) for s in (0, 1, 2)),
              replace(entry("hat", seed=3, status="stopped"), acc=0.1)]  # unfinished: no HAT for seed 3
    spread = spread_of(me, listed)
    assert dict(spread.own) == {s: OWN[s] for s in range(4)} and set(spread.hat) == {0, 1, 2}
    assert spread.ranked == (2, 0, 1) and spread.median == 0 and spread.is_median
    assert spread_of(replace(me, status="stopped"), listed) is None  # its Acc is not final
    assert spread_of(listed[5], listed).hat is None  # HAT itself: ranked by Acc
