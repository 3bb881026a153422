"""PRM: partially relaxed masks. Before each task, DTD (``prm.dtd``) decides which earlier tasks
are dissimilar; while the task learns (LwPRM), only their units are protected, and the units of
the similar tasks are relaxed (freed in the paper, ``PRMConfig.relax`` of their gradient otherwise) so
that the new task can share and update what they learnt."""

from __future__ import annotations

import time
from collections.abc import Sequence

from prm import dtd as D
from prm import masks as M
from prm import trainer as T
from prm.methods.base import Method, Plan
from prm.methods.hat import Masked
from prm.model import MaskedMLP


class Relaxed(Masked):
    """DTD before every task after the first, then learning with the relaxed mask."""

    detects = "dtd"

    def dissimilar(self, task: int, called: list[int]) -> list[int]:
        """The earlier tasks protected while ``task`` learns, from DTD's call: PRM takes it as is;
        the ablations replace it."""
        return list(called)

    def before(self, task: int, model: MaskedMLP, forced: Sequence[Sequence[int]] | None) -> T.Steps:
        if task == 0:  # nothing earlier to judge: HAT's plan
            return (yield from super().before(task, model, forced))
        prm = self.ctx.cfg.prm
        D.init_embedding(model, task, prm.embedding_init)
        clock = time.perf_counter()
        decision = yield from D.detect(self.ctx, model, task, self.data[task], self.accumulated,
                                       choose=self.dissimilar, source=self.source or prm.clustering, forced=forced)
        if prm.head_init == "similar":
            D.copy_nearest_head(model, task, decision.rows, decision.dissimilar[-1])
        protect = [M.relaxed_mask([m[l] for m in self.task_masks], d, len(self.accumulated[l]), relax=prm.relax)
                   for l, d in enumerate(decision.dissimilar)]
        return Plan(protect=protect, reg_used=protect if prm.reg_mask == "relaxed" else self.accumulated,
                    epochs=dict(decision.epochs), seconds={"dtd": time.perf_counter() - clock})


METHOD = Method(
    name="prm", label="PRM", colour="#7B3294", hooks=Relaxed, tuned=("lamb",), paper="PRM",
    help="PRM: DTD (X-means on task embeddings) then learning with partially relaxed masks",
)
