"""PathNet (Fernando et al. 2017) in the task-incremental MLP set-up: a network of modules, the
paths through it that a genetic algorithm picks, and the tournament that picks them.

Every hidden layer holds M modules, each a small fully connected layer with ReLU and dropout.
A path names at most N modules per layer; the network a task sees is the sum of the outputs of
its path's modules, layer after layer, read by the task's own head. A genotype is an (L x N)
matrix of module indices; repeated indices name one module once (the paper's "N distinct
modules"). While a task learns, a population of genotypes competes in binary tournaments
(``evolve``); the winner's modules are frozen for every later task, and the modules no task
has kept go back to their initial weights before the next task (``ModularMLP.reset_free``).

Module width: ``int(expand * hidden[l])``, HAT's and CAT's rule (0.258 with M = 16, N = 3),
so the summed output of a layer is that wide, not ``hidden[l]``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prm import trainer as T
from prm.events import EpochEnd
from prm.learner import Learner, OwnPhase
from prm.stack import Request

if TYPE_CHECKING:
    from prm.model import MaskedMLP

SHIFT = 2
"""A mutated gene moves by an integer drawn uniformly from [-SHIFT, SHIFT] (the paper's and
HAT's port's rule; 0 is among the draws, so a "mutation" may leave the gene as it was)."""


def module_widths(hidden: tuple[int, ...], expand: float) -> tuple[int, ...]:
    """Units per module in each layer: HAT's port scales the layer's width by ``expand``."""
    return tuple(int(expand * h) for h in hidden)


class ModularMLP(Learner):
    """L layers of M modules (one weight bank per layer, ``(M, width, inputs)``) and one head
    per task. ``paths[t]``: per layer, the sorted distinct modules task t uses (set while it
    learns, kept after). ``frozen[l]``: modules on a kept path, which no later task updates."""

    def __init__(self, *, input_dim: int, hidden: tuple[int, ...], modules: int, expand: float,
                 head_sizes: list[int], input_dropout: float, hidden_dropout: float) -> None:
        super().__init__()
        widths = module_widths(hidden, expand)
        self.modules_per_layer, self.widths = modules, widths
        self.input_dropout, self.hidden_dropout = input_dropout, hidden_dropout
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for fan_in, width in zip((input_dim, *widths), widths):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation, one module at a time
            self.weights.append(nn.Parameter(torch.empty(modules, width, fan_in).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(modules, width).uniform_(-bound, bound)))
        self.heads = nn.ModuleList(nn.Linear(widths[-1], n) for n in head_sizes)
        self.register_buffer("frozen", torch.zeros(len(widths), modules, dtype=torch.bool))
        self.initial = [(w.detach().clone(), b.detach().clone()) for w, b in zip(self.weights, self.biases)]
        self.paths: dict[int, list[Tensor]] = {}
        self.keeps: list[Tensor] = []

    def route(self, genotype: np.ndarray) -> list[Tensor]:
        """A genotype as the forward pass reads it: per layer, its distinct modules, sorted."""
        device = self.frozen.device
        return [torch.as_tensor(np.unique(row), dtype=torch.long, device=device) for row in genotype]

    def forward(self, x: Tensor, task: int, s: float = 1.0) -> tuple[Tensor, None]:
        """Sum over the path's modules of dropout(relu(W_j h + b_j)), layer by layer, then the
        task's head (``s``, HAT's slope, is unused). Dropout draws apart for every module."""
        h = F.dropout(x, self.input_dropout, self.training)
        for weight, bias, chosen in zip(self.weights, self.biases, self.paths[task]):
            out = torch.relu(torch.matmul(h, weight[chosen].transpose(1, 2)) + bias[chosen].unsqueeze(1))
            h = F.dropout(out, self.hidden_dropout, self.training).sum(0)
        return self.heads[task](h), None

    def trainable(self, task: int) -> list[nn.Parameter]:
        return [*self.weights, *self.biases, *self.heads[task].parameters()]

    def adjust(self, task: int) -> None:
        """Frozen modules get no update: their rows of the gradient are zeroed (modules off the
        path have zero gradient already: the forward pass never read them)."""
        if not self.keeps:
            return
        for p, keep in zip((*self.weights, *self.biases), self.keeps):
            if p.grad is not None:
                p.grad.mul_(keep)

    def freeze(self, task: int) -> None:
        """Keep ``task``'s path: its modules are frozen for every later task. ``keeps``: per
        weight bank then per bias bank, 0 on frozen modules' rows and 1 elsewhere."""
        for layer, chosen in enumerate(self.paths[task]):
            self.frozen[layer, chosen] = True
        free = [(~f).to(w.dtype) for f, w in zip(self.frozen, self.weights)]
        self.keeps = [*(k.view(-1, 1, 1) for k in free), *(k.view(-1, 1) for k in free)]

    @torch.no_grad()
    def reset_free(self) -> None:
        """Every module no kept path uses goes back to its initial weights (HAT's port: the
        paper re-initialises them; the port restores the first draw)."""
        for (weight, bias), (w0, b0), frozen in zip(zip(self.weights, self.biases), self.initial, self.frozen):
            weight[~frozen] = w0.to(weight)[~frozen]
            bias[~frozen] = b0.to(bias)[~frozen]

    def path_matrix(self, task: int) -> np.ndarray:
        """Task's path as an (L x M) uint8 grid: 1 where the module is on it."""
        grid = np.zeros((len(self.widths), self.modules_per_layer), dtype=np.uint8)
        for layer, chosen in enumerate(self.paths[task]):
            grid[layer, chosen.cpu().numpy()] = 1
        return grid


