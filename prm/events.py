"""The small typed events the engine emits while it trains.

The engine knows nothing about files or screens: it calls ``emit(event)`` with one of these.
``prm.runs.RunWriter`` turns each into one JSON line (arrays go to ``.npz`` files), and the
explorer folds the lines back into state with ``prm.runs.apply_events`` (each line parsed
back into its event by ``prm.records``), for live and recorded runs alike. Accuracies are
lists with ``None`` for tasks not evaluated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

import numpy as np

PHASES = ("dtd-head", "dtd", "train", "transfer", "reference")
"""Training phases: DTD's 1st optimisation (head only), DTD's 2nd, the kept training (LwPRM
for PRM, the only phase of most methods), and CAT's similarity tests: one ``transfer``
training per earlier task and one ``reference`` training per new task (:class:`TransferTest`)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunStarted:
    """The sequence as the engine will learn it. ``oracle_transfer[a][b]``: accuracy on task b
    of a simple classifier trained on task a, for sequences that measure it (mnist5k-*).
    ``compiled``: whether SGD steps ran compiled (``prm.step``); None in runs recorded before
    the engine could compile."""

    type = "run_started"
    config: dict[str, Any]
    tasks: Sequence[dict[str, Any]]
    sequence: str
    input_dim: int
    oracle_transfer: list[list[float]] | None = None
    compiled: bool | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class EpochEnd:
    """One epoch of one phase. ``train_loss``/``train_acc``: cross-entropy and accuracy on the
    training batches as they were trained (dropout on, s annealed). ``val_loss``: the validation
    objective early stopping watches (cross-entropy plus the regulariser or EWC penalty at s =
    smax, as in HAT's reference); ``val_acc``: validation accuracy at s = smax."""

    type = "epoch"
    task: int
    phase: str
    epoch: int
    train_loss: float | None
    train_acc: float | None
    val_loss: float | None
    val_acc: float | None
    lr: float | None
    seconds: float


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
    task: int
    layers: list[dict[str, Any]]
    source: str
    seconds: float


@dataclass(frozen=True, kw_only=True, slots=True)
class TransferTest:
    """CAT's similarity detection for ``task``: earlier task j is ``similar`` when the transfer
    network built on j's frozen masked features (``transfer_acc[j]``, validation accuracy on
    ``task``) beats a reference network trained from scratch (``reference_acc``).
    ``epochs[j]``/``reference_epochs``: how long each trained; ``seconds``: the time of all
    transfer trainings and of the reference (the cost that grows with the task count)."""

    type = "transfer_test"
    task: int
    transfer_acc: list[float]
    reference_acc: float
    similar: list[int]
    epochs: list[int]
    reference_epochs: int
    seconds: dict[str, float]

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
    task: int
    test_acc: list[float | None]
    val_acc: list[float | None]
    seconds: dict[str, float]
    epochs: dict[str, int]
    capacity: list[float]
    kta: list[bool] | None = None


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
    task: int
    kind: str
    file: str

    @staticmethod
    def file_name(kind: str, task: int) -> str:
        return f"arrays/{kind}_{task:03d}.npz"


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
    status: str
    seconds: float | None
    error: str | None = None


Event = RunStarted | EpochEnd | DTDResult | TransferTest | TaskEnd | TaskArrays | ArraysWritten | TaskCheckpoint | RunEnd

STATUSES = ("running", "finished", "stopped", "failed")


def to_record(event: Event) -> dict[str, Any]:
    """The JSON-line form of an event (not for TaskArrays or TaskCheckpoint, which go to files)."""
    return {"type": event.type, **dataclasses.asdict(event)}
