"""Training one phase of one task, and driving the phases of many runs through one stack.

Every method trains the same way; only what it protects and what it adds differ (its hooks,
``prm.methods``). ``fit`` is HAT's recipe for one phase: per-batch annealing of s that restarts
every epoch, SGD whose learning rate is divided after ``patience`` epochs without validation-loss
improvement and that stops below ``lr_min``, and the best-validation state restored at the end.
The gradient rules themselves (protected weights, the cosh compensation, clamping, clipping) are
the step's (``prm.step``, with the readable reference in ``prm.reference``).

A run's training is a generator (``Steps``): it yields each batch as a ``Request`` and is sent
back the step's (loss, logits). ``drive`` steps the generators of every run of a stack together,
so that runs of one shape share each matrix product (``prm.stack``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from prm import masks as M
from prm import step as S
from prm.data import Task, TaskSequence
from prm.events import EpochEnd, Event
from prm.model import MaskedMLP
from prm.stack import Phase, Request, Stack, make_phase

if TYPE_CHECKING:  # types only: the config module imports the method registry, which imports this one
    from prm.cat import KTAPhase
    from prm.config import HATConfig, RunConfig

Emit = Callable[[Event], None]

Steps = Generator[Request, tuple[Tensor, Tensor], Any]
"""A run's training as a generator: it yields each batch as a ``Request`` and is sent back the
step's (loss, logits); ``drive`` trains the batches of all runs of a stack together."""


class StopRequested(Exception):
    """Raised between epochs when ``should_stop()`` says so; the run ends as 'stopped'."""


@dataclass(kw_only=True)
class Context:
    """One run's own state beside its network: its config, its generators, where it reports.
    ``torch_state`` is the run's stream of torch's global generator (network initialisation,
    EWC's Fisher pass), kept apart so that runs trained together draw what each draws alone."""

    cfg: RunConfig
    device: torch.device
    generator: torch.Generator
    emit: Emit
    should_stop: Callable[[], bool]
    torch_state: Tensor | None = None
    stack: Stack | None = None
    slot: int = 0


@contextlib.contextmanager
def run_rng(ctx: Context) -> Iterator[None]:
    """torch's global generator set to the run's own stream for the block, then saved back."""
    cuda = [ctx.device] if ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.set_rng_state(ctx.torch_state)
        if cuda:  # EWC's Fisher pass draws dropout on the device: seeded from the run's stream
            torch.cuda.manual_seed(int(torch.randint(2**62, (1,))))
        yield
        ctx.torch_state = torch.get_rng_state()


def to_device(task: Task, device: torch.device) -> dict[str, Tensor]:
    """A task's six tensors (train, validation, test images and labels) on ``device``."""
    names = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    return {n: getattr(task, n).to(device) for n in names}


def build_model(cfg: RunConfig, seq: TaskSequence, *, masked: bool, device: torch.device) -> MaskedMLP:
    """The run's network for ``seq``: one head per task, masked or not."""
    return MaskedMLP(
        input_dim=seq.input_dim, hidden=cfg.model.hidden, head_sizes=[t.n_classes for t in seq.tasks],
        input_dropout=cfg.model.input_dropout, hidden_dropout=cfg.model.hidden_dropout, masked=masked,
    ).to(device)


@torch.no_grad()
def evaluate(model: MaskedMLP, task: int, x: Tensor, y: Tensor, s: float, chunk: int = 4096) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``task``'s head, masks at sharpness ``s``."""
    if model.training:  # only EWC's Fisher pass uses the module's dropout; toggling costs 20 us a call
        model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(x), chunk):
        logits, _ = model(x[start:start + chunk], task, s)
        yb = y[start:start + chunk]
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    return loss / len(x), correct / len(x)


@torch.no_grad()
def smax_masks(model: MaskedMLP, task: int, smax: float) -> list[Tensor]:
    """``task``'s mask of every layer at s = smax, on the CPU: what later tasks protect."""
    return [m.detach().cpu().clone() for m in model.masks(task, smax)]


def stack_trajectory(trajectory: list[list[np.ndarray]], layer: int, dtype: str) -> np.ndarray:
    """One layer's embedding snapshots of a phase as one (snapshots x units) array."""
    if not trajectory:
        return np.zeros((0, 0), dtype=dtype)
    return np.stack([snap[layer] for snap in trajectory]).astype(dtype)


def _objective_extra(model: MaskedMLP, phase: Phase, hat: HATConfig, ewc: Any) -> float:
    """The non-data terms of the objective at evaluation sharpness (s = smax): HAT's reference
    adds them to the validation loss that early stopping watches, so we do too."""
    extra = 0.0
    with torch.no_grad():
        if phase.reg is not None and hat.lamb > 0:
            mask = M.task_mask(model.embedding.weight[phase.task], hat.smax)
            extra += hat.lamb * float((mask * phase.reg[0].to(mask)).sum() / phase.reg[1])
    if ewc is not None:
        extra += ewc.value(model)
    return extra


