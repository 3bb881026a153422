"""The small typed events the engine emits while it trains.

The engine knows nothing about files or screens: it calls ``emit(event)`` with one of these.
``prm.run.RunWriter`` turns each into one JSON line (arrays go to ``.npz`` files), and the
explorer folds the lines back into state with ``prm.run.apply_events`` (each line parsed
back into its event by ``prm.records``), for live and recorded runs alike. Accuracies are
lists with ``None`` for tasks not evaluated.

Each event that the log holds declares, on its fields, what a record of it may hold
(:func:`bound`): ranges, the longest text or list, which fields are task indices. A line of
the log is untrusted input; ``prm.records`` checks every record against these declarations by
one generic check, so an event's limits are written once, here, beside its fields.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PHASES = ("dtd-head", "dtd", "train", "transfer", "reference", "evolve")
"""Training phases: DTD's 1st optimisation (head only), DTD's 2nd, the kept training (LwPRM
for PRM, the only phase of most methods), and CAT's similarity tests: one ``transfer``
training per earlier task and one ``reference`` training per new task (:class:`TransferTest`)."""
TIMING_PHASES = ("dtd", "train", "eval", *PHASES)
"""What a task's time is split into (``TaskEnd.seconds``)."""
STATUSES = ("running", "finished", "stopped", "failed")
ENDED = tuple(s for s in STATUSES if s != "running")
"""What a run_end line may say: a run that ended is not running."""
SPLIT_REASONS = ("bic-improved", "bic-not-improved", "too-few-points", "zero-variance", "k-max")
MAX_TASKS = 1000
"""The longest sequence a run may describe (the accuracy matrix is T x T)."""
MAX_NAME = 200
MAX_EPOCH_COUNT = 10**6
"""The most epochs a record may count (a record is checked, not configured: beyond
``prm.limits.MAX_EPOCHS``, which bounds a config)."""


# ----------------------------------------------------------------------------- bounds

Size = int | str
"""A length or a limit: a number, or a name with an optional ``+1``/``-1`` (``"T-1"``,
``"task+1"``): ``T`` (tasks in the sequence), ``L`` (masked layers), or an earlier field of
the same record (its value, or its length when it is a list). Named sizes are why a record
is checked against its run, not in isolation: a task index is below the sequence's length."""
PER = {"T": "task", "tasks": "task", "L": "masked layer", "task": "earlier task", "task+1": "task learnt so far"}
"""What one entry of a list of ``length`` size stands for, in the message that refuses it."""


@dataclass(frozen=True, kw_only=True)
class Int:
    """An integer (never a bool) in [low, high]."""
    low: Size = 0
    high: Size = 2**31
    none: bool = False


@dataclass(frozen=True, kw_only=True)
class Num:
    """A finite number (an int or a float a float can hold) in [low, high], read as a float."""
    low: float = -math.inf
    high: float = math.inf
    none: bool = False


@dataclass(frozen=True, kw_only=True)
class Text:
    """Free-form text of at most ``limit`` characters (shown to a user: it must be text)."""
    limit: int = MAX_NAME
    none: bool = False


@dataclass(frozen=True, kw_only=True)
class Choice:
    """One of ``values``; a string names a vocabulary the reader supplies (``"dtd source"``:
    it depends on which methods exist, which the run format does not know)."""
    values: tuple[str, ...] | str
    none: bool = False


@dataclass(frozen=True, kw_only=True)
class Flag:
    """true or false; ``absent`` is the value of a missing key (None: missing reads as null)."""
    none: bool = False
    absent: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Items:
    """A list of at most ``limit`` items (``item``). ``length``: exactly that many (or none, with
    ``empty``); ``least``: at least that many; ``known``: the first ``known`` entries are set
    and the rest null (accuracies of the tasks learnt so far); ``kind``: the type it is read as."""
    item: Any
    limit: Size
    length: Size | None = None
    empty: bool = False
    least: int = 0
    known: Size | None = None
    kind: type = list
    none: bool = False


@dataclass(frozen=True, kw_only=True)
class Tasks:
    """A set of distinct task indices below ``below``, read as a sorted list."""
    below: Size


@dataclass(frozen=True, kw_only=True)
class Keyed:
    """An object whose keys are ``keys`` (a :class:`Choice`) and whose values are ``values``;
    ``absent``: the value of a missing key (None: missing is refused)."""
    keys: Choice
    values: Any
    absent: dict | None = None


@dataclass(frozen=True, kw_only=True)
class Record:
    """An object with these fields, in this order (others are ignored)."""
    fields: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class SplitTree:
    """An X-means record over ``points`` points, whose split attempts must form a tree."""
    points: Size


