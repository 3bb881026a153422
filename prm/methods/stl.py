"""STL: single-task learning, a fresh unmasked network per task that never sees another task;
the reference forward transfer (FWT) is measured against."""

from __future__ import annotations

from typing import Any

from prm import trainer as T
from prm.methods.base import Hooks, Method, Plan
from prm.model import MaskedMLP


class Fresh(Hooks):
    """A new network for every task after the first; each task is answered by its own."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.networks: list[MaskedMLP] = []

    def network(self, task: int, model: MaskedMLP) -> MaskedMLP:
        if task == 0:
            return model
        ctx = self.ctx
        with T.run_rng(ctx):
            model = T.build_model(ctx.cfg, self.seq, masked=False, device=ctx.device)
        ctx.stack.adopt(ctx.slot, model)
        return model

    def after(self, task: int, model: MaskedMLP, plan: Plan, trajectory: list) -> dict[str, Any]:
        self.networks.append(model)
        return {}

    def evaluated(self, task: int, model: MaskedMLP) -> MaskedMLP:
        return self.networks[task]


METHOD = Method(
    name="stl", label="STL", colour="#35978F", hooks=Fresh, role="single-task", paper="STL",
    help="single-task learning: a fresh unmasked network per task (the reference for FWT)",
)
