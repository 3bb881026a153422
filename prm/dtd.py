"""Dissimilar-task detection (DTD): which earlier tasks PRM protects while it learns a new one.

Before learning task t, PRM trains a throw-away copy of the network on t in two stages (2SO):
first t's head alone (``PRMConfig.head_epochs``), then the whole network with every earlier task's
units protected as in HAT (``PRMConfig.dtd_epochs``). Training moves t's task embedding e_t (one row
per masked layer) towards the embeddings of the earlier tasks whose units help t. DTD then
clusters the rows e_1..e_t of each layer: X-means (k-means whose k is chosen by BIC,
``prm.xmeans``) in the paper, or this project's cosine rules (``prm.similarity``). The earlier
tasks outside t's cluster are *dissimilar*: their units stay protected; the tasks in t's
cluster are *similar*: their units are relaxed (``prm.masks.relaxed_mask``). The copy's weights
are thrown away; only the decision, the embeddings it was taken on and their trajectory are
kept (a ``DTDResult`` event and a ``dtd`` ``TaskArrays`` event).

Levers (``PRMConfig``): what is clustered (``features``), by which rule (``clustering``,
``threshold``), one decision per layer or one for all (``layers``), X-means' answer when it
cannot test anything (``undecided``), and an early end once the answer has settled (``settle``).
The ablations (PRM(S), PRM(D), PRM(T)) run DTD as PRM does but protect a set of their own
(``Decision.dissimilar``), so they cost what PRM costs and show what X-means would have said.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from prm import trainer as T
from prm.events import DTDResult, TaskArrays
from prm.model import MaskedMLP
from prm.similarity import cosine_distances, dissimilar_by_rule, features
from prm.xmeans import dtd_call, undecided, xmeans

if TYPE_CHECKING:
    from prm.config import PRMConfig

Choose = Callable[[int, list[int]], list[int]]
"""A method's dissimilar set from (task, the rule's call): PRM takes the call as it is."""


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What DTD hands to learning: per masked layer, the earlier tasks protected; the epochs of
    its phases; and the embedding table it decided on (rows 0..task, all layers side by side)."""

    dissimilar: list[list[int]]
    epochs: dict[str, int]
    rows: np.ndarray


class Rule:
    """DTD's rule for one task: X-means on each layer's rows, or a cosine rule; per layer, or
    one call for every layer from all layers' rows side by side (``prm.layers = together``)."""

    def __init__(self, *, prm: PRMConfig, task: int, seed: int, split: Callable[[Tensor], Sequence[Tensor]]) -> None:
        self.prm, self.task, self.seed, self.split = prm, task, seed, split

    def by_xmeans(self, points: np.ndarray) -> tuple[Any, bool, list[int]]:
        """X-means' result, whether it had nothing to test, and its call."""
        result = xmeans(features(points, self.prm.features), k_max=self.prm.k_max, seed=self.seed)
        return result, undecided(result), dtd_call(result, self.task, when_undecided=self.prm.undecided)

    def call(self, points: np.ndarray) -> list[int]:
        """The configured rule's dissimilar set on ``points``."""
        if self.prm.clustering == "xmeans":
            return self.by_xmeans(points)[2]
        return dissimilar_by_rule(features(points, self.prm.features), self.task, rule=self.prm.clustering,
                                  threshold=self.prm.threshold)

    def calls(self, rows_all: Tensor) -> list[list[int]]:
        """The rule's call per layer alone: what settling watches (no X-means record needed)."""
        if self.prm.layers == "together":
            return [self.call(_points(rows_all))] * len(self.split(rows_all))
        return [self.call(_points(rows)) for rows in self.split(rows_all)]

    def decide(self, rows_all: Tensor) -> list[tuple[Any, bool, list[int], list[int]]]:
        """Per layer: X-means' result, whether it was undecided, its call, and the rule's call."""
        shared = self.call(_points(rows_all)) if self.prm.layers == "together" else None
        out = []
        for rows in self.split(rows_all):
            result, was_undecided, by_xmeans = self.by_xmeans(_points(rows))
            called = shared if shared is not None else by_xmeans if self.prm.clustering == "xmeans" else \
                self.call(_points(rows))
            out.append((result, was_undecided, by_xmeans, called))
        return out


def _points(rows: Tensor) -> np.ndarray:
    return rows.numpy().astype(np.float64)


