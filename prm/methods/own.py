"""The hooks of a method that learns on a network of its own (``prm.learner``): PathNet,
SupSup, HyperNet and ACL build on them. Apart from ``prm.learner`` so that the networks'
modules, which import the learner, never import the method registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prm import trainer as T
from prm.learner import Learner, OwnPhase
from prm.methods.base import Hooks, Plan

if TYPE_CHECKING:
    from prm.model import MaskedMLP


class OwnNetwork(Hooks):
    """Hooks of a method that learns every task on its own ``Learner`` (built by ``build``,
    from the run's torch stream): each task trains as one ``OwnPhase`` and is answered by the
    learner. The engine's ``MaskedMLP`` stays unused. Not resumable: what-if checkpoints hold
    HAT's state, not these networks."""

    shared_step = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.learner: Learner | None = None

    def build(self) -> Learner:
        raise NotImplementedError

    def start(self, resume: Any) -> None:
        if resume is not None:
            raise ValueError(f"{type(self).__name__} runs cannot be resumed: checkpoints hold HAT's state only")
        with T.run_rng(self.ctx):
            self.learner = self.build().to(self.ctx.device)

    def phase(self, task: int) -> OwnPhase:
        return OwnPhase(learner=self.learner, task=task, cfg=self.ctx.cfg, rng=lambda: T.run_rng(self.ctx))

    def before(self, task: int, model: MaskedMLP, forced: Sequence[Sequence[int]] | None) -> T.Steps:
        return Plan(custom=self.phase(task))
        yield  # nothing to prepare: the generator form every method's preparation has

    def evaluated(self, task: int, model: MaskedMLP) -> Learner:
        return self.learner

