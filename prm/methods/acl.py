"""ACL (Ebrahimi et al., ECCV 2020) as a baseline: a shared module trained adversarially to hold
task-invariant features, a private module per task frozen after its task, a head per task on
both (``prm.acl``). The training step and the record of what each module carries live here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from prm import trainer as T
from prm.acl import SharedPrivate
from prm.learner import OwnPhase
from prm.methods.own import OwnNetwork
from prm.events import MAX_TASKS
from prm.limits import MAX_INPUT, MAX_WEIGHTS, MAX_WIDTH
from prm.methods.base import ArrayRule, Method, Plan, Range, Settings, Shape
from prm.model import MaskedMLP
from prm.stack import Request


@dataclass(frozen=True, kw_only=True)
class ACLConfig(Settings):
    """ACL's own settings, the original's values (its MLP configs for split and permuted
    MNIST unless said otherwise). ``adv_weight``: the adversarial loss's weight in the main
    network's objective (``adv``); ``diff_weight``: the difference loss's (``orth``; the
    original's MLP configs switch it off with its reversal, its conv configs use 0.1: see the
    doc). ``private_ratio``: each private module's width as a fraction of S's output width
    (the original gives both the same ``latent_dim``). ``discriminator_ratio``: D's hidden
    width as a fraction of S's first layer (the original uses S's ``units`` for both).
    ``s_steps``: updates of the main network on each batch before D's (``s_step``: 5 in its
    permuted-MNIST and conv configs, 20 for split MNIST); ``d_steps``: D's updates per batch.
    ``d_lr_ratio``: D's learning rate as a fraction of the main network's current one
    (``d_lr / e_lr`` = 0.1 in the original); ``d_decay``: D's weight decay (``d_wd``)."""

    adv_weight: float = 0.05
    diff_weight: float = 0.1
    private_ratio: float = 1.0
    discriminator_ratio: float = 1.0
    s_steps: int = 5
    d_steps: int = 1
    d_lr_ratio: float = 0.1
    d_decay: float = 0.01

    def problems(self, model: Any) -> list[str]:
        out = [f"acl.{name}: must be >= 0, got {getattr(self, name)!r}"
               for name in ("adv_weight", "diff_weight", "d_lr_ratio", "d_decay") if getattr(self, name) < 0]
        for name, base in (("private_ratio", model.hidden[-1]), ("discriminator_ratio", model.hidden[0])):
            value = getattr(self, name)
            if not 0 < value or round(value * base) > MAX_WIDTH:
                out.append(f"acl.{name}: must give 1 to {MAX_WIDTH} units ({name} x {base}), got {value!r}")
        out += [f"acl.{name}: must be from 1 to 100, got {getattr(self, name)!r}"
                for name in ("s_steps", "d_steps") if not 1 <= getattr(self, name) <= 100]
        if not out:
            d, p = self.width(self.discriminator_ratio, model.hidden[0]), self.width(self.private_ratio, model.hidden[-1])
            sizes = {"the discriminator": model.hidden[-1] * d + d * d + d * (MAX_TASKS + 2),
                     "a private module (for the largest input)": MAX_INPUT * p}
            out += [f"acl: {what} would hold {n:.2g} weights, over the {MAX_WEIGHTS:.0e} allowed; lower "
                    f"{'discriminator_ratio' if what.startswith('the') else 'private_ratio'}"
                    for what, n in sizes.items() if n > MAX_WEIGHTS]
        return out

    def width(self, ratio: float, base: int) -> int:
        return max(1, round(ratio * base))


