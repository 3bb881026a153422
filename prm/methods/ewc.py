"""EWC (elastic weight consolidation) on one unmasked network: after each task, the empirical
Fisher diagonal of the shared weights on its training data; while later tasks learn, a
quadratic penalty lam/2 * sum F (p - p*)^2 holds each weight near where the earlier tasks left
it, in proportion to how much they relied on it (the paper's EHAT baseline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from prm import trainer as T
from prm.methods.base import Hooks, Method, Plan
from prm.model import MaskedMLP


@dataclass(frozen=True, kw_only=True)
class EWC:
    """EWC's quadratic penalty lam/2 * sum F (p - anchor)^2 on the hidden layers' weights and
    biases (``fisher`` and ``anchor`` in ``model.shared_parameters()`` order)."""

    fisher: list[Tensor]
    anchor: list[Tensor]
    lam: float

    def terms(self) -> tuple[tuple[tuple[Tensor, Tensor], ...], tuple[tuple[Tensor, Tensor], ...], float]:
        """(fisher, anchor, lam) as a ``prm.stack.Phase`` holds them: (weight, bias) per layer."""
        def pairs(ts: list[Tensor]) -> tuple[tuple[Tensor, Tensor], ...]:
            return tuple(zip(ts[0::2], ts[1::2]))

        return pairs(self.fisher), pairs(self.anchor), self.lam

    @torch.no_grad()
    def value(self, model: MaskedMLP) -> float:
        return float(self.lam / 2 * sum((f * (p - a) ** 2).sum()
                                        for f, p, a in zip(self.fisher, model.shared_parameters(), self.anchor)))


def fisher_diagonal(model: MaskedMLP, task: int, data: dict[str, Tensor], batch_size: int, smax: float) -> list[Tensor]:
    """Empirical Fisher diagonal of the shared weights on the task's training data."""
    model.train()
    params = model.shared_parameters()
    fisher = [torch.zeros_like(p) for p in params]
    x, y = data["x_train"], data["y_train"]
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        model.zero_grad(set_to_none=True)
        logits, _ = model(xb, task, smax)
        F.cross_entropy(logits, yb).backward()
        for f, p in zip(fisher, params):
            f += p.grad.detach() ** 2 * len(xb)
    model.zero_grad(set_to_none=True)
    model.eval()
    return [f / len(x) for f in fisher]


class Consolidated(Hooks):
    """The penalty from the second task on; the Fisher diagonal is the mean over the tasks learnt."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fisher: list[Tensor] | None = None
        self.anchor: list[Tensor] | None = None

    def penalty(self) -> EWC | None:
        return None if self.fisher is None else EWC(fisher=self.fisher, anchor=self.anchor, lam=self.ctx.cfg.ewc_lambda)

    def after(self, task: int, model: MaskedMLP, plan: Plan, trajectory: list) -> dict[str, Any]:
        cfg = self.ctx.cfg
        with T.run_rng(self.ctx):
            new = fisher_diagonal(model, task, self.data[task], cfg.optim.batch_size, cfg.hat.smax)
        self.fisher = new if self.fisher is None else [(f * task + g) / (task + 1) for f, g in zip(self.fisher, new)]
        self.anchor = [p.detach().clone() for p in model.shared_parameters()]
        return {}


METHOD = Method(
    name="ewc", label="EWC", colour="#A6761D", hooks=Consolidated, tuned=("ewc_lambda",), paper="EHAT",
    help="EWC on the same unmasked network (Fisher from the task's training data)",
)