class _Settle:
    """``PRMConfig.settle``: every ``settle_every`` epochs, the rule's calls on the embeddings as they
    are; settled once they have not changed for ``settle`` checks in a row."""

    def __init__(self, *, rule: Rule, model: MaskedMLP, task: int) -> None:
        self.rule, self.model, self.task, self.answers = rule, model, task, []

    def __call__(self, epoch: int) -> bool:
        prm = self.rule.prm
        if (epoch + 1) % prm.settle_every:
            return False
        self.answers.append(self.rule.calls(self.model.embedding.weight[: self.task + 1].detach().cpu()))
        recent = self.answers[-prm.settle - 1:]
        return len(recent) == prm.settle + 1 and all(a == recent[-1] for a in recent)


def detect(ctx: T.Context, model: MaskedMLP, task: int, data: dict[str, Tensor], acc_mask: list[Tensor], *,
           choose: Choose, source: str, forced: Sequence[Sequence[int]] | None = None) -> T.Steps:
    """DTD for ``task`` on a copy of the state; returns a ``Decision``. ``choose`` turns the
    rule's call into the method's dissimilar set, ``source`` names where that set came from in
    the record; ``forced`` (per layer) replaces the decision and is recorded as ``whatif``."""
    cfg = ctx.cfg
    saved = T.snapshot(model)
    epochs = {}
    if cfg.prm.two_stage and cfg.prm.head_epochs > 0:
        epochs["dtd-head"], _ = yield from T.fit(ctx, model, task, data, phase="dtd-head",
                                                 max_epochs=cfg.prm.head_epochs, head_only=True)
    rule = Rule(prm=cfg.prm, task=task, seed=cfg.seed, split=model.split)
    settle = _Settle(rule=rule, model=model, task=task) if cfg.prm.settle > 0 else None
    epochs["dtd"], trajectory = yield from T.fit(ctx, model, task, data, phase="dtd", max_epochs=cfg.prm.dtd_epochs,
                                                 protect=acc_mask, reg_used=acc_mask, settled=settle)
    started = time.perf_counter()
    layers, dissimilar, arrays = [], [], {}
    rows_all = model.embedding.weight[: task + 1].detach().cpu()
    tables = model.split(rows_all)
    for index, (result, was_undecided, by_xmeans, called) in enumerate(rule.decide(rows_all)):
        used = sorted(forced[index]) if forced is not None else choose(task, called)
        record = result.to_dict()
        del record["centers"]  # the means of each cluster's rows of arrays/dtd_<t>.npz: not logged twice
        layers.append({"xmeans": record, "undecided": was_undecided, "dissimilar_xmeans": by_xmeans,
                       "dissimilar": used})
        dissimilar.append(used)
        arrays[f"embeddings_l{index}"] = _points(tables[index]).astype(np.float32)
        arrays[f"trajectory_l{index}"] = T.stack_trajectory(trajectory, index, cfg.record.trajectory_dtype)
    model.load_state_dict(saved)
    ctx.emit(TaskArrays(task=task, kind="dtd", arrays=arrays))
    ctx.emit(DTDResult(task=task, layers=layers, source="whatif" if forced is not None else source,
                       seconds=time.perf_counter() - started))
    return Decision(dissimilar=dissimilar, epochs=epochs, rows=_points(rows_all))


@torch.no_grad()
def init_embedding(model: MaskedMLP, task: int, how: str) -> None:
    """Set the new task's embedding row before DTD (``PRMConfig.embedding_init``); ``normal``
    keeps HAT's N(0, 1) draw from the model's construction."""
    if how == "zeros":
        model.embedding.weight[task].zero_()
    elif how == "mean":
        model.embedding.weight[task] = model.embedding.weight[:task].mean(0)


@torch.no_grad()
def copy_nearest_head(model: MaskedMLP, task: int, dtd_rows: np.ndarray, dissimilar_last: Sequence[int]) -> None:
    """``PRMConfig.head_init == "similar"``: start the new task's head from the head of its
    nearest (cosine, DTD embeddings) earlier similar task with as many classes, so that the
    shared units the relaxed mask frees are moved in a direction that task's head can read.
    "Similar" is the last masked layer's call (the layer the heads read); "nearest" is the
    cosine distance over all layers' DTD embeddings side by side."""
    size = model.heads[task].out_features
    similar = [i for i in range(task) if i not in set(dissimilar_last) and model.heads[i].out_features == size]
    if similar:
        dist = cosine_distances(dtd_rows)[task]
        nearest = min(similar, key=lambda i: dist[i])
        model.heads[task].load_state_dict(model.heads[nearest].state_dict())
