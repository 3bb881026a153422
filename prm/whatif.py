"""What if DTD had decided otherwise? Re-run a recorded run from one task with its decision replaced.

``python -m prm whatif RUN --task T --similar 1,3 --out DIR`` answers "what did calling T3
similar cost?": it resumes RUN from the checkpoint at the start of task T
(``prm.checkpoint``), forces DTD's decision for T (the listed earlier tasks similar, every
other earlier task dissimilar, in every masked layer), and learns T and every later task
exactly as the parent's config says (later tasks run DTD normally).

The child is an ordinary run folder: its ``run.json`` names the parent (``prm.run.RunParent``),
and its event log holds the whole sequence, the parent's records of the tasks before T
replayed through the same writer (array and checkpoint files too), then the resumed
training. With the parent's own decision the child reproduces the parent's accuracy matrix
exactly on the same machine (tests/test_whatif.py; limits in docs/whatif.md).

The child trains on the parent's device (``config.device``) and nowhere else: its checkpoints
hold that device's generator state, and on another device the floats would differ from the
first step, so child minus parent would mix the device's effect into the decision's. The
CLI refuses a parent whose device this machine lacks, with the check ``run`` applies to
``--device`` (``prm.cli.options.device_problem``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from prm import checkpoint
from prm.config import RunConfig
from prm.data import TaskSequence, sequence_for
from prm.engine import Emit, Resume
from prm.events import Event, RunStarted, TaskArrays
from prm import methods
from prm.run import Run, RunFormatError, RunParent, load_run


class WhatIfError(ValueError):
    """A what-if that cannot be run; the message says why and what to do instead."""


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A checked what-if: the parent run, the task (0-based) whose decision is replaced, the
    dissimilar set forced on each masked layer, and the checkpoint learning resumes from."""

    parent: Run
    task: int
    dissimilar: tuple[tuple[int, ...], ...]
    checkpoint: checkpoint.Checkpoint

    @property
    def config(self) -> RunConfig:
        return self.parent.config

    def link(self) -> RunParent:
        """What the child's run.json says about where it came from."""
        return RunParent(run=str(self.parent.path.resolve()), name=self.parent.name, task=self.task,
                         dissimilar=self.dissimilar)

    @property
    def compile(self) -> str:
        """The parent's step mode (compiled or eager), so that the child takes the parent's
        path to the float. A child given the parent's own decision reproduces it exactly when
        the parent was recorded alone by this engine; a parent trained in a stack (``compare``)
        or by the engine before the hand-written step (the bundled samples) is matched only to
        rounding, and so approximately in what follows."""
        return "on" if self.parent.state.started.compiled else "off"

    def resume(self) -> Resume:
        return Resume(checkpoint=self.checkpoint, dissimilar=self.dissimilar,
                      test_rows=self.parent.state.accuracy_matrix("test")[: self.task],
                      val_rows=self.parent.state.accuracy_matrix("val")[: self.task])


def plan(folder: str | Path, *, task: int, dissimilar: Sequence[Sequence[int]] | None = None,
         similar: Sequence[int] | None = None) -> Plan:
    """Check a what-if of the run in ``folder`` from ``task`` (0-based, >= 1). Give either
    ``similar`` (earlier tasks called similar in every layer; the rest dissimilar) or
    ``dissimilar`` (one set per masked layer). Raises :class:`WhatIfError` saying why not."""
    try:
        parent = load_run(folder)
    except RunFormatError as exc:
        raise WhatIfError(f"cannot read the parent run: {exc}") from None
    cfg = parent.config
    if not methods.get(cfg.method).runs_dtd:
        raise WhatIfError(f"{folder}: method {cfg.method} has no dissimilar-task detection, so there is no "
                          f"decision to replace; what-if needs one of {', '.join(methods.with_dtd())}")
    n_tasks, layers = parent.state.n_tasks, len(cfg.model.hidden)
    if parent.state.started is None:
        raise WhatIfError(f"{folder}: its event log has no run_started record; nothing to resume")
    if not 1 <= task < n_tasks:
        raise WhatIfError(f"--task must be from 2 to {n_tasks} (this run has {n_tasks} tasks; task 1 has no "
                          f"earlier task to call similar), got {task + 1}")
    if (similar is None) == (dissimilar is None):
        raise WhatIfError("give either the similar tasks or the dissimilar sets")
    if similar is not None:
        bad = [i for i in similar if not 0 <= i < task]
        if bad:
            raise WhatIfError(f"--similar may name only tasks learnt before task {task + 1} (1 to {task}), "
                              f"got {', '.join(str(i + 1) for i in bad)}")
        dissimilar = [[i for i in range(task) if i not in set(similar)]] * layers
    if len(dissimilar) != layers or any(not set(d) <= set(range(task)) for d in dissimilar):
        raise WhatIfError(f"the dissimilar sets must be one per masked layer ({layers}), of tasks before {task + 1}")
    missing = [t + 1 for t in range(task) if t not in parent.state.task_ends
               or ("task", t) not in parent.arrays or (t > 0 and (t not in parent.state.dtd
                                                                   or ("dtd", t) not in parent.arrays))]
    if missing:
        raise WhatIfError(f"{folder}: the records of task(s) {', '.join(map(str, missing))} are missing or damaged, "
                          "so the child could not show the sequence before the what-if")
    if not cfg.record.checkpoints:
        raise WhatIfError(f"{folder}: recorded without checkpoints (--no-checkpoints); record the run again "
                          "with checkpoints (the default) to ask what-if questions of it")
    point = _read(parent, task)
    for earlier in range(1, task):  # the child replays these: refuse now, not half-way through writing it
        _read(parent, earlier)
    return Plan(parent=parent, task=task, dissimilar=tuple(tuple(sorted(set(d))) for d in dissimilar),
                checkpoint=point)