# ----------------------------------------------------------------------------- genetic rules


def random_genotype(*, layers: int, modules: int, active: int, generator: torch.Generator) -> np.ndarray:
    """A first genotype: per layer, ``active`` distinct modules drawn without replacement."""
    return np.stack([torch.randperm(modules, generator=generator)[:active].numpy() for _ in range(layers)])


def mutation_draws(shape: tuple[int, ...], generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One uniform number and one shift in [-SHIFT, SHIFT] per gene, drawn whether used or not."""
    uniforms = torch.rand(shape, generator=generator, dtype=torch.float64).numpy()
    shifts = torch.randint(-SHIFT, SHIFT + 1, shape, generator=generator).numpy()
    return uniforms, shifts


def mutate(genotype: np.ndarray, *, modules: int, probability: float, uniforms: np.ndarray,
           shifts: np.ndarray) -> np.ndarray:
    """A mutated copy: each gene whose uniform draw is below ``probability`` moves by its shift,
    wrapping around the layer's M modules."""
    moved = np.mod(genotype + shifts, modules)
    return np.where(uniforms < probability, moved, genotype)


def pairs(population: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """The generation's binary tournaments: the population shuffled and paired off."""
    order = torch.randperm(population, generator=generator).tolist()
    return [(order[k], order[k + 1]) for k in range(0, population - 1, 2)]


def tournament(fitness: list[float], matches: list[tuple[int, int]], elite: int) -> list[tuple[int, int]]:
    """(winner, loser) of each match: the lower validation loss wins; on a tie the elite (the
    genotype behind the best state so far) wins, else the first named."""
    results = []
    for a, b in matches:
        if fitness[b] < fitness[a] or (fitness[b] == fitness[a] and b == elite):
            a, b = b, a
        results.append((a, b))
    return results


# ----------------------------------------------------------------------------- evolution


@dataclass(kw_only=True)
class PathPhase(OwnPhase):
    """Training of one genotype's path: the learner answers ``task`` through it while this phase
    steps or scores; remembers the last validation loss it scored (the tournament's fitness)."""

    genotype: np.ndarray
    last_loss: float = math.inf
    chosen: list[Tensor] = field(init=False)

    def __post_init__(self) -> None:
        self.chosen = self.learner.route(self.genotype)

    def step(self, request: Request) -> tuple[Tensor, Tensor]:
        self.learner.paths[self.task] = self.chosen
        return super().step(request)

    def score(self, x: Tensor, y: Tensor, chunk: int = 4096) -> tuple[float, float]:
        self.learner.paths[self.task] = self.chosen
        loss, acc = super().score(x, y, chunk)
        self.last_loss = loss
        return loss, acc


@dataclass(kw_only=True)
class Evolution:
    """What a task's evolution found: the winning genotype, the epochs it trained, its seconds,
    and after each generation the elite's fitness (the lowest validation loss so far)."""

    genotype: np.ndarray
    epochs: int
    seconds: float
    fitness: list[float]


@dataclass(kw_only=True)
class _Member:
    """One genotype of the population with its own learning-rate schedule (HAT's port keeps one
    per path: rate, patience left, its lowest validation loss since it was written)."""

    genotype: np.ndarray
    lr: float
    patience: int
    best: float = math.inf


def evolve(ctx: T.Context, model: MaskedMLP, learner: ModularMLP, task: int, data: dict[str, Tensor],
           settings: Any) -> T.Steps:
    """HAT's port of PathNet's tournament for one task. Each generation trains every member
    whose rate is still above ``lr_min`` for ``settings.epochs`` epochs on its own path (its
    own patience schedule), keeps the state of the lowest validation loss seen so far, returns
    to it after the generation, and in every match overwrites the loser with a mutated copy of
    the winner (the winner's rate, a fresh patience). Stops after ``settings.generations`` or
    when every rate has fallen below ``lr_min``."""
    started, optim, layers = time.perf_counter(), ctx.cfg.optim, len(learner.widths)
    probability = min(1.0, settings.mutation / (settings.active * layers))  # 1 / (N x L) in the paper
    population = [_Member(genotype=random_genotype(layers=layers, modules=settings.modules, active=settings.active,
                                                   generator=ctx.generator), lr=optim.lr, patience=optim.patience)
                  for _ in range(settings.population)]
    elite, elite_loss, elite_state, fitness, count, rates = 0, math.inf, _state(learner), [], [0], {}
    for _ in range(settings.generations):
        if max(m.lr for m in population) < optim.lr_min:
            break
        for index, member in enumerate(population):
            phase = PathPhase(learner=learner, task=task, cfg=ctx.cfg, rng=lambda: T.run_rng(ctx),
                              genotype=member.genotype)
            for _ in range(settings.epochs if member.lr >= optim.lr_min else 0):
                yield from T.fit(_at_rate(ctx, member.lr, count, rates), model, task, data, phase="evolve",
                                 max_epochs=1, custom=phase)
                count[0] += 1
                if phase.last_loss < elite_loss:
                    elite, elite_loss, elite_state = index, phase.last_loss, _state(learner)
                if not _patience(member, phase.last_loss, optim):
                    break
        learner.load_state_dict(elite_state)
        fitness.append(elite_loss)
        for winner, loser in tournament([m.best for m in population], pairs(len(population), ctx.generator), elite):
            uniforms, shifts = mutation_draws(population[winner].genotype.shape, ctx.generator)
            population[loser] = _Member(genotype=mutate(population[winner].genotype, modules=settings.modules,
                                                        probability=probability, uniforms=uniforms, shifts=shifts),
                                        lr=population[winner].lr, patience=optim.patience)
    return Evolution(genotype=population[elite].genotype.copy(), epochs=count[0],
                     seconds=time.perf_counter() - started, fitness=fitness)


def _patience(member: _Member, loss: float, optim: Any) -> bool:
    """HAT's schedule for one member after one epoch; False once its rate is below ``lr_min``."""
    if loss < member.best:
        member.best, member.patience = loss, optim.patience
        return True
    member.patience -= 1
    if member.patience <= 0:
        member.lr /= optim.lr_factor
        if member.lr < optim.lr_min:
            return False
        member.patience = optim.patience
    return True


def _state(learner: ModularMLP) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in learner.state_dict().items()}


def _at_rate(ctx: T.Context, lr: float, count: list[int], rates: dict[float, Any]) -> T.Context:
    """The run's context for one evolution epoch: the member's learning rate (each rate's
    config made once, in ``rates``: a config validates itself when made), and its epoch events
    numbered through the whole evolution of the task (each call of ``fit`` is one epoch)."""
    if lr not in rates:
        rates[lr] = ctx.cfg.replace(optim=dataclasses.replace(ctx.cfg.optim, lr=lr))
    emit: Callable = ctx.emit
    return dataclasses.replace(ctx, cfg=rates[lr], emit=lambda event: emit(
        dataclasses.replace(event, epoch=count[0]) if isinstance(event, EpochEnd) else event))
