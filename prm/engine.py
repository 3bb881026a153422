"""One training loop for every method: ``train_sequence(config, emit=...)``.

For each task in order the loop asks the run's method (its hooks, ``prm.methods``) to prepare
it (PRM: dissimilar-task detection, ``prm.dtd``; CAT: transfer tests, ``prm.cat``), trains it
with the plan the method made (``prm.trainer.fit``: HAT's recipe, with the method's protected
units, penalty or extra data), lets the method keep what it needs (masks, a Fisher diagonal,
a network per task), fills the task's row of the accuracy matrix and reports the task. The
method's concept lives in its module; this loop is the same for all of them.

The engine never writes files: it reports everything through ``emit`` (``prm.events``),
checkpoints included (``prm.checkpoint``); ``resume`` starts a run from one of them. Runs of
one shape train together (``train_together``), their parameters stacked (``prm.stack``).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from prm import methods
from prm import step as S
from prm import trainer as T
from prm.analysis import true_groups
from prm.checkpoint import Checkpoint, capture
from prm.config import RunConfig
from prm.data import TaskSequence, sequence_for
from prm.events import RunEnd, RunStarted, TaskArrays, TaskEnd
from prm.methods.base import Hooks
from prm.model import MaskedMLP
from prm.stack import Stack
from prm.trainer import Emit, StopRequested

__all__ = ["Emit", "Job", "Resume", "RunResult", "StopRequested", "stack_key", "train_sequence", "train_together"]


@dataclass(frozen=True, kw_only=True)
class RunResult:
    status: str
    test_acc: np.ndarray  # R[j, i], NaN where not evaluated
    val_acc: np.ndarray
    seconds: float


@dataclass(frozen=True, kw_only=True)
class Resume:
    """Start the sequence at ``checkpoint.task`` from the state the checkpoint holds (a what-if
    run, ``prm.whatif``). ``dissimilar`` replaces DTD's decision for that task: per masked
    layer, the earlier tasks protected. DTD still runs and is recorded, so the run draws from
    its generators exactly what the original drew; later tasks decide as usual.
    ``test_rows``/``val_rows``: the accuracy rows of the tasks before it, for the result."""

    checkpoint: Checkpoint
    dissimilar: tuple[tuple[int, ...], ...]
    test_rows: np.ndarray
    val_rows: np.ndarray


@dataclass(frozen=True, kw_only=True)
class Job:
    """One run of ``train_together``: ``train_sequence``'s arguments."""

    config: RunConfig
    emit: Emit | None = None
    should_stop: Callable[[], bool] | None = None
    sequence: TaskSequence | None = None
    resume: Resume | None = None


def train_sequence(config: RunConfig, *, emit: Emit | None = None, should_stop: Callable[[], bool] | None = None,
                   sequence: TaskSequence | None = None, resume: Resume | None = None,
                   compile: str = "auto") -> RunResult:
    """Learn every task of the configured sequence in order, reporting through ``emit``.

    A ``sequence`` passed in is used as given (the caller built it from this config, shots
    included). With ``resume``, learning starts at its task from its checkpoint (the events
    of the tasks before are the caller's to replay). Ends with a ``RunEnd`` event whatever
    happens: 'finished', 'stopped' (``should_stop`` returned True, or Ctrl-C, which is
    re-raised) or 'failed' (the exception is re-raised).

    ``compile`` (``prm.step.COMPILE_MODES``) picks the compiled SGD step or the eager one;
    they agree to float rounding, not bit for bit, so a run records which it used.
    """
    job = Job(config=config, emit=emit, should_stop=should_stop, sequence=sequence, resume=resume)
    return train_together([job], compile=compile)[0]


def stack_key(config: RunConfig, sequence: TaskSequence) -> tuple:
    """Runs with equal keys can be trained together (``train_together``): the same method and
    network shape over as many tasks of the same input size, on the same device."""
    return (config.method, config.model.hidden, sequence.input_dim, len(sequence.tasks), config.device)


def train_together(jobs: Sequence[Job], *, compile: str = "auto") -> list[RunResult]:
    """Train the runs of ``jobs`` at once, their parameters stacked (``prm.stack``): one step
    call trains a batch of every run, so R runs share each matrix product. Every run draws
    from its own generators as it would alone, and records what it would alone, to float
    rounding. All runs must have one ``stack_key`` and one compile decision."""
    # Masks at large s are ~1e-40 on unused units: denormal floats, which make every later
    # matrix product several times slower on x86 CPUs. Flushing them to zero changes no
    # result that matters and keeps a masked step close to an unmasked one.
    torch.set_flush_denormal(True)
    contexts, sequences, models = [], [], []
    for job in jobs:
        cfg = job.config
        ctx = T.Context(cfg=cfg, device=torch.device(cfg.device), generator=torch.Generator().manual_seed(cfg.seed),
                        emit=job.emit or (lambda event: None), should_stop=job.should_stop or (lambda: False))
        seq = job.sequence or sequence_for(cfg)
        ctx.torch_state = torch.Generator().manual_seed(cfg.seed).get_state()
        with T.run_rng(ctx):
            models.append(T.build_model(cfg, seq, masked=methods.get(cfg.method).masked, device=ctx.device))
        contexts.append(ctx)
        sequences.append(seq)
    if len({stack_key(c.cfg, q) for c, q in zip(contexts, sequences)}) != 1:
        raise ValueError("train_together: the runs differ in method, network, task count, input size or device; "
                         "train them in separate stacks")
    # one decision per stack; a network of its own never takes the stacked step, so never a compiled one
    compiled = (methods.get(contexts[0].cfg.method).hooks.shared_step
                and S.use_compiled(compile, config=contexts[0].cfg, sequence=sequences[0], runs=len(jobs)))
    stack = Stack(models=models, configs=[c.cfg for c in contexts], stepper=S.compiled() if compiled else S.sgd_step)
    runs = {}
    for slot, (ctx, seq, job) in enumerate(zip(contexts, sequences, jobs)):
        ctx.stack, ctx.slot = stack, slot
        runs[slot] = _run(ctx, seq, models[slot], job.resume, compiled)
    return T.drive(stack, runs)


