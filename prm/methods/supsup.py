"""SupSup (Wortsman et al., NeurIPS 2020, "Supermasks in Superposition") as a baseline, in its
task-given scenario (the paper's GG, which is task-incremental learning): the weights stay at
their random initialisation and each task learns only a supermask over them, one per task,
the top ``sparsity`` fraction of each layer by learnt score (``prm.supsup``).

Every task trains as one phase of the trainer's (HAT's patience schedule, SGD on the task's
own scores); after it, its masks are frozen and recorded, packed row by row, as ``supermask_l<l>`` per
hidden layer, so the explorer can set the overlap of two tasks' supermasks against HAT's."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from prm.methods.own import OwnNetwork
from prm.methods.base import ArrayRule, Method, Plan, Range, Settings, Shape
from prm.model import MaskedMLP
from prm.supsup import SCORE_INITS, WEIGHT_INITS, SupermaskNet

SECTION = "supsup"


@dataclass(frozen=True, kw_only=True)
class SupSupConfig(Settings):
    """SupSup's own settings, with the authors' defaults.

    ``sparsity``: the fraction of each layer's weights a supermask KEEPS (the top-k of
    edge-popup; the authors' ``--sparsity`` flag, which despite its name is this density;
    default 0.5 there and here). ``weight_init``: how the fixed weights are drawn
    (``prm.supsup.WEIGHT_INITS``; SupSup's experiments all use ``signed_constant``).
    ``score_init``: how each task's scores start (``prm.supsup.SCORE_INITS``)."""

    sparsity: float = 0.5
    weight_init: str = "signed_constant"
    score_init: str = "kaiming_uniform"

    def problems(self, model: Any) -> list[str]:
        out = []
        if not 0.0 < self.sparsity <= 1.0:
            out.append(f"{SECTION}.sparsity: the fraction of weights kept, must be in (0, 1], got {self.sparsity!r}")
        if self.weight_init not in WEIGHT_INITS:
            out.append(f"{SECTION}.weight_init: one of {', '.join(WEIGHT_INITS)}, got {self.weight_init!r}")
        if self.score_init not in SCORE_INITS:
            out.append(f"{SECTION}.score_init: one of {', '.join(SCORE_INITS)}, got {self.score_init!r}")
        return out


class Supermasks(OwnNetwork):
    """One supermask per task over one fixed random network."""

    def build(self) -> SupermaskNet:
        cfg = self.ctx.cfg
        own: SupSupConfig = getattr(cfg, SECTION)
        return SupermaskNet(input_dim=self.seq.input_dim, hidden=cfg.model.hidden,
                            head_sizes=[t.n_classes for t in self.seq.tasks], density=own.sparsity,
                            weight_init=own.weight_init, score_init=own.score_init,
                            input_dropout=cfg.model.input_dropout, hidden_dropout=cfg.model.hidden_dropout)

    def after(self, task: int, model: MaskedMLP, plan: Plan, trajectory: list) -> dict[str, Any]:
        """Freeze the task's masks (its best-validation scores, restored by the trainer) and
        record each hidden layer's as ``np.packbits`` of its boolean (out x in) matrix, row by
        row: (out, ceil(in / 8)) bytes, so that no dimension outgrows what a run reader accepts."""
        masks = self.learner.freeze(task)[:-1]  # the head's mask is the task's own: not compared
        return {f"supermask_l{l}": np.packbits(m.cpu().numpy().astype(bool), axis=1) for l, m in enumerate(masks)}


def _packed_shape(where: Shape) -> tuple[int, int | None]:
    """One hidden layer's packed mask: a row of ceil(in / 8) bytes per output unit, in = the
    input size for layer 0 (unknown, so any length, when the run's log lacks its start record)."""
    fan_in = where.input_dim if where.layer == 0 else where.widths[where.layer - 1]
    return where.widths[where.layer], (None if fan_in is None else math.ceil(fan_in / 8))


@dataclass(frozen=True, kw_only=True)
class PackedBits(ArrayRule):
    """A packed boolean mask: bytes, so exactly uint8 (a wider unsigned type would pass the
    kind check and then fail ``np.unpackbits``)."""

    def problem(self, array: Any, where: Shape) -> str | None:
        if array.dtype != np.uint8:
            return f"dtype {array.dtype}, expected uint8 (packed bits)"
        return super().problem(array, where)


METHOD = Method(
    name="supsup", label="SupSup", colour="#66A61E", hooks=Supermasks, paper="SS", sections=(SECTION,),
    settings=SupSupConfig,
    ranges=(Range(name="sparsity", section=SECTION, field="sparsity", low=0.02, high=0.9, log=True),),
    arrays={"supermask": PackedBits(shape=_packed_shape, kinds="u", low=0, high=255)},
    help="SupSup (Wortsman et al. 2020): the weights stay random; each task learns only a binary supermask "
         "over them (the top 'sparsity' fraction of each layer by learnt score, edge-popup), so no task "
         "can disturb another",
)
