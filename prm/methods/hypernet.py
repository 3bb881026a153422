"""HyperNet (von Oswald, Henning, Sacramento and Grewe, ICLR 2020) as a baseline: a chunked
hypernetwork generates all the weights of the task-incremental MLP from a learnt task
embedding, and an output regulariser keeps the weights it generates for earlier tasks where
they were (``prm.hypernet``). Each task keeps only its embedding; the task id picks it, and
the task's head among the generated output rows, at train and test time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from prm import hypernet as H
from prm import trainer as T
from prm.learner import Learner, OwnPhase
from prm.methods.own import OwnNetwork
from prm.limits import MAX_INPUT, MAX_LAYERS, MAX_WEIGHTS, MAX_WIDTH
from prm.methods.base import ArrayRule, Method, Plan, Range, Settings, Shape
from prm.model import MaskedMLP
from prm.stack import Request

SECTION = "hypernet"
TASK_EMBEDDING = "task_embedding"


@dataclass(frozen=True, kw_only=True)
class HyperNetConfig(Settings):
    """HyperNet's own settings, with the defaults of the authors' split-MNIST classifier
    (``mnist/train_args.py`` and ``train_args_default.py`` of chrhenning/hypercl):
    ``embedding_dim`` (task embedding, their ``class_temb_size`` 96), ``chunk_embedding_dim``
    (``class_emb_size`` 96), ``hidden`` (the hypernetwork's ReLU layers, ``class_hnet_arch``
    10,10), ``chunk_size`` (outputs per chunk, ``class_hyper_chunks`` 42000), ``beta`` (the
    output regulariser's weight, ``class_beta`` 0.01) and ``lookahead`` (evaluate the
    regulariser at Theta + dTheta, the step the task loss alone would take; their default)."""

    embedding_dim: int = 96
    chunk_embedding_dim: int = 96
    hidden: tuple[int, ...] = (10, 10)
    chunk_size: int = 42000
    beta: float = 0.01
    lookahead: bool = True

    def problems(self, model: Any) -> list[str]:
        found = [f"{SECTION}.{name}: must be from 1 to {MAX_WIDTH}, got {getattr(self, name)!r}"
                 for name in ("embedding_dim", "chunk_embedding_dim") if not 1 <= getattr(self, name) <= MAX_WIDTH]
        hidden = self.hidden
        if not (isinstance(hidden, tuple) and len(hidden) <= MAX_LAYERS
                and all(isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= MAX_WIDTH for h in hidden)):
            found.append(f"{SECTION}.hidden: at most {MAX_LAYERS} layer widths from 1 to {MAX_WIDTH}, got {hidden!r}")
        elif not 1 <= self.chunk_size or (hidden[-1] if hidden else 1) * self.chunk_size > MAX_WEIGHTS:
            found.append(f"{SECTION}.chunk_size: must be >= 1 with at most {MAX_WEIGHTS:.0e} weights in the "
                         f"hypernetwork's output layer, got {self.chunk_size!r}")
        elif self.chunk_size >= 1 and (size := self.size_problem(model)):
            found.append(size)
        if not self.beta >= 0:
            found.append(f"{SECTION}.beta: must be >= 0, got {self.beta!r}")
        return found

    def size_problem(self, model: Any) -> str | None:
        """Too large a hypernetwork: its weights (its layers, and a chunk embedding per chunk of
        the main network's weights, counted for the largest input, ``MAX_INPUT``) over
        ``MAX_WEIGHTS``, or one pass's activations (chunks x its widest layer) over a tenth of it:
        every step makes one pass per earlier task (the regulariser's targets)."""
        sizes = [self.embedding_dim + self.chunk_embedding_dim, *self.hidden, self.chunk_size]
        main = sum(a * b for a, b in zip((MAX_INPUT, *model.hidden), model.hidden))
        chunks = -(-main // self.chunk_size)
        weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) + chunks * self.chunk_embedding_dim
        activations = chunks * max(sizes)
        if weights <= MAX_WEIGHTS and activations <= MAX_WEIGHTS // 10:
            return None
        return (f"{SECTION}: a hypernetwork of {weights:.2g} weights ({chunks} chunks of {self.chunk_size}, layers "
                f"{self.hidden}) with {activations:.2g} activations a pass is too large ({MAX_WEIGHTS:.0e} weights, "
                f"{MAX_WEIGHTS // 10:.0e} activations allowed); "
                "use larger chunks or narrower layers")


class HyperNetLearner(Learner):
    """The main network of generated weights, answering for every task with its own embedding.

    ``prepare(t)`` fixes the targets h(e_j, Theta*) of the earlier tasks when t starts; a step
    of t then minimises cross-entropy + beta * R_t, R_t evaluated at Theta + dTheta when
    ``lookahead`` (dTheta = -lr * the task loss's gradient: the step plain SGD would take,
    held constant, as the original detaches it). Only Theta and e_t learn."""

    def __init__(self, *, input_dim: int, hidden: tuple[int, ...], head_sizes: list[int], settings: HyperNetConfig,
                 input_dropout: float, hidden_dropout: float) -> None:
        super().__init__()
        self.shapes = H.target_shapes(input_dim=input_dim, hidden=hidden, outputs=sum(head_sizes))
        starts = [sum(head_sizes[:t]) for t in range(len(head_sizes))]
        self.heads = [slice(a, a + n) for a, n in zip(starts, head_sizes)]
        self.hnet = H.ChunkedHypernet(n_weights=sum(math.prod(s) for s in self.shapes), n_tasks=len(head_sizes),
                                      embedding_dim=settings.embedding_dim,
                                      chunk_embedding_dim=settings.chunk_embedding_dim, hidden=settings.hidden,
                                      chunk_size=settings.chunk_size)
        self.beta, self.lookahead = settings.beta, settings.lookahead
        self.input_dropout, self.hidden_dropout = input_dropout, hidden_dropout
        self.lr = 0.0  # the step's learning rate, set by HyperPhase before each step (the look-ahead needs it)
        self.targets: Tensor | None = None  # (t, n_weights): h(e_j, Theta*) of the earlier tasks j < t

    def weights(self, task: int) -> list[Tensor]:
        return H.unflatten(self.hnet.generate(self.hnet.task_embeddings[task].unsqueeze(0))[0], self.shapes)

    def forward(self, x: Tensor, task: int, s: float) -> tuple[Tensor, None]:
        return H.main_forward(x, self.weights(task), self.heads[task], input_dropout=self.input_dropout,
                              hidden_dropout=self.hidden_dropout, training=self.training), None

    def earlier(self, task: int) -> Tensor:
        """The embeddings of the tasks before ``task``, (task, embedding_dim)."""
        embs = self.hnet.task_embeddings
        return torch.stack([embs[j] for j in range(task)]) if task else embs[0].new_zeros((0, len(embs[0])))

    @torch.no_grad()
    def prepare(self, task: int) -> None:
        """Fix the regulariser's targets for ``task``: the weights h now gives every earlier task."""
        self.targets = self.hnet.generate(self.earlier(task))

    def regulariser(self, task: int, theta: list[Tensor] | None = None) -> Tensor:
        return H.output_regulariser(self.hnet, self.earlier(task), self.targets, theta)

    def objective(self, x: Tensor, y: Tensor, task: int) -> tuple[Tensor, Tensor, Tensor]:
        logits, _ = self(x, task, 1.0)
        loss = F.cross_entropy(logits, y)
        if task == 0 or self.beta == 0:
            return loss, loss, logits
        if not self.lookahead:
            return loss + self.beta * self.regulariser(task), loss, logits
        params = self.trainable(task)
        grads = torch.autograd.grad(loss, params)
        theta = params[:-1]
        shifted = [p - self.lr * g for p, g in zip(theta, grads)]
        # The task loss's gradient is already known (the look-ahead needed it): a term linear in
        # the parameters with that gradient stands in for the loss, so that backward does not run
        # through the main network and the hypernetwork a second time; its value is the loss's.
        linear = sum((p * g).sum() for p, g in zip(params, grads))
        stand_in = loss.detach() + linear - linear.detach()
        return stand_in + self.beta * self.regulariser(task, shifted), loss, logits

    def trainable(self, task: int) -> list[torch.nn.Parameter]:
        return [*self.hnet.theta(), self.hnet.task_embeddings[task]]

    def validation_loss(self, x: Tensor, y: Tensor, task: int) -> float:
        """Cross-entropy plus beta * R_t at Theta, so early stopping judges the objective that
        trains, as the trainer does for HAT's regulariser."""
        logits, _ = self(x, task, 1.0)
        return float(F.cross_entropy(logits, y) + self.beta * self.regulariser(task))

    @torch.no_grad()
    def drift(self, task: int) -> Tensor:
        """Per earlier task j < ``task``, || h(e_j, Theta) - target_j || / || target_j ||: how far
        its generated weights have moved since ``task`` started."""
        moved = self.hnet.generate(self.earlier(task)) - self.targets
        return moved.norm(dim=1) / self.targets.norm(dim=1)


@dataclass(kw_only=True)
class HyperPhase(OwnPhase):
    """``OwnPhase`` that tells the learner each step's learning rate first: the look-ahead
    dTheta is the step SGD is about to take."""

    def step(self, request: Request) -> tuple[Tensor, Tensor]:
        self.learner.lr = request.lr
        return super().step(request)


class Generated(OwnNetwork):
    """Every task trains the hypernetwork and its own embedding, with the targets of the
    earlier tasks fixed when it starts; records the task's embedding after it."""

    def build(self) -> HyperNetLearner:
        cfg = self.ctx.cfg
        return HyperNetLearner(input_dim=self.seq.input_dim, hidden=cfg.model.hidden,
                               head_sizes=[t.n_classes for t in self.seq.tasks], settings=getattr(cfg, SECTION),
                               input_dropout=cfg.model.input_dropout, hidden_dropout=cfg.model.hidden_dropout)

    def phase(self, task: int) -> HyperPhase:
        return HyperPhase(learner=self.learner, task=task, cfg=self.ctx.cfg, rng=lambda: T.run_rng(self.ctx))

    def before(self, task: int, model: MaskedMLP, forced: Sequence[Sequence[int]] | None) -> T.Steps:
        self.learner.prepare(task)
        return (yield from super().before(task, model, forced))

    def after(self, task: int, model: MaskedMLP, plan: Plan, trajectory: list) -> dict[str, Any]:
        emb = self.learner.hnet.task_embeddings[task]
        return {TASK_EMBEDDING: emb.detach().cpu().numpy().astype("float32")}


def _embedding_shape(where: Shape) -> tuple[int | None]:
    """(embedding_dim,) from the run's config; any length if the config does not say."""
    dim = where.config.get(SECTION, {}).get("embedding_dim") if isinstance(where.config, dict) else None
    return (dim if isinstance(dim, int) and not isinstance(dim, bool) else None,)


METHOD = Method(
    name="hypernet", label="HyperNet", colour="#D7191C", hooks=Generated, paper="HYP", sections=(SECTION,),
    settings=HyperNetConfig,
    ranges=(Range(name="beta", section=SECTION, field="beta", low=1e-4, high=1.0, log=True),),
    arrays={TASK_EMBEDDING: ArrayRule(shape=_embedding_shape, per_layer=False)},
    help="HyperNet (von Oswald et al. 2020): a chunked hypernetwork generates all the network's weights from a "
         "learnt task embedding; an output regulariser keeps the weights it generates for earlier tasks in place",
)