class AdversarialPhase(OwnPhase):
    """One batch as the original trains it: ``s_steps`` SGD steps of the main network (S, the
    task's private module and head) on the task, adversarial and difference losses, with the
    trainer's learning rate and clipping; then ``d_steps`` steps of D alone on S's features of
    the batch (label task + 1) and as many Gaussian samples (label 0, "fake"), plain SGD with
    weight decay at ``d_lr_ratio`` times the trainer's rate. All randomness (dropout, the
    Gaussian samples) comes from the run's stream."""

    def step(self, request: Request) -> tuple[Tensor, Tensor]:
        settings, dis = self.cfg.acl, self.learner.discriminator
        dis.requires_grad_(False)  # the main steps need D's input gradient only, not its own
        loss, logits = super().step(request)  # the batch's loss and logits before it moved anything
        for _ in range(settings.s_steps - 1):
            super().step(request)
        dis.requires_grad_(True)
        for _ in range(settings.d_steps):
            self.discriminator_step(request, settings.d_lr_ratio * request.lr, settings.d_decay)
        return loss, logits

    def discriminator_step(self, request: Request, lr: float, decay: float) -> None:
        """One SGD step of D: S's features (dropout on, no gradient to S) should read as task
        + 1, Gaussian noise as class 0; the original's D has no momentum, only weight decay."""
        learner, task = self.learner, self.task
        x = request.x[: request.n]
        dis = learner.discriminator
        with self.rng():
            learner.train()
            with torch.no_grad():
                shared, _ = learner.encode(x, task)
            fake = torch.randn(shared.shape, device=shared.device)
            for p in dis.parameters():
                p.grad = None
            labels = torch.zeros(2, len(x), dtype=torch.long, device=x.device)
            labels[0] = task + 1
            # the original's two losses (real, fake), each a mean over the batch, in one pass
            losses = F.cross_entropy(dis(torch.cat([shared, fake])), labels.flatten(), reduction="none")
            losses.view(2, -1).mean(1).sum().backward()
        with torch.no_grad():
            for p in dis.parameters():
                p -= lr * (p.grad + decay * p)


class Adversarial(OwnNetwork):
    """ACL's hooks: the network built once (every task's private module and head included, as
    the original does), a fresh D before each task, and after each task the ``parts`` record."""

    def build(self) -> SharedPrivate:
        cfg, seq = self.ctx.cfg, self.seq
        return SharedPrivate(input_dim=seq.input_dim, hidden=cfg.model.hidden,
                             private=cfg.acl.width(cfg.acl.private_ratio, cfg.model.hidden[-1]),
                             head_sizes=[t.n_classes for t in seq.tasks], input_dropout=cfg.model.input_dropout,
                             hidden_dropout=cfg.model.hidden_dropout, adv_weight=cfg.acl.adv_weight,
                             diff_weight=cfg.acl.diff_weight)

    def phase(self, task: int) -> AdversarialPhase:
        cfg = self.ctx.cfg
        with T.run_rng(self.ctx):
            self.learner.fresh_discriminator(task, cfg.acl.width(cfg.acl.discriminator_ratio, cfg.model.hidden[0]))
        return AdversarialPhase(learner=self.learner, task=task, cfg=cfg, rng=lambda: T.run_rng(self.ctx))

    def after(self, task: int, model: MaskedMLP, plan: Plan, trajectory: list) -> dict[str, Any]:
        """``parts``: per task learnt so far, its test accuracy now with both modules, with S
        alone and with its private module alone."""
        parts = [self.learner.part_accuracies(d["x_test"], d["y_test"], i) for i, d in enumerate(self.data[:task + 1])]
        return {"parts": np.asarray(parts, dtype=np.float32)}


def _parts_shape(where: Shape) -> tuple[int, int]:
    return (where.task + 1, 3)


METHOD = Method(
    name="acl", label="ACL", colour="#F0027F", hooks=Adversarial, paper="ACL", sections=("acl",),
    settings=ACLConfig,
    ranges=(Range(name="adv_weight", section="acl", field="adv_weight", low=0.005, high=0.5, log=True),
            Range(name="diff_weight", section="acl", field="diff_weight", low=0.01, high=1.0, log=True)),
    arrays={"parts": ArrayRule(shape=_parts_shape, per_layer=False, low=0.0, high=1.0)},
    help="ACL (Ebrahimi et al. 2020): a shared module trained against a task discriminator (gradient reversal) "
         "and a private module per task, frozen after it; each head reads both, kept apart by a difference loss",
)