@dataclass(frozen=True, kw_only=True)
class Config:
    """A run configuration (``prm.config.RunConfig``), read as its dictionary."""


def bound(spec: Any, **kw: Any) -> Any:
    """A dataclass field that declares what a record may hold in it."""
    return field(metadata={"bound": spec}, **kw)


def bounds(cls: type) -> dict[str, Any]:
    """The declared bounds of an event's fields, in field order."""
    return {f.name: f.metadata["bound"] for f in dataclasses.fields(cls)}


TASK_SPEC = Record(fields={
    "name": Text(), "family": Text(), "n_classes": Int(low=1, high=100_000),
    "classes": Items(item=Int(high=10**6), limit="n_classes"),
    "sizes": Record(fields={k: Int(high=10**9) for k in ("train", "val", "test")})})
"""One task of a sequence as ``RunStarted.tasks`` holds it."""
ACCURACY = Num(low=0.0, high=1.0)
SECONDS = Num(low=0.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class RunStarted:
    """The sequence as the engine will learn it. ``oracle_transfer[a][b]``: accuracy on task b
    of a simple classifier trained on task a, for sequences that measure it (mnist5k-*).
    ``compiled``: whether SGD steps ran compiled (``prm.step``); None in runs recorded before
    the engine could compile."""

    type = "run_started"
    config: dict[str, Any] = bound(Config())
    tasks: Sequence[dict[str, Any]] = bound(Items(item=TASK_SPEC, limit=MAX_TASKS, least=1, kind=tuple))
    sequence: str = bound(Text())
    input_dim: int = bound(Int(low=1, high=10**7))
    oracle_transfer: list[list[float]] | None = bound(
        Items(item=Items(item=ACCURACY, limit="tasks", length="tasks"), limit="tasks", length="tasks", none=True),
        default=None)
    compiled: bool | None = bound(Flag(none=True), default=None)


@dataclass(frozen=True, kw_only=True, slots=True)
class EpochEnd:
    """One epoch of one phase. ``train_loss``/``train_acc``: cross-entropy and accuracy on the
    training batches as they were trained (dropout on, s annealed). ``val_loss``: the validation
    objective early stopping watches (cross-entropy plus the regulariser or EWC penalty at s =
    smax, as in HAT's reference); ``val_acc``: validation accuracy at s = smax."""

    type = "epoch"
    task: int = bound(Int(high="T-1"))
    phase: str = bound(Choice(values=PHASES))
    epoch: int = bound(Int(high=MAX_EPOCH_COUNT))
    train_loss: float | None = bound(Num(low=0.0, none=True))
    train_acc: float | None = bound(Num(low=0.0, high=1.0, none=True))
    val_loss: float | None = bound(Num(low=0.0, none=True))
    val_acc: float | None = bound(Num(low=0.0, high=1.0, none=True))
    lr: float | None = bound(Num(low=0.0, none=True))
    seconds: float = bound(SECONDS)


@dataclass(frozen=True, kw_only=True, slots=True)
class DTDResult:
    """What dissimilar-task detection decided for ``task``, one entry per masked layer.

    Each layer holds the X-means record (``xmeans``), the dissimilar set X-means implies
    (``dissimilar_xmeans``) and the set actually used for the relaxed mask (``dissimilar``:
    differs from the former in the PRM(S), PRM(D) and PRM(T) ablations), and ``undecided``
    (X-means could not test any split: two tasks). The X-means record omits the cluster
    centres, which are the means of each cluster's rows of the step's ``embeddings_l<l>``.
    """

    type = "dtd"
    task: int = bound(Int(low=1, high="T-1"))
    layers: list[dict[str, Any]] = bound(Items(item=Record(fields={
        "xmeans": SplitTree(points="task+1"), "undecided": Flag(absent=False),
        "dissimilar_xmeans": Tasks(below="task"), "dissimilar": Tasks(below="task")}), limit="L", length="L"))
    source: str = bound(Choice(values="dtd source"))
    seconds: float = bound(SECONDS)


@dataclass(frozen=True, kw_only=True, slots=True)
class TransferTest:
    """CAT's similarity detection for ``task``: earlier task j is ``similar`` when the transfer
    network built on j's frozen masked features (``transfer_acc[j]``, validation accuracy on
    ``task``) beats a reference network trained from scratch (``reference_acc``).
    ``epochs[j]``/``reference_epochs``: how long each trained; ``seconds``: the time of all
    transfer trainings and of the reference (the cost that grows with the task count)."""

    type = "transfer_test"
    task: int = bound(Int(low=1, high="T-1"))
    transfer_acc: list[float] = bound(Items(item=ACCURACY, limit="task", length="task"))
    reference_acc: float = bound(ACCURACY)
    similar: list[int] = bound(Tasks(below="task"))
    epochs: list[int] = bound(Items(item=Int(high=MAX_EPOCH_COUNT), limit="task", length="task"))
    reference_epochs: int = bound(Int(high=MAX_EPOCH_COUNT))
    seconds: dict[str, float] = bound(Keyed(keys=Choice(values=("transfer", "reference")), values=SECONDS))

    @property
    def dissimilar(self) -> list[int]:
        """The earlier tasks not called similar: the complement, in DTD's terms."""
        return [j for j in range(self.task) if j not in set(self.similar)]


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskEnd:
    """A task learnt and every task so far evaluated. ``kta`` (CAT only): per task so far,
    whether its knowledge-transfer-attention head was used, chosen because it scored higher
    on that task's validation set than the main head (CAT's rule), at this evaluation."""

    type = "task_end"
    task: int = bound(Int(high="T-1"))
    test_acc: list[float | None] = bound(Items(item=Num(low=0.0, high=1.0, none=True), limit="T", length="T",
                                               known="task+1"))
    val_acc: list[float | None] = bound(Items(item=Num(low=0.0, high=1.0, none=True), limit="T", length="T",
                                              known="task+1"))
    seconds: dict[str, float] = bound(Keyed(keys=Choice(values=TIMING_PHASES), values=SECONDS))
    epochs: dict[str, int] = bound(Keyed(keys=Choice(values=TIMING_PHASES), values=Int(high=MAX_EPOCH_COUNT)))
    capacity: list[float] = bound(Items(item=ACCURACY, limit="L", length="L", empty=True))
    kta: list[bool] | None = bound(Items(item=Flag(), limit="T", length="task+1", none=True), default=None)


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskArrays:
    """Per-task arrays (embeddings, masks, trajectories); written to ``arrays/<kind>_<task>.npz``."""

    type = "arrays"
    task: int
    kind: str
    arrays: dict[str, np.ndarray]


@dataclass(frozen=True, kw_only=True, slots=True)
class ArraysWritten:
    """The log's record of a :class:`TaskArrays` event: which file holds that task's arrays.
    The name is fixed by kind and task, so a reader never opens a path a log line made up."""

    type = "arrays"
    task: int = bound(Int(high="T-1"))
    kind: str = bound(Choice(values=("task", "dtd")))
    file: str = bound(Text(limit=10**6))

    @staticmethod
    def file_name(kind: str, task: int) -> str:
        return f"arrays/{kind}_{task:03d}.npz"

    def fault(self) -> str | None:
        """Why the record, each field in range, is not one a writer makes: DTD runs from the
        second task on, and the file's name is fixed by kind and task, so a reader never
        opens a path a log line made up (a path out, a device)."""
        if self.kind == "dtd" and self.task < 1:
            return "task must be at least 1 for DTD arrays (DTD starts at the second task)"
        expected = self.file_name(self.kind, self.task)
        return None if self.file == expected else f"file must be {expected!r}, got {self.file[:80]!r}"


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskCheckpoint:
    """Everything needed to resume the run exactly where ``task`` starts (before its DTD):
    model tensors, earlier tasks' masks and RNG states as named tensors, plain strings in
    ``metadata`` (``prm.checkpoint``). The writer stores it as ``checkpoints/task_<t>.safetensors``
    (name fixed by task, like array files); it is not an event-log line."""

    type = "checkpoint"
    task: int
    tensors: dict[str, Any]
    metadata: dict[str, str]

    @staticmethod
    def file_name(task: int) -> str:
        return f"checkpoints/task_{task:03d}.safetensors"


@dataclass(frozen=True, kw_only=True, slots=True)
class RunEnd:
    type = "run_end"
    status: str = bound(Choice(values=ENDED))
    seconds: float | None = bound(Num(low=0.0, none=True))
    error: str | None = bound(Text(limit=100_000, none=True), default=None)


Event = RunStarted | EpochEnd | DTDResult | TransferTest | TaskEnd | TaskArrays | ArraysWritten | TaskCheckpoint | RunEnd


def to_record(event: Event) -> dict[str, Any]:
    """The JSON-line form of an event (not for TaskArrays or TaskCheckpoint, which go to files)."""
    return {"type": event.type, **dataclasses.asdict(event)}
