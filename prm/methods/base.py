"""What a method is to the rest of the project: one ``Method`` record and its ``Hooks``.

The engine (``prm.engine``) has one loop for every method. A method differs from plain
fine-tuning of one unmasked network only through its hooks: what it prepares before a task
(DTD, CAT's transfer tests), what training protects and adds (a mask, EWC's penalty, earlier
tasks' data), what it keeps after a task (masks, a Fisher diagonal, a network per task) and how
it scores a task. Everything else the project says about a method (its label, help, colour,
the config it starts from, what is tuned, its part in the Story) is a field of its record, so
adding a method is one module in this package and one entry in ``prm.methods.REGISTRY``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from prm import trainer as T

if TYPE_CHECKING:
    from prm.data import TaskSequence
    from prm.model import MaskedMLP


@dataclass(kw_only=True)
class Plan:
    """How the next task trains, as a method prepared it: ``protect`` (per layer, the units
    whose incoming and outgoing weights are held: HAT's a_<=t-1, PRM's relaxed mask),
    ``reg_used`` (the mask the sparsity regulariser treats as already used), ``keeps`` (gradient
    multipliers that replace HAT's, CAT's), ``custom`` (a phase with its own step, CAT's
    attention), and the epochs and seconds the preparation took."""

    protect: list[Tensor] | None = None
    reg_used: list[Tensor] | None = None
    keeps: list[tuple[Tensor, Tensor]] | None = None
    custom: Any = None
    epochs: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


class Hooks:
    """Plain fine-tuning of one unmasked network: the behaviour every method starts from.

    One instance per run, so a method keeps its own state between tasks (masks, EWC's Fisher
    diagonal, the networks of STL). ``masked``: the network has HAT's task embeddings and masks.
    ``resumable``: a task's start can be checkpointed and resumed (what-if). ``detects``: how
    the method decides which earlier tasks are similar (``dtd``, ``transfer``), None when it
    does not. ``source``: the fixed dissimilar set an ablation uses instead of DTD's call.
    ``shared_step``: its training runs through the stacked step (``prm.step``), so seeds
    trained together share each matrix product; False for networks of their own (``prm.learner``)."""

    masked = False
    resumable = False
    shared_step = True
    detects: str | None = None
    source: str | None = None

    def __init__(self, *, ctx: T.Context, seq: TaskSequence, data: list[dict[str, Tensor]], groups: list[int]) -> None:
        self.ctx, self.seq, self.data, self.groups = ctx, seq, data, groups
        self.task_masks: list[list[Tensor]] = []

    def start(self, resume: Any) -> None:
        """Before the first task (``resume``: the what-if checkpoint the run starts from, or None)."""

    def network(self, task: int, model: MaskedMLP) -> MaskedMLP:
        """The network that learns ``task``."""
        return model

    def before(self, task: int, model: MaskedMLP, forced: Sequence[Sequence[int]] | None) -> T.Steps:
        """Prepare ``task``; returns its ``Plan``. ``forced``: a what-if's dissimilar sets."""
        return Plan()
        yield  # a generator like every method's preparation: the engine drives them alike

    def penalty(self) -> Any:
        """A penalty added to the training objective (EWC's), or None."""
        return None

    def also(self, task: int) -> list[tuple[int, dict[str, Tensor]]]:
        """Earlier (task, data) pairs trained together with ``task`` (joint training)."""
        return []

    def after(self, task: int, model: MaskedMLP, plan: Plan, trajectory: list) -> dict[str, Any]:
        """After ``task`` is learnt; returns the arrays to record for it."""
        return {}

    def capacity(self) -> list[float]:
        """Per masked layer, the fraction of units the earlier tasks hold (empty if unmasked)."""
        return []

    def evaluated(self, task: int, model: MaskedMLP) -> MaskedMLP:
        """The network that answers for ``task`` now."""
        return model

    def score_row(self, task: int, model: MaskedMLP, test_acc: Any, val_acc: Any) -> list[bool] | None:
        """Fill row ``task`` of the accuracy matrices (every task learnt so far); returns which
        tasks answered with a second head (CAT's), None for methods that have none."""
        for i in range(task + 1):
            self.score(task, i, self.evaluated(i, model), test_acc, val_acc)
        return None

    def score(self, task: int, i: int, net: MaskedMLP, test_acc: Any, val_acc: Any) -> None:
        """Task ``i``'s test and validation accuracy with ``net``, into row ``task``."""
        d, smax = self.data[i], self.ctx.cfg.hat.smax
        _, test_acc[task, i] = T.evaluate(net, i, d["x_test"], d["y_test"], smax)
        _, val_acc[task, i] = T.evaluate(net, i, d["x_val"], d["y_val"], smax)


