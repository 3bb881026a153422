"""PathNet (Fernando et al. 2017) as a baseline, as HAT's package runs it (``prm.pathnet``): per
task, binary tournaments among paths through a network of modules; the winner's modules are
frozen for later tasks, each task has its own head, and the modules no task kept are reset."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from prm import pathnet as P
from prm import trainer as T
from prm.methods.own import OwnNetwork
from prm.limits import MAX_EPOCHS, MAX_INPUT, MAX_WEIGHTS
from prm.methods.base import ArrayRule, Method, Plan, Range, Settings, Shape
from prm.model import MaskedMLP

SECTION = "pathnet"
MAX_MODULES = 1024
"""Modules per layer, and genotypes in the population: far beyond the paper's 20 and 64."""


@dataclass(frozen=True, kw_only=True)
class PathNetConfig(Settings):
    """PathNet's own settings; defaults from HAT's port (the one the PRM paper ran).

    ``modules`` (M) per layer and ``active`` (N) at most per layer on a path: 16 and 3, the port's
    "better config" (the paper's were 10/3 and 20/5). ``population`` (P): 2, the port's binary
    tournament. ``generations``: 20, the best of the port's grid (5 to 200). ``epochs``: per
    member and generation, 10 = the port's 200 epochs / 20 generations. ``mutation``: genes a
    child is expected to have moved, so each gene moves with probability mutation / (N x layers),
    at most 1 (every gene); 1, the paper's 1/(N x layers), whatever N and the depth. ``expand``: module width as a
    fraction of the layer's ``model.hidden`` width, 0.258 as in the port (there chosen to match
    the parameter count of the conv network with M = 16)."""

    modules: int = 16
    active: int = 3
    population: int = 2
    generations: int = 20
    epochs: int = 10
    mutation: float = 1.0
    expand: float = 0.258

    def problems(self, model: Any) -> list[str]:
        found = [f"{SECTION}.{name}: must be an integer from {low} to {high}, got {getattr(self, name)!r}"
                 for name, low, high in (("modules", 1, MAX_MODULES), ("population", 2, MAX_MODULES),
                                         ("generations", 1, MAX_EPOCHS), ("epochs", 1, MAX_EPOCHS))
                 if not low <= getattr(self, name) <= high]
        if not 1 <= self.active <= self.modules:
            found.append(f"{SECTION}.active: must be from 1 to modules ({self.modules}), got {self.active!r}")
        if self.population % 2:
            found.append(f"{SECTION}.population: must be even (genotypes meet in pairs), got {self.population!r}")
        if not 0 <= self.mutation:
            found.append(f"{SECTION}.mutation: expected moved genes, >= 0 (from N x layers up, every gene moves), "
                         f"got {self.mutation!r}")
        found += self._width_problems(model)
        return found

    def _width_problems(self, model: Any) -> list[str]:
        if not 0 < self.expand <= 4:
            return [f"{SECTION}.expand: must be in (0, 4], got {self.expand!r}"]
        widths = P.module_widths(tuple(model.hidden), self.expand)
        if min(widths) < 1:
            return [f"{SECTION}.expand: {self.expand!r} x model.hidden {tuple(model.hidden)!r} leaves a module "
                    "without units; raise expand or widen the layers"]
        weights = self.modules * sum(a * b for a, b in zip((MAX_INPUT, *widths), widths))
        if weights > MAX_WEIGHTS:
            return [f"{SECTION}: {self.modules} modules of widths {widths} hold about {weights:.2g} weights for a "
                    f"{MAX_INPUT}-pixel input, more than the {MAX_WEIGHTS:.0e} allowed (MAX_WEIGHTS)"]
        return []


class Paths(OwnNetwork):
    """Hooks of PathNet: before each task the free modules are reset and the evolution picks a
    path (phase ``evolve``); the engine's training phase then trains that path to early stopping;
    after it, the path's modules are frozen."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fitness: dict[int, list[float]] = {}

    def build(self) -> P.ModularMLP:
        cfg = self.ctx.cfg
        return P.ModularMLP(input_dim=self.seq.input_dim, hidden=cfg.model.hidden, modules=cfg.pathnet.modules,
                            expand=cfg.pathnet.expand, head_sizes=[t.n_classes for t in self.seq.tasks],
                            input_dropout=cfg.model.input_dropout, hidden_dropout=cfg.model.hidden_dropout)

    def before(self, task: int, model: MaskedMLP, forced: Sequence[Sequence[int]] | None) -> T.Steps:
        self.learner.reset_free()
        found = yield from P.evolve(self.ctx, model, self.learner, task, self.data[task], self.ctx.cfg.pathnet)
        self.fitness[task] = found.fitness
        phase = P.PathPhase(learner=self.learner, task=task, cfg=self.ctx.cfg, rng=lambda: T.run_rng(self.ctx),
                            genotype=found.genotype)
        return Plan(custom=phase, epochs={"evolve": found.epochs}, seconds={"evolve": found.seconds})

    def after(self, task: int, model: MaskedMLP, plan: Plan, trajectory: list) -> dict[str, Any]:
        """Freeze the task's path; record it, and the elite's fitness per generation when every
        value is finite (a diverged evolution records no curve)."""
        self.learner.paths[task] = plan.custom.chosen
        self.learner.freeze(task)
        arrays = {"path": self.learner.path_matrix(task)}
        if all(math.isfinite(f) for f in self.fitness[task]):
            arrays["fitness"] = np.asarray(self.fitness[task], dtype=np.float32)
        return arrays

    def capacity(self) -> list[float]:
        """Per layer, the fraction of modules frozen by the tasks learnt so far."""
        return [float(f.float().mean()) for f in self.learner.frozen.cpu()]


def _modules(where: Shape) -> int | None:
    """M as the run's config says (None, any count, when the config does not say it plainly)."""
    section = where.config.get(SECTION)
    m = section.get("modules") if isinstance(section, dict) else None
    return m if isinstance(m, int) and not isinstance(m, bool) and m >= 1 else None


METHOD = Method(
    name="pathnet", label="PathNet", colour="#E6AB02", hooks=Paths, paper="PNT", sections=(SECTION,),
    settings=PathNetConfig,
    ranges=(Range(name="mutation", section=SECTION, field="mutation", low=0.25, high=3.0, log=True),),
    arrays={
        "path": ArrayRule(shape=lambda w: (len(w.widths), _modules(w)), per_layer=False, kinds="u", low=0, high=1),
        "fitness": ArrayRule(shape=lambda w: (None,), per_layer=False, kinds="f", low=0.0),
    },
    help="PathNet (Fernando et al. 2017): per task, binary tournaments among paths of at most N of M modules "
         "per layer; the winner's modules are frozen for later tasks, each task has its own head",
)
