"""SupSup's network (Wortsman et al., NeurIPS 2020): supermasks over fixed random weights.

The weights of every layer are drawn once and never trained. What each task learns is a
real-valued score per weight; its *supermask* keeps the weights whose scores are largest in
magnitude, a fixed fraction of each layer (edge-popup's top-k rule, Ramanujan et al. 2020),
and the task computes with ``weight * mask``. The top-k choice has no useful derivative, so
the scores learn through a straight-through estimate: the gradient the mask receives is
passed on as if the mask were the identity of the scores' magnitudes. With the task known
at test time every task reads its own mask, so nothing a later task learns can reach an
earlier one: forgetting is zero by construction (``SupermaskNet.freeze``).

The rule lives in ``supermask`` (and ``kept_count`` for its rounding); the initialisations
in ``fixed_weight`` and ``initial_scores``; the network in ``SupermaskNet``. The method's
hooks and settings are in ``prm.methods.supsup``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prm.learner import Learner

WEIGHT_INITS = ("signed_constant", "kaiming_normal", "default")
"""How the fixed weights are drawn: ``signed_constant`` (the paper's choice: every weight is
+-sqrt(2 / fan_in), its sign a fair coin), ``kaiming_normal`` (N(0, 2 / fan_in)), ``default``
(torch's default for a linear layer: U(-1/sqrt(fan_in), 1/sqrt(fan_in)))."""

SCORE_INITS = ("kaiming_uniform", "kaiming_normal")
"""How a task's scores start: ``kaiming_uniform`` (the authors' code: U(-1/sqrt(fan_in),
1/sqrt(fan_in)), torch's default for a linear layer) or ``kaiming_normal`` (N(0, 2 / fan_in),
an alternative their code also defines)."""


def kept_count(numel: int, density: float) -> int:
    """How many of ``numel`` weights a mask keeps: the authors' code drops the
    ``int((1 - density) * numel)`` weights with the smallest scores and keeps the rest, so the
    count is rounded up, never down (density 0.5 of 5 weights keeps 3), and never below one
    weight (a density of 1e-17 would otherwise keep none, and the task could learn nothing)."""
    return max(1, numel - int((1.0 - density) * numel))


class _TopK(torch.autograd.Function):
    """Forward: 1 where a value is among the ``kept`` largest of the tensor, else 0.
    Backward: the incoming gradient unchanged (straight-through), so every score learns,
    kept or not, and one that would help enough enters the mask at a later step."""

    @staticmethod
    def forward(ctx: object, values: Tensor, kept: int) -> Tensor:
        flat = torch.zeros(values.numel(), dtype=values.dtype, device=values.device)
        flat[values.flatten().topk(kept, sorted=False).indices] = 1.0
        return flat.view_as(values)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def supermask(scores: Tensor, density: float) -> Tensor:
    """The binary mask (as floats) keeping the ``density`` fraction of weights with the
    largest |score|. The magnitude is taken before the top-k, as in the authors' code, so the
    gradient that reaches a score is the straight-through one times sign(score)."""
    return _TopK.apply(scores.abs(), kept_count(scores.numel(), density))


def fixed_weight(rows: int, cols: int, how: str) -> Tensor:
    """A (rows x cols) weight matrix drawn from torch's global generator (the run's stream)."""
    if how == "signed_constant":
        signs = torch.empty(rows, cols).uniform_(-1.0, 1.0).sign()
        return signs * (math.sqrt(2.0) / math.sqrt(cols))
    weight = torch.empty(rows, cols)
    if how == "kaiming_normal":
        return nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
    if how == "default":
        return nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    raise ValueError(f"unknown weight init {how!r}; choose one of {', '.join(WEIGHT_INITS)}")


def initial_scores(rows: int, cols: int, how: str) -> Tensor:
    """One task's starting scores for a (rows x cols) layer, from the run's stream."""
    scores = torch.empty(rows, cols)
    if how == "kaiming_uniform":
        return nn.init.kaiming_uniform_(scores, a=math.sqrt(5))
    if how == "kaiming_normal":
        return nn.init.kaiming_normal_(scores, mode="fan_in", nonlinearity="relu")
    raise ValueError(f"unknown score init {how!r}; choose one of {', '.join(SCORE_INITS)}")


class SupermaskNet(Learner):
    """input -> dropout -> [fixed linear (x the task's mask) -> ReLU -> dropout] per hidden
    layer -> the task's head, itself a fixed random matrix under the task's mask.

    No biases (the authors build every layer without one). Each task has its own head of
    its own size (in their task-given set-up all tasks share one masked output layer of equal
    size; heads of different sizes cannot be shared, and a head used by one task alone is
    the same thing). ``scores[l][t]``: task t's scores of layer l, the head's last."""

    def __init__(self, *, input_dim: int, hidden: Sequence[int], head_sizes: Sequence[int], density: float,
                 weight_init: str, score_init: str, input_dropout: float, hidden_dropout: float) -> None:
        super().__init__()
        self.density = density
        sizes = [input_dim, *hidden]
        shapes = list(zip(hidden, sizes[:-1]))  # (out, in) of every hidden layer
        for l, (rows, cols) in enumerate(shapes):
            self.register_buffer(f"weight_{l}", fixed_weight(rows, cols, weight_init))
        for t, n in enumerate(head_sizes):
            self.register_buffer(f"head_{t}", fixed_weight(n, hidden[-1], weight_init))
        self.scores = nn.ModuleList(
            nn.ParameterList(nn.Parameter(initial_scores(rows, cols, score_init)) for _ in head_sizes)
            for rows, cols in shapes)
        self.scores.append(nn.ParameterList(nn.Parameter(initial_scores(n, hidden[-1], score_init))
                                            for n in head_sizes))
        self.input_dropout = nn.Dropout(input_dropout)
        self.hidden_dropout = nn.Dropout(hidden_dropout)
        self.frozen: dict[int, list[Tensor]] = {}

    def weights(self, task: int) -> list[Tensor]:
        """The fixed matrices ``task`` computes with: the hidden layers', then its head."""
        hidden = [getattr(self, f"weight_{l}") for l in range(len(self.scores) - 1)]
        return [*hidden, getattr(self, f"head_{task}")]

    def masks(self, task: int) -> list[Tensor]:
        """``task``'s supermask of every layer and of its head: the frozen ones once the task
        is learnt, else computed from its scores (with the straight-through gradient)."""
        if task in self.frozen:
            return self.frozen[task]
        return [supermask(layer[task], self.density) for layer in self.scores]

    def forward(self, x: Tensor, task: int, s: float) -> tuple[Tensor, None]:
        masks, weights = self.masks(task), self.weights(task)
        h = self.input_dropout(x)
        for weight, mask in zip(weights[:-1], masks[:-1]):
            h = self.hidden_dropout(torch.relu(F.linear(h, weight * mask)))
        return F.linear(h, weights[-1] * masks[-1]), None

    def trainable(self, task: int) -> list[nn.Parameter]:
        """Only ``task``'s own scores: the weights are buffers, the other tasks' scores untouched."""
        return [layer[task] for layer in self.scores]

    @torch.no_grad()
    def freeze(self, task: int) -> list[Tensor]:
        """Fix ``task``'s masks from its learnt scores (the authors' ``cache_masks``): from
        now on it is answered with exactly these, whatever else changes."""
        self.frozen[task] = [supermask(layer[task], self.density).detach().clone() for layer in self.scores]
        return self.frozen[task]
