"""Methods with a network of their own: PathNet's modules, SupSup's supermasks, HyperNet's
generated weights, ACL's shared and private parts.

HAT and its relatives train one ``MaskedMLP`` with the hand-written stacked step
(``prm.step``). The baselines here compute their forward pass in ways that step does not
spell out, so they train with autograd, as CAT's attention does (``prm.cat``): a method's
``Learner`` says what its network computes and which gradients its rule allows, and
``OwnPhase`` is what ``prm.trainer.fit`` calls instead of the stacked step (the hooks that
train every task so are ``prm.methods.own.OwnNetwork``). Everything
else (HAT's patience schedule, early stopping on the validation loss, the best state
restored, the events, the accuracy matrix) is the trainer's and the engine's, the same for
every method, so the comparison is between methods and not between training loops.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prm.stack import Request

if TYPE_CHECKING:
    from prm.config import RunConfig


class Learner(nn.Module):
    """A method's own network: ``forward(x, task, s)`` returns (logits of ``task``'s head,
    None), as ``MaskedMLP`` does, so the trainer's evaluation reads it alike (``s`` is HAT's
    slope, unused here). Subclasses add what their rule needs."""

    def objective(self, x: Tensor, y: Tensor, task: int) -> tuple[Tensor, Tensor, Tensor]:
        """(what training minimises, the data loss that is reported, the logits) on one batch;
        plain cross-entropy unless the method adds terms (HyperNet's output regulariser,
        ACL's adversarial and difference losses)."""
        logits, _ = self(x, task, 1.0)
        loss = F.cross_entropy(logits, y)
        return loss, loss, logits

    def trainable(self, task: int) -> list[nn.Parameter]:
        """The parameters one step of ``task`` updates (all, unless the rule freezes some)."""
        return list(self.parameters())

    def adjust(self, task: int) -> None:
        """Change the gradients before the update (freeze what the rule protects)."""

    def settle(self, task: int) -> None:
        """After each update (clamp, renormalise); nothing by default."""

    def validation_loss(self, x: Tensor, y: Tensor, task: int) -> float:
        """The loss early stopping watches (the data loss unless a method says otherwise)."""
        logits, _ = self(x, task, 1.0)
        return float(F.cross_entropy(logits, y))


@dataclass(kw_only=True)
class OwnPhase:
    """One phase of ``task`` on a ``Learner``: the step and the validation score that
    ``prm.trainer.fit`` calls instead of the stacked step's, and the state its early stopping
    snapshots. ``rng``: the run's own stream of torch's generator for the block (dropout), so
    the run stays reproducible whatever trains beside it."""

    learner: Learner
    task: int
    cfg: RunConfig
    rng: Callable[[], AbstractContextManager]

    def step(self, request: Request) -> tuple[Tensor, Tensor]:
        """One SGD step on the real rows of ``request``: the learner's objective, its gradient
        rule, the trainer's clipping; returns (data loss, logits)."""
        learner, task = self.learner, self.task
        x, y = request.x[: request.n], request.y[: request.n]
        params = learner.trainable(task)
        with self.rng():
            learner.train()
            for p in learner.parameters():
                p.grad = None
            total, loss, logits = learner.objective(x, y, task)
            total.backward()
        with torch.no_grad():
            learner.adjust(task)
            grads = [p for p in params if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(grads, self.cfg.optim.clip)
            for p in grads:
                p -= request.lr * p.grad
            learner.settle(task)
        return loss.detach(), logits.detach()

    @torch.no_grad()
    def score(self, x: Tensor, y: Tensor, chunk: int = 4096) -> tuple[float, float]:
        """(validation loss early stopping watches, accuracy), dropout off."""
        self.learner.eval()
        loss, correct = 0.0, 0
        for start in range(0, len(x), chunk):
            xb, yb = x[start:start + chunk], y[start:start + chunk]
            loss += self.learner.validation_loss(xb, yb, self.task) * len(xb)
            correct += int((self.learner(xb, self.task, 1.0)[0].argmax(1) == yb).sum())
        return loss / len(x), correct / len(x)

    def state(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.learner.state_dict().items()}

    def load(self, state: dict[str, Tensor]) -> None:
        self.learner.load_state_dict(state)