@dataclass(frozen=True, kw_only=True)
class Range:
    """One tuned hyper-parameter: where it lives in ``RunConfig`` and its range (``prm.tune``)."""

    name: str
    section: str | None  # RunConfig section ("model", "optim", "hat", a method's own), None for a top-level field
    field: str
    low: float
    high: float
    log: bool = False

    def describe(self) -> str:
        return f"{self.name} in [{self.low:g}, {self.high:g}]" + (" (log scale)" if self.log else "")


@dataclass(frozen=True, kw_only=True)
class Shape:
    """What a recorded array's expected shape depends on: the run's sequence and network."""

    task: int
    layer: int | None
    widths: tuple[int, ...]
    input_dim: int | None  # None: the run's log lacks its start record
    n_tasks: int
    config: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ArrayRule:
    """One per-task array a method records beyond HAT's, as a run reader checks it: stored as
    ``<name>_l<layer>`` when ``per_layer`` else ``<name>``; ``shape(Shape)`` gives the expected
    shape (None: any length in that dimension); ``kinds``: the numpy dtype kinds accepted; values
    must be finite and within [``low``, ``high``] where those are given."""

    shape: Callable[[Shape], tuple[int | None, ...]]
    per_layer: bool = True
    kinds: str = "f"
    low: float | None = None
    high: float | None = None

    def problem(self, array: Any, where: Shape) -> str | None:
        """Why ``array`` cannot be this array of the run at ``where``, None when it fits."""
        want = self.shape(where)
        if array.ndim != len(want) or any(w is not None and n != w for n, w in zip(array.shape, want)):
            return f"shape {array.shape}, expected {tuple('k' if w is None else w for w in want)}"
        if array.dtype.kind not in self.kinds:
            return f"dtype {array.dtype}, expected kind {self.kinds!r}"
        values = array.astype(np.float64) if array.size else array
        if array.dtype.kind == "f" and not np.isfinite(values).all():
            return "not finite values"
        if (self.low is not None and (values < self.low).any()) or (self.high is not None and (values > self.high).any()):
            return f"values outside [{self.low}, {self.high}]"
        return None


class Settings:
    """The base of a method's own config section (a frozen dataclass in its module, named by
    ``Method.sections``): ``problems`` says what is wrong with it, one message a field."""

    def problems(self, model: Any) -> list[str]:
        return []


@dataclass(frozen=True, kw_only=True)
class Method:
    """One method: its name in configs and run folders, how it is shown, and its hooks.

    ``levers``: PRMConfig fields a config of this method starts from (PRM+'s recipe).
    ``sections``: RunConfig sections only this method reads (CAT's ``cat``): left out of every
    "same experiment" key of the other methods. ``tuned``: the names of ``prm.tune``'s ranges
    searched beyond the common ones (dropouts, lr). ``role``: its part in comparisons:
    ``baseline`` (what the others are compared to: HAT), ``single-task`` (the reference of
    forward transfer: STL), ``lower-bound`` (NCL), ``upper-bound`` (joint), ``ablation`` or
    ``method``. ``paper``: its column in the PRM paper's tables, None for this project's own.
    ``settings``: the dataclass of its own config section (``sections[0]``), None when it has
    none or its section is the config module's (CAT's). ``ranges``: tuned ranges of its own
    settings. ``arrays``: per-task arrays it records beyond HAT's, by name, as readers check them."""

    name: str
    label: str
    help: str
    colour: str
    hooks: type[Hooks]
    levers: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    sections: tuple[str, ...] = ()
    tuned: tuple[str, ...] = ()
    role: str = "method"
    paper: str | None = None
    settings: type[Settings] | None = None
    ranges: tuple[Range, ...] = ()
    arrays: Mapping[str, ArrayRule] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def masked(self) -> bool:
        return self.hooks.masked

    @property
    def runs_dtd(self) -> bool:
        """Every PRM variant runs DTD, so the ablations cost what PRM costs and the explorer
        can show what X-means would have decided next to what the ablation used."""
        return self.hooks.detects == "dtd"

    @property
    def stacks(self) -> bool:
        """Seeds of it gain from training together: its steps are the shared stacked step.
        CAT's transfer tests and the baselines' own networks step outside it, so stacked seeds
        would only wait for each other, and each run's clock would count the others'."""
        return self.hooks.shared_step and not self.transfer_tests

    @property
    def transfer_tests(self) -> bool:
        """Similarity decided by CAT's transfer tests (recorded as ``TransferTest`` events)."""
        return self.hooks.detects == "transfer"
