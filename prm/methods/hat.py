"""HAT: hard attention to the task. Each task learns a mask per layer from its own embedding;
while a task learns, the weights into and out of the units earlier tasks hold (their
accumulated mask a_<=t-1) are protected, so nothing learnt before is forgotten."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from prm import masks as M
from prm import trainer as T
from prm.methods.base import Hooks, Method, Plan
from prm.model import MaskedMLP


class Masked(Hooks):
    """HAT's bookkeeping, shared by every masked method: the smax mask of each task learnt and
    their running maximum; a new task protects all of it."""

    masked = True
    resumable = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.accumulated: list | None = None

    def start(self, resume: Any) -> None:
        for masks in resume.checkpoint.task_masks if resume is not None else ():
            self._add(list(masks))

    def _add(self, masks: list) -> None:
        previous = self.accumulated
        self.task_masks.append(masks)
        self.accumulated = [M.accumulate(None if previous is None else previous[l], m) for l, m in enumerate(masks)]

    def before(self, task: int, model: MaskedMLP, forced: Sequence[Sequence[int]] | None) -> T.Steps:
        return Plan(protect=self.accumulated, reg_used=self.accumulated)
        yield  # nothing to train before a HAT task

    def after(self, task: int, model: MaskedMLP, plan: Plan, trajectory: list) -> dict[str, Any]:
        """Record the task's mask, the new accumulated mask and what training protected."""
        cfg = self.ctx.cfg
        self._add(T.smax_masks(model, task, cfg.hat.smax))
        arrays: dict[str, Any] = {}
        for l, emb in enumerate(model.task_embeddings(task)):
            arrays[f"embedding_l{l}"] = emb.detach().cpu().numpy().astype(np.float32)
            arrays[f"mask_l{l}"] = self.task_masks[-1][l].numpy()
            arrays[f"accumulated_l{l}"] = self.accumulated[l].numpy()
            if plan.protect is not None:
                arrays[f"protected_l{l}"] = plan.protect[l].cpu().numpy()
            arrays[f"trajectory_l{l}"] = T.stack_trajectory(trajectory, l, cfg.record.trajectory_dtype)
        return arrays

    def capacity(self) -> list[float]:
        return [M.capacity_used(m) for m in self.accumulated]


METHOD = Method(
    name="hat", label="HAT", help="HAT: hard attention to the task, every previous task protected",
    colour="#2166AC", hooks=Masked, tuned=("lamb",), role="baseline", paper="HAT",
)
