"""What-if children against their parent (``prm.whatif``): pure builders for the Clustering view.

A child re-learnt its parent's sequence from one task with DTD's decision replaced; every
difference between the two runs comes from that decision (with the parent's own decision
the child reproduces the parent exactly). Accuracies are compared over the tasks both runs
have learnt, so a child still training is compared fairly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer.figures.accuracy import heatmap
from explorer.figures.common import fmt, short
from prm import metrics
from prm.analysis import matrix_metrics
from prm.run import RunParent, RunState


@dataclass(frozen=True, kw_only=True)
class Pair:
    """A child run and its parent, as the view found them; ``name`` is the child's folder name."""

    name: str
    link: RunParent
    child: RunState
    parent: RunState


def shared_rows(pair: Pair) -> int:
    """Tasks learnt by both runs: the rows every comparison uses."""
    return min(metrics.completed_rows(pair.child.accuracy_matrix("test")),
               metrics.completed_rows(pair.parent.accuracy_matrix("test")))


def difference(pair: Pair, split: str = "test") -> np.ndarray:
    """Child minus parent accuracy matrix over the shared rows (NaN where either is unknown)."""
    n = shared_rows(pair)
    return (pair.child.accuracy_matrix(split) - pair.parent.accuracy_matrix(split))[:n, :n]


def decision(link: RunParent, layer: int) -> str:
    """The forced decision in words, e.g. 'at T3: similar T1; dissimilar T2'."""
    similar = ", ".join(short(i) for i in link.similar(layer)) or "none"
    dissimilar = ", ".join(short(i) for i in link.dissimilar[layer]) or "none"
    return f"at {short(link.task)}: similar {similar}; dissimilar {dissimilar}"


def summary_table(pairs: list[Pair], *, layer: int) -> pd.DataFrame:
    """One row per child: the decision it forced, Acc and BWT of child and parent after the
    last task both learnt, and the changes. Every cell is text (no 'nan' or 'None')."""
    rows = []
    for pair in pairs:
        n = shared_rows(pair)
        child, parent = (matrix_metrics(state.accuracy_matrix("test")[:n, :n]) for state in (pair.child, pair.parent))
        (acc_c, bwt_c), (acc_p, bwt_p) = (child["acc"], child["bwt"]), (parent["acc"], parent["bwt"])
        rows.append({
            "what-if run": pair.name, "forced decision": decision(pair.link, layer),
            "tasks compared": str(n),
            "Acc child": fmt(acc_c), "Acc parent": fmt(acc_p),
            "Acc change": fmt(None if n == 0 else acc_c - acc_p, signed=True),
            "BWT child": fmt(bwt_c, signed=True), "BWT parent": fmt(bwt_p, signed=True),
            "BWT change": fmt(None if n == 0 else bwt_c - bwt_p, signed=True),
        })
    return pd.DataFrame(rows)


def difference_figure(pair: Pair, tasks, *, layer: int) -> go.Figure:
    """Red-blue heatmap of child minus parent test accuracy (blue: the what-if did better)."""
    return heatmap(difference(pair), tasks, diverging=True, what="child − parent",
                   title=f"{pair.name}: child − parent test accuracy ({decision(pair.link, layer)}, layer {layer})")
