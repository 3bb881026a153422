"""Runs of one shape trained together: their parameters in stacked tensors, one step for all.

Several seeds of a method, or configurations that differ only in numbers (learning rate,
lambda, smax, dropout), have networks of the same shape. ``Stack`` keeps each parameter of R
such networks in one tensor with a leading run dimension, and rebinds every network's own
parameters to its slice, so that everything else (evaluation, early stopping's snapshots,
checkpoints, DTD's copies) keeps working on an ordinary ``MaskedMLP`` while a single call of
``prm.step.sgd_step`` trains all of them: the matrix products of R runs become batched ones.

A run in a stack draws the same random numbers in the same order as it would alone, and the
step treats its slice exactly as alone, so its recorded folder equals a solo run's to float
rounding (tests/test_stack.py). Runs without a batch in a step get a zero learning rate and
stay bit for bit as they were. Heads differ in size between tasks, and at one task position
between runs (seeds order a sequence's tasks differently): every head is stored as large as
the largest, and the rows a head lacks are cut out of its softmax (``class_bias``), so that
runs at different tasks share a step: each step gathers every run's head and embedding row
of its own task, trains them, and puts them back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from prm import masks as M
from prm import step as S
from prm.model import MaskedMLP

if TYPE_CHECKING:  # types only: the config module imports the method registry, which imports this one
    from prm.config import RunConfig


@dataclass(frozen=True, kw_only=True)
class Phase:
    """What one run's steps in one training phase need beyond the batch, prepared once: the
    task whose head (and embedding) trains, the gradient multipliers of the earlier tasks'
    masks, the regulariser's weights, EWC's terms."""

    task: int
    head_only: bool
    keeps: tuple[tuple[Tensor, Tensor], ...] | None
    reg: tuple[Tensor, Tensor] | None
    ewc: tuple[tuple[tuple[Tensor, Tensor], ...], tuple[tuple[Tensor, Tensor], ...], float] | None

    @property
    def signature(self) -> tuple:
        """Phases of different runs with one signature train in one call, whatever their task."""
        return self.head_only, self.ewc is not None


def make_phase(*, model: MaskedMLP, task: int, head_only: bool, protect: Sequence[Tensor] | None,
          reg_used: Sequence[Tensor] | None, ewc=None, keeps: Sequence[tuple[Tensor, Tensor]] | None = None) -> Phase:
    """A run's ``Phase``: HAT's multipliers 1 - min(a_out, a_in) of ``protect`` (none for the
    first task: multipliers of one, so that it runs the same graph), or ``keeps`` as given
    (CAT's, ``masks.cat_keeps``), and the regulariser's weights of ``reg_used``
    (``prm.masks``); ``ewc``: (fisher, anchor, lambda) or None."""
    train_embeddings = model.masked and not head_only
    reg = None
    if train_embeddings:
        protect = protect or [torch.zeros(w) for w in model.widths]
        keeps = tuple(keeps) if keeps is not None else tuple(M.layer_keeps(protect))
        reg = M.regulariser_weights(reg_used, model.widths)
    return Phase(task=task, head_only=head_only, keeps=keeps if train_embeddings else None, reg=reg, ewc=ewc)


@dataclass(frozen=True, kw_only=True)
class Request:
    """One run's batch for the next step: ``x``/``y`` padded to the phase's batch size, of
    which the first ``n`` rows are real; ``noise``: its dropout draws."""

    phase: Phase
    x: Tensor
    y: Tensor
    n: int
    noise: Tensor
    s: float
    lr: float


class Stack:
    """R networks of one shape, trained by one step per call of :meth:`step`."""

    def __init__(self, *, models: Sequence[MaskedMLP], configs: Sequence[RunConfig],
                 stepper: Callable[..., tuple[Tensor, Tensor]]) -> None:
        first = models[0]
        shapes = {(m.masked, m.widths, m.layers[0].in_features, len(m.heads)) for m in models}
        if len(shapes) != 1:
            raise ValueError(f"runs of different shapes cannot share a stack: {sorted(shapes)}")
        self.runs, self.stepper, self.models = len(models), stepper, list(models)
        device = first.layers[0].weight.device

        def stacked(get) -> Tensor:
            return torch.stack([get(m).detach() for m in models]).clone()

        self.layers = [(stacked(lambda m, l=l: m.layers[l].weight), stacked(lambda m, l=l: m.layers[l].bias))
                       for l in range(len(first.layers))]
        # every head as large as the sequence's largest, the rows a head lacks cut from its
        # softmax: one tensor for all tasks' heads, so that runs at different tasks share a step
        tasks, classes = len(first.heads), max(h.out_features for m in models for h in m.heads)
        self.head_weight = torch.zeros(self.runs, tasks, classes, first.widths[-1], device=device)
        self.head_bias = torch.zeros(self.runs, tasks, classes, device=device)
        self.class_bias = torch.full((self.runs, tasks, classes), float("-inf"), device=device)
        for r, m in enumerate(models):
            for p, head in enumerate(m.heads):
                size = head.out_features
                self.head_weight[r, p, :size], self.head_bias[r, p, :size] = head.weight.detach(), head.bias.detach()
                self.class_bias[r, p, :size] = 0.0
        self.slots = torch.arange(self.runs, device=device)
        self.embedding = stacked(lambda m: m.embedding.weight) if first.masked else None
        for r, model in enumerate(models):
            self._bind(r, model)
        units = [first.layers[0].in_features, *first.widths]
        self.units = sum(units)
        self.rates = torch.stack([torch.cat([torch.full((n,), p) for n, p in zip(
            units, [c.model.input_dropout] + [c.model.hidden_dropout] * len(first.widths))]) for c in configs]).to(device)

        def per_run(get) -> Tensor:
            return torch.tensor([float(get(c)) for c in configs], device=device)

        self.hyper = S.Hyper(smax=per_run(lambda c: c.hat.smax), lamb=per_run(lambda c: c.hat.lamb),
                             thres_cosh=per_run(lambda c: c.hat.thres_cosh), thres_emb=per_run(lambda c: c.hat.thres_emb),
                             clip=per_run(lambda c: c.optim.clip))
        # each slot's current phase: gradient multipliers, regulariser weights, EWC's terms
        self.keeps = [(torch.ones_like(w), torch.ones_like(b)) for w, b in self.layers]
        self.reg = (torch.ones(self.runs, sum(first.widths), device=device), torch.ones(self.runs, device=device))
        self.penalty = ([(torch.zeros_like(w), torch.zeros_like(b)) for w, b in self.layers],
                        [(torch.zeros_like(w), torch.zeros_like(b)) for w, b in self.layers],
                        torch.zeros(self.runs, device=device))
        self.loaded: list[Phase | None] = [None] * self.runs
        self.buffers: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = {}  # a step's inputs, per batch size
        self.device = device

    def _bind(self, r: int, model: MaskedMLP) -> None:
        """Make ``model``'s parameters views of slot ``r``."""
        for (weight, bias), layer in zip(self.layers, model.layers):
            layer.weight.data, layer.bias.data = weight[r], bias[r]
        for p, head in enumerate(model.heads):
            size = head.out_features
            head.weight.data, head.bias.data = self.head_weight[r, p, :size], self.head_bias[r, p, :size]
        if self.embedding is not None:
            model.embedding.weight.data = self.embedding[r]

    @torch.no_grad()
    def adopt(self, r: int, model: MaskedMLP) -> None:
        """Slot ``r`` trains ``model`` from now on (STL's fresh network per task); the network
        that was there keeps a copy of its parameters, for evaluating its task later."""
        old = self.models[r]
        for p in old.parameters():
            p.data = p.data.clone()
        values = [p.detach().clone() for p in model.parameters()]
        self._bind(r, model)
        for p, v in zip(model.parameters(), values):
            p.copy_(v)
        self.models[r] = model
        self.loaded[r] = None

    def _load(self, r: int, phase: Phase) -> None:
        """Copy a run's phase into its slot of the per-slot buffers, once per phase."""
        if self.loaded[r] is phase:
            return
        if phase.keeps is not None:
            for (kw, kb), (w, b) in zip(self.keeps, phase.keeps):
                kw[r], kb[r] = w, b
        if phase.reg is not None:
            self.reg[0][r], self.reg[1][r] = phase.reg
        if phase.ewc is not None:
            fisher, anchor, lam = phase.ewc
            for (fw, fb), (w, b) in zip(self.penalty[0], fisher):
                fw[r], fb[r] = w, b
            for (aw, ab), (w, b) in zip(self.penalty[1], anchor):
                aw[r], ab[r] = w, b
            self.penalty[2][r] = lam
        self.loaded[r] = phase

    @torch.no_grad()
    def step(self, requests: dict[int, Request]) -> dict[int, tuple[Tensor, Tensor]]:
        """One SGD step for every run in ``requests`` (one signature; each at its own task);
        the others stand still. Returns each run's (data loss, logits of its real rows and its
        head's classes)."""
        first = next(iter(requests.values())).phase
        runs, device = self.runs, self.device
        batch = max(len(q.x) for q in requests.values())
        if batch not in self.buffers:
            self.buffers[batch] = (torch.zeros(runs, batch, self.layers[0][0].shape[2], device=device),
                                   torch.zeros(runs, batch, dtype=torch.long, device=device),
                                   torch.zeros(runs, batch, device=device),
                                   torch.zeros(runs, batch, self.units, device=device))
        # Rows of runs without a batch keep what an earlier step left there: finite numbers
        # that a zero weight and a zero learning rate keep from changing anything.
        x, y, weight, noise = self.buffers[batch]
        weight.zero_()
        for r, q in requests.items():
            b = len(q.x)
            x[r, :b], y[r, :b], noise[r, :b] = q.x, q.y, q.noise
            weight[r, :q.n] = 1.0 / q.n
        active = torch.tensor(list(requests), device=device)
        s, lr = torch.ones(runs, device=device), torch.zeros(runs, device=device)
        task = torch.zeros(runs, dtype=torch.long, device=device)
        s[active] = torch.tensor([q.s for q in requests.values()], device=device)
        lr[active] = torch.tensor([q.lr for q in requests.values()], device=device)
        task[active] = torch.tensor([q.phase.task for q in requests.values()], device=device)
        for r, q in requests.items():
            self._load(r, q.phase)
        # each run's head and embedding row of its task, gathered, trained, put back; a head-only
        # step (DTD's first stage) still gates the units by the masks, but trains no embedding
        head = (self.head_weight[self.slots, task], self.head_bias[self.slots, task])
        train_embeddings = self.embedding is not None and not first.head_only
        embedding = self.embedding[self.slots, task] if self.embedding is not None else None
        loss, logits = self.stepper(
            layers=self.layers, head=head, embedding=embedding, x=x, y=y, weight=weight, noise=noise,
            rates=self.rates, s=s, lr=lr, keeps=self.keeps if train_embeddings else None,
            reg_weights=self.reg[0] if train_embeddings else None, reg_norm=self.reg[1] if train_embeddings else None,
            hyper=self.hyper, train_features=not first.head_only,
            penalty=self.penalty if first.ewc is not None else None, class_bias=self.class_bias[self.slots, task])
        # only the runs with a batch trained: put back theirs alone
        self.head_weight[active, task[active]], self.head_bias[active, task[active]] = head[0][active], head[1][active]
        if train_embeddings:
            self.embedding[active, task[active]] = embedding[active]
        return {r: (loss[r], logits[r, :q.n, :self.models[r].heads[q.phase.task].out_features])
                for r, q in requests.items()}