def snapshot(model: MaskedMLP) -> dict[str, Tensor]:
    """A copy of the network's state (its own tensors, not views of a stack's)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _Patience:
    """HAT's learning-rate schedule: divide the rate after ``patience`` epochs without a lower
    validation loss, stop once it falls below ``lr_min``; remembers the best state."""

    def __init__(self, *, model: MaskedMLP, optim: Any, custom: KTAPhase | None) -> None:
        self.model, self.optim, self.custom = model, optim, custom
        self.lr, self.left, self.best = optim.lr, optim.patience, math.inf
        self.state, self.custom_state = snapshot(model), custom.state() if custom is not None else None

    def update(self, val_loss: float) -> bool:
        """Take one epoch's validation loss; True when the schedule has ended."""
        if val_loss < self.best:
            self.best, self.state = val_loss, snapshot(self.model)
            self.custom_state = self.custom.state() if self.custom is not None else None
            self.left = self.optim.patience
            return False
        self.left -= 1
        if self.left <= 0:
            self.lr /= self.optim.lr_factor
            if self.lr < self.optim.lr_min:
                return True
            self.left = self.optim.patience
        return False

    def restore(self) -> None:
        self.model.load_state_dict(self.state)
        if self.custom is not None:
            self.custom.load(self.custom_state)