def _read(parent: Run, task: int) -> checkpoint.Checkpoint:
    state = parent.state
    try:
        return checkpoint.read(parent.path, task, config=parent.config, input_dim=state.started.input_dim,
                               head_sizes=[t["n_classes"] for t in state.tasks])
    except FileNotFoundError:
        raise WhatIfError(f"{parent.path}: no checkpoint for the start of task {task + 1} "
                          f"({checkpoint.TaskCheckpoint.file_name(task)} is missing); record the run again "
                          "with checkpoints (the default) to ask what-if questions of it") from None
    except RunFormatError as exc:
        raise WhatIfError(f"the checkpoint is unusable: {exc}") from None


def replayed(plan: Plan) -> Iterator[Event]:
    """The parent's events of the tasks before the what-if, in the engine's order:
    checkpoint, DTD epochs, DTD arrays and decision, training epochs, task arrays, task end.
    Lazily: one checkpoint is read (and held) at a time, whatever the run's length."""
    parent = plan.parent
    for t in range(plan.task):
        epochs = [e for e in parent.state.epochs if e.task == t]
        if t > 0:
            yield checkpoint.event(_read(parent, t), config=plan.config)
            yield from (e for e in epochs if e.phase != "train")
            yield TaskArrays(task=t, kind="dtd", arrays=parent.arrays[("dtd", t)])
            yield parent.state.dtd[t]
        yield from (e for e in epochs if e.phase == "train")
        yield TaskArrays(task=t, kind="task", arrays=parent.arrays[("task", t)])
        yield parent.state.task_ends[t]


def replaying(plan: Plan, emit: Emit) -> Emit:
    """``emit`` with the parent's records of the earlier tasks inserted right after run_started.

    They go out with the engine's first event after run_started, inside its try block, so a
    Ctrl-C while they are written still ends the child with a 'stopped' record."""
    pending: Iterator[Event] | None = None

    def wrapped(event: Event) -> None:
        nonlocal pending
        if isinstance(event, RunStarted):
            pending = replayed(plan)
        elif pending is not None:
            todo, pending = pending, None
            for old in todo:
                emit(old)
        emit(event)

    return wrapped


def run(plan: Plan, out: str | Path, *, emit: Emit | None = None, should_stop: Callable[[], bool] | None = None):
    """Record the what-if child in ``out`` (a new folder); returns the engine's ``RunResult``.
    ``emit`` also sees every event (progress)."""
    from prm.engine import train_sequence
    from prm.run import RunWriter

    cfg = plan.config
    seq = sequence(plan)
    writer = RunWriter(out, config=cfg, parent=plan.link())

    def both(event: Event) -> None:
        writer(event)
        if emit is not None:
            emit(event)

    try:
        return train_sequence(cfg, emit=replaying(plan, both), should_stop=should_stop, sequence=seq,
                              resume=plan.resume(), compile=plan.compile)
    finally:
        writer.close()


def sequence(plan: Plan) -> TaskSequence:
    """The parent's task sequence, built again from its config; refused when it no longer
    matches what the parent recorded (a changed data set or data_dir would mix two sequences)."""
    cfg = plan.config
    seq = sequence_for(cfg)
    keys = ("name", "family", "n_classes", "classes", "sizes")
    built = [{k: t.describe()[k] for k in keys} for t in seq.tasks]
    recorded = [{k: t[k] for k in keys} for t in plan.parent.state.tasks]
    if json.loads(json.dumps(built)) != json.loads(json.dumps(recorded)) \
            or seq.input_dim != plan.parent.state.started.input_dim:
        raise WhatIfError(f"the sequence {cfg.sequence} built here differs from the one the parent learnt "
                          "(its data changed); the child cannot resume it")
    return seq


__all__ = ["Plan", "WhatIfError", "plan", "replayed", "replaying", "run", "sequence"]