def _run(ctx: T.Context, seq: TaskSequence, model: MaskedMLP, resume: Resume | None, compiled: bool) -> T.Steps:
    """One run from RunStarted to RunEnd, as steps for the driver; returns its RunResult."""
    config, emit = ctx.cfg, ctx.emit
    started = time.perf_counter()
    n = len(seq.tasks)
    test_acc, val_acc = np.full((n, n), np.nan), np.full((n, n), np.nan)
    status = "finished"
    emit(RunStarted(config=config.to_dict(), tasks=[t.describe() for t in seq.tasks], sequence=seq.name,
                    input_dim=seq.input_dim, oracle_transfer=seq.describe().get("oracle_transfer"), compiled=compiled))
    try:
        yield from _learn(ctx, seq, model, test_acc, val_acc, resume)
    except StopRequested:
        status = "stopped"
    except (KeyboardInterrupt, GeneratorExit):
        emit(RunEnd(status="stopped", seconds=time.perf_counter() - started))
        raise
    except Exception:
        emit(RunEnd(status="failed", seconds=time.perf_counter() - started, error=traceback.format_exc()))
        raise
    seconds = time.perf_counter() - started
    emit(RunEnd(status=status, seconds=seconds))
    return RunResult(status=status, test_acc=test_acc, val_acc=val_acc, seconds=seconds)


def _restore(ctx: T.Context, model: MaskedMLP, resume: Resume, test_acc: np.ndarray, val_acc: np.ndarray) -> None:
    """Put the model, the generators and the accuracy rows where the checkpoint's task starts."""
    point = resume.checkpoint
    model.load_state_dict(point.model)
    ctx.torch_state = point.rng_torch.clone()
    ctx.generator.set_state(point.rng_generator)
    if point.rng_cuda is not None:
        torch.cuda.set_rng_state(point.rng_cuda, ctx.device)
    test_acc[: point.task] = resume.test_rows
    val_acc[: point.task] = resume.val_rows


def _learn(ctx: T.Context, seq: TaskSequence, model: MaskedMLP, test_acc: np.ndarray, val_acc: np.ndarray,
           resume: Resume | None = None) -> T.Steps:
    """Every task from the first (or the checkpoint's) on: prepare, train, keep, score, report."""
    cfg = ctx.cfg
    data = [T.to_device(t, ctx.device) for t in seq.tasks]
    hooks: Hooks = methods.get(cfg.method).hooks(ctx=ctx, seq=seq, data=data,
                                                groups=true_groups([t.describe() for t in seq.tasks]))
    hooks.start(resume)
    first = 0
    if resume is not None:
        _restore(ctx, model, resume, test_acc, val_acc)
        first = resume.checkpoint.task
    for t in range(first, len(seq.tasks)):
        if hooks.resumable and cfg.record.checkpoints and t > 0:
            ctx.emit(capture(task=t, model=model, task_masks=hooks.task_masks, generator=ctx.generator, config=cfg,
                             rng_torch=ctx.torch_state))
        model = hooks.network(t, model)
        plan = yield from hooks.before(t, model, resume.dissimilar if resume is not None and t == first else None)
        clock = time.perf_counter()
        plan.epochs["train"], trajectory = yield from T.fit(
            ctx, model, t, data[t], phase="train", max_epochs=cfg.optim.max_epochs, protect=plan.protect,
            reg_used=plan.reg_used, ewc=hooks.penalty(), also=hooks.also(t), keeps=plan.keeps, custom=plan.custom)
        plan.seconds["train"] = time.perf_counter() - clock
        arrays = hooks.after(t, model, plan, trajectory)
        clock = time.perf_counter()
        kta = hooks.score_row(t, model, test_acc, val_acc)
        plan.seconds["eval"] = time.perf_counter() - clock
        if arrays:
            ctx.emit(TaskArrays(task=t, kind="task", arrays=arrays))
        ctx.emit(TaskEnd(task=t, test_acc=_row(test_acc[t]), val_acc=_row(val_acc[t]), seconds=plan.seconds,
                         epochs=plan.epochs, capacity=hooks.capacity(), kta=kta))


def _row(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]