def _batch_size(cfg: RunConfig, n_new: int) -> int:
    """HAT anneals s over the batches of an epoch; with two batches it jumps from 1/smax to
    smax and the masks barely learn (``OptimConfig.min_batches``), so tiny tasks get smaller batches."""
    bs = cfg.optim.batch_size
    if math.ceil(n_new / bs) < cfg.optim.min_batches:
        bs = max(1, n_new // cfg.optim.min_batches)
    return bs


def _epoch(ctx: Context, jobs: list, phases: list[Phase], *, bs: int, units: int, lr: float, anneal: bool,
           custom: KTAPhase | None) -> Steps:
    """One epoch's batches, shuffled within each task and, when several tasks train together,
    across them; returns the summed training loss and correct count."""
    batches = []  # (job index, sample indices)
    for j, (_, d) in enumerate(jobs):
        order = torch.randperm(len(d["x_train"]), generator=ctx.generator).to(ctx.device)
        batches += [(j, order[b:b + bs]) for b in range(0, len(order), bs)]
    if len(jobs) > 1:
        batches = [batches[k] for k in torch.randperm(len(batches), generator=ctx.generator).tolist()]
    sum_loss, sum_correct = 0.0, 0
    noises = torch.rand(len(batches), bs, units, generator=ctx.generator).to(ctx.device)  # dropout, per batch
    smax = ctx.cfg.hat.smax
    for b, (j, idx) in enumerate(batches):
        real = len(idx)
        if real < bs:  # the last batch, padded with zero-weight rows to the phase's one shape
            idx = torch.cat([idx, idx.new_zeros(bs - real)])
        x, y = jobs[j][1]["x_train"][idx], jobs[j][1]["y_train"][idx]
        request = Request(phase=phases[j], x=x, y=y, n=real, noise=noises[b], lr=lr,
                          s=M.anneal_s(b, len(batches), smax) if anneal else smax)
        loss, logits = custom.step(request) if custom is not None else (yield request)
        sum_loss += float(loss) * real
        sum_correct += int((logits.argmax(1) == y[:real]).sum())
    return sum_loss, sum_correct


def _validate(model: MaskedMLP, jobs: list, smax: float, custom: KTAPhase | None) -> tuple[float, float]:
    """Validation loss and accuracy, averaged over the jobs' tasks by their validation sizes."""
    scores = np.array([custom.score(d["x_val"], d["y_val"]) if custom is not None else
                       evaluate(model, t, d["x_val"], d["y_val"], smax) for t, d in jobs])
    sizes = [len(d["x_val"]) for _, d in jobs]
    loss, acc = (float(v) for v in (scores[0] if len(jobs) == 1 else np.average(scores, 0, sizes)))
    return loss, acc


def fit(ctx: Context, model: MaskedMLP, task: int, data: dict[str, Tensor], *, phase: str, max_epochs: int,
        head_only: bool = False, protect: Sequence[Tensor] | None = None, reg_used: Sequence[Tensor] | None = None,
        ewc: Any = None, also: Sequence[tuple[int, dict[str, Tensor]]] = (),
        settled: Callable[[int], bool] | None = None, anneal: bool = True,
        keeps: Sequence[tuple[Tensor, Tensor]] | None = None, custom: KTAPhase | None = None) -> Steps:
    """Train ``task`` for one phase with HAT's patience schedule; return the epochs run and
    the embedding trajectory (after every ``record.trajectory_every``-th epoch, then the
    restored best-validation embedding).

    ``also`` lists earlier (task, data) pairs trained at the same time (joint training): each
    batch holds one task's images and trains its head, the batches of all tasks are shuffled
    together, and early stopping watches the validation loss over all of them.
    ``settled(epoch)``, asked after every epoch, ends the phase early when it says so (DTD's
    ``PRMConfig.settle``). ``anneal`` False holds s at smax (CAT's transfer networks read frozen
    masks); ``keeps`` replaces HAT's gradient multipliers (CAT's). ``ewc``: EWC's penalty
    (``prm.methods.ewc.EWC``) or None. The steps themselves are the driver's, except with
    ``custom`` (CAT's attention phase), whose own step and validation score run here and whose
    module is snapshotted too."""
    cfg = ctx.cfg
    jobs = [(task, data), *also]
    ewc_terms = None if ewc is None else ewc.terms()
    phases = [make_phase(model=model, task=t, head_only=head_only, protect=protect, reg_used=reg_used, ewc=ewc_terms,
                         keeps=keeps) for t, _ in jobs]
    units = model.layers[0].in_features + sum(model.widths)  # one dropout draw per input and unit
    schedule = _Patience(model=model, optim=cfg.optim, custom=custom)
    bs, n = _batch_size(cfg, len(data["x_train"])), sum(len(d["x_train"]) for _, d in jobs)
    trajectory: list[list[np.ndarray]] = []
    epochs = 0
    for epoch in range(max_epochs):
        started, lr = time.perf_counter(), schedule.lr
        sum_loss, sum_correct = yield from _epoch(ctx, jobs, phases, bs=bs, units=units, lr=lr, anneal=anneal,
                                                  custom=custom)
        epochs = epoch + 1
        val_loss, val_acc = _validate(model, jobs, cfg.hat.smax, custom)
        val_loss += _objective_extra(model, phases[0], cfg.hat, ewc)
        if model.masked and epoch % cfg.record.trajectory_every == 0:
            trajectory.append([e.detach().cpu().numpy().copy() for e in model.task_embeddings(task)])
        ctx.emit(EpochEnd(task=task, phase=phase, epoch=epoch, train_loss=sum_loss / n, train_acc=sum_correct / n,
                          val_loss=val_loss, val_acc=val_acc, lr=lr, seconds=time.perf_counter() - started))
        if schedule.update(val_loss):
            break
        if ctx.should_stop():
            raise StopRequested
        if settled is not None and settled(epoch):
            break
    schedule.restore()
    if model.masked:  # end the trajectory where the task ends: the restored best embedding
        trajectory.append([e.detach().cpu().numpy().copy() for e in model.task_embeddings(task)])
    return epochs, trajectory


def apart(ctx: Context, model: MaskedMLP, steps: Steps) -> Any:
    """Drive the steps of a side network (CAT's transfer and reference networks) to the end,
    now, on a stack of its own with the run's kind of step; returns what they return."""
    return drive(Stack(models=[model], configs=[ctx.cfg], stepper=ctx.stack.stepper), {0: steps})[0]


def run_alone(ctx: Context, model: MaskedMLP, steps: Steps) -> Any:
    """Drive the steps of one run (a phase, DTD, a whole run) on their own, eagerly, and
    return what the generator returns: for tests and scripts that call the engine's parts."""
    ctx.stack, ctx.slot = Stack(models=[model], configs=[ctx.cfg], stepper=S.sgd_step), 0
    return drive(ctx.stack, {0: steps})[0]


def drive(stack: Stack, runs: dict[int, Steps]) -> list[Any]:
    """Step the runs' generators until all have ended. Each round trains the next batch of
    every run, in one stack step per kind of step (full, head only, with EWC's penalty), so
    that runs at different tasks and epochs still share each call. A run that ends, or
    fails, leaves the others going; its exception is re-raised after them. Ctrl-C stops
    every run (each records it)."""
    results: dict[int, Any] = {}
    pending: dict[int, Request] = {}
    failure: list[BaseException] = []

    def advance(slot: int, sent: tuple[Tensor, Tensor] | None) -> None:
        try:
            pending[slot] = runs[slot].send(sent)
        except StopIteration as end:
            pending.pop(slot, None)
            results[slot] = end.value
        except Exception as exc:  # recorded as failed by the run itself
            pending.pop(slot, None)
            failure.append(exc)

    try:
        for slot in runs:
            advance(slot, None)
        while pending:
            groups: dict[tuple, list[int]] = {}
            for slot, request in pending.items():
                groups.setdefault(request.phase.signature, []).append(slot)
            for group in groups.values():
                out = stack.step({slot: pending[slot] for slot in group})
                for slot in group:
                    advance(slot, out[slot])
    except BaseException as exc:  # a failed step fails every run, Ctrl-C stops them: each records it
        _end_all(runs, pending, exc)
        raise
    if failure:
        raise failure[0]
    return [results[slot] for slot in sorted(results)]


def _end_all(runs: dict[int, Steps], pending: dict[int, Request], exc: BaseException) -> None:
    """Let every pending run record how it ended: a failure thrown into it, Ctrl-C as a close."""
    for slot in list(pending):
        try:
            if isinstance(exc, Exception):
                runs[slot].throw(exc)
            else:
                runs[slot].close()
        except BaseException:
            pass
