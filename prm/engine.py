"""One training loop for every method: ``train_sequence(config, emit=...)``.

The loop follows HAT's reference mechanics (PRM-NOTES): per-batch annealing of s that
restarts every epoch, gradients of protected weights scaled by 1 - min(mask_out, mask_in),
the cosh compensation of embedding gradients, embeddings clamped after every step, the
sparsity regulariser normalised by free capacity, gradient-norm clipping, and SGD whose
learning rate is divided after ``patience`` epochs without validation-loss improvement,
with the best-validation weights restored at the end. PRM adds DTD (a throw-away HAT pass
whose task embeddings X-means clusters) before each task and protects only the dissimilar
tasks' units while it learns (LwPRM). CAT trains a transfer network per earlier task and a
reference network before each task, frees the units similar tasks claimed first, and adds an
attention head over the similar tasks' features (``prm.cat``, docs/cat.md).

The engine never writes files: it reports everything through ``emit`` (``prm.events``),
checkpoints included (``prm.checkpoint``); ``resume`` starts a run from one of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import traceback
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from prm import masks as M
from prm import step as S
from prm.cat import KTAPhase, TransferAttention, choose_head
from prm.checkpoint import Checkpoint, capture
from prm.config import HATConfig, RunConfig
from prm.data import Task, TaskSequence, make_sequence
from prm.events import DTDResult, EpochEnd, Event, RunEnd, RunStarted, TaskArrays, TaskEnd, TransferTest
from prm.methods import STRATEGIES, Strategy, dissimilar_set, true_groups
from prm.model import MaskedMLP
from prm.similarity import cosine_distances, dissimilar_by_rule, features
from prm.stack import Phase, Request, Stack
from prm.stack import phase as make_phase
from prm.xmeans import dtd_call, undecided, xmeans

Emit = Callable[[Event], None]


class StopRequested(Exception):
    """Raised between epochs when ``should_stop()`` says so; the run ends as 'stopped'."""


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


@dataclass(kw_only=True)
class _Context:
    """One run's own state beside its network: its config, its generators, where it reports.
    ``torch_state`` is the run's stream of torch's global generator (network initialisation,
    EWC's Fisher pass), kept apart so that runs trained together draw what each draws alone."""

    cfg: RunConfig
    strategy: Strategy
    device: torch.device
    generator: torch.Generator
    emit: Emit
    should_stop: Callable[[], bool]
    torch_state: Tensor | None = None
    stack: Stack | None = None
    slot: int = 0


@contextlib.contextmanager
def _run_rng(ctx: _Context) -> Iterator[None]:
    """torch's global generator set to the run's own stream for the block, then saved back."""
    cuda = [ctx.device] if ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.set_rng_state(ctx.torch_state)
        if cuda:  # EWC's Fisher pass draws dropout on the device: seeded from the run's stream
            torch.cuda.manual_seed(int(torch.randint(2**62, (1,))))
        yield
        ctx.torch_state = torch.get_rng_state()


def _to(task: Task, device: torch.device) -> dict[str, Tensor]:
    names = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    return {n: getattr(task, n).to(device) for n in names}


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


Steps = Generator[Request, tuple[Tensor, Tensor], Any]
"""A run's training as a generator: it yields each batch as a ``Request`` and is sent back the
step's (loss, logits); ``_drive`` trains the batches of all runs of a stack together."""

def _objective_extra(model: MaskedMLP, phase: Phase, hat: HATConfig, ewc: "EWC | None") -> float:
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


def _snapshot(model: MaskedMLP) -> dict[str, Tensor]:
    """A copy of the network's state (its own tensors, not views of a stack's)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _fit(
    ctx: _Context,
    model: MaskedMLP,
    task: int,
    data: dict[str, Tensor],
    *,
    phase: str,
    max_epochs: int,
    head_only: bool = False,
    protect: Sequence[Tensor] | None = None,
    reg_used: Sequence[Tensor] | None = None,
    ewc: EWC | None = None,
    also: Sequence[tuple[int, dict[str, Tensor]]] = (),
    settled: Callable[[int], bool] | None = None,
    anneal: bool = True,
    keeps: Sequence[tuple[Tensor, Tensor]] | None = None,
    custom: KTAPhase | None = None,
) -> Steps:
    """Train ``task`` for one phase with HAT's patience schedule; return the epochs run and
    the embedding trajectory (after every ``record.trajectory_every``-th epoch, then the
    restored best-validation embedding).

    ``also`` lists earlier (task, data) pairs trained at the same time (joint training): each
    batch holds one task's images and trains its head, the batches of all tasks are shuffled
    together, and early stopping watches the validation loss over all of them.
    ``settled(epoch)``, asked after every epoch, ends the phase early when it says so (DTD's
    ``prm.settle``). ``anneal`` False holds s at smax (CAT's transfer networks read frozen
    masks); ``keeps`` replaces HAT's gradient multipliers (CAT's). A generator (``Steps``):
    the steps themselves are the driver's, except with ``custom`` (CAT's attention phase),
    whose own step and validation score run here and whose module is snapshotted too."""
    cfg, opt_cfg = ctx.cfg, ctx.cfg.optim
    jobs = [(task, data), *also]
    ewc_terms = None if ewc is None else ewc.terms()
    phases = [make_phase(model=model, task=t, head_only=head_only, protect=protect, reg_used=reg_used, ewc=ewc_terms,
                         keeps=keeps) for t, _ in jobs]
    units = model.layers[0].in_features + sum(model.widths)  # one dropout draw per input and unit
    lr = opt_cfg.lr
    best_loss, best_state = math.inf, _snapshot(model)
    best_custom = custom.state() if custom is not None else None
    patience = opt_cfg.patience
    # HAT anneals s over the batches of an epoch; with two batches it jumps from 1/smax to
    # smax and the masks barely learn (OptimConfig.min_batches), so tiny tasks get smaller batches.
    bs, n_new = opt_cfg.batch_size, len(data["x_train"])
    if math.ceil(n_new / bs) < opt_cfg.min_batches:
        bs = max(1, n_new // opt_cfg.min_batches)
    n = sum(len(d["x_train"]) for _, d in jobs)
    trajectory: list[list[np.ndarray]] = []
    epochs = 0
    for epoch in range(max_epochs):
        started = time.perf_counter()
        batches = []  # (job index, sample indices)
        for j, (_, d) in enumerate(jobs):
            order = torch.randperm(len(d["x_train"]), generator=ctx.generator).to(ctx.device)
            batches += [(j, order[b:b + bs]) for b in range(0, len(order), bs)]
        if len(jobs) > 1:
            batches = [batches[k] for k in torch.randperm(len(batches), generator=ctx.generator).tolist()]
        sum_loss, sum_correct = 0.0, 0
        noises = torch.rand(len(batches), bs, units, generator=ctx.generator).to(ctx.device)  # dropout, per batch
        for b, (j, idx) in enumerate(batches):
            real = len(idx)
            if real < bs:  # the last batch, padded with zero-weight rows to the phase's one shape
                idx = torch.cat([idx, idx.new_zeros(bs - real)])
            x, y = jobs[j][1]["x_train"][idx], jobs[j][1]["y_train"][idx]
            request = Request(phase=phases[j], x=x, y=y, n=real, noise=noises[b], lr=lr,
                              s=M.anneal_s(b, len(batches), cfg.hat.smax) if anneal else cfg.hat.smax)
            loss, logits = custom.step(request) if custom is not None else (yield request)
            sum_loss += float(loss) * real
            sum_correct += int((logits.argmax(1) == y[:real]).sum())
        epochs = epoch + 1
        scores = np.array([custom.score(d["x_val"], d["y_val"]) if custom is not None else
                           evaluate(model, t, d["x_val"], d["y_val"], cfg.hat.smax) for t, d in jobs])
        sizes = [len(d["x_val"]) for _, d in jobs]
        val_loss, val_acc = (float(v) for v in (scores[0] if len(jobs) == 1 else np.average(scores, 0, sizes)))
        val_loss += _objective_extra(model, phases[0], cfg.hat, ewc)
        if model.masked and epoch % cfg.record.trajectory_every == 0:
            trajectory.append([e.detach().cpu().numpy().copy() for e in model.task_embeddings(task)])
        ctx.emit(EpochEnd(
            task=task, phase=phase, epoch=epoch, train_loss=sum_loss / n, train_acc=sum_correct / n,
            val_loss=val_loss, val_acc=val_acc, lr=lr, seconds=time.perf_counter() - started,
        ))
        if val_loss < best_loss:
            best_loss, best_state = val_loss, _snapshot(model)
            best_custom = custom.state() if custom is not None else None
            patience = opt_cfg.patience
        else:
            patience -= 1
            if patience <= 0:
                lr /= opt_cfg.lr_factor
                if lr < opt_cfg.lr_min:
                    break
                patience = opt_cfg.patience
        if ctx.should_stop():
            raise StopRequested
        if settled is not None and settled(epoch):
            break
    model.load_state_dict(best_state)
    if custom is not None:
        custom.load(best_custom)
    if model.masked:  # end the trajectory where the task ends: the restored best embedding
        trajectory.append([e.detach().cpu().numpy().copy() for e in model.task_embeddings(task)])
    return epochs, trajectory


def _smax_masks(model: MaskedMLP, task: int, smax: float) -> list[Tensor]:
    with torch.no_grad():
        return [m.detach().cpu().clone() for m in model.masks(task, smax)]


def _stack(trajectory: list[list[np.ndarray]], layer: int, dtype: str) -> np.ndarray:
    if not trajectory:
        return np.zeros((0, 0), dtype=dtype)
    return np.stack([snap[layer] for snap in trajectory]).astype(dtype)


def _dtd(
    ctx: _Context, model: MaskedMLP, task: int, data: dict[str, Tensor],
    acc_mask: list[Tensor], groups: list[int], forced: Sequence[Sequence[int]] | None = None,
) -> Steps:
    """Dissimilar-task detection on a copy of the state: returns D_t per layer, the epochs,
    and the embedding table DTD ended with (rows 0..task, all layers side by side).
    ``forced`` (per layer) replaces the decision and is recorded with source ``whatif``."""
    cfg = ctx.cfg
    saved = _snapshot(model)
    epochs = {}
    if cfg.prm.two_stage and cfg.prm.head_epochs > 0:
        epochs["dtd-head"], _ = yield from _fit(ctx, model, task, data, phase="dtd-head",
                                                max_epochs=cfg.prm.head_epochs, head_only=True)
    rule, prm_cfg = cfg.prm.clustering, cfg.prm

    def by_xmeans(points: np.ndarray):
        result = xmeans(features(points, prm_cfg.features), k_max=prm_cfg.k_max, seed=cfg.seed)
        return result, undecided(result), dtd_call(result, task, when_undecided=prm_cfg.undecided)

    def by_rule(points: np.ndarray) -> list[int]:
        if rule == "xmeans":
            return by_xmeans(points)[2]
        return dissimilar_by_rule(features(points, prm_cfg.features), task, rule=rule, threshold=prm_cfg.threshold)

    def decide(rows_all: Tensor) -> list[tuple]:
        """Per layer: X-means' result, whether it was undecided, its call, and the rule's call."""
        # prm.layers = together: one call for every layer, from all layers' rows side by side.
        shared = by_rule(rows_all.numpy().astype(np.float64)) if prm_cfg.layers == "together" else None
        out = []
        for rows in model.split(rows_all):
            result, was_undecided, called_by_xmeans = by_xmeans(rows.numpy().astype(np.float64))
            called = shared if shared is not None else called_by_xmeans if rule == "xmeans" else \
                by_rule(rows.numpy().astype(np.float64))
            out.append((result, was_undecided, called_by_xmeans, called))
        return out

    def calls(rows_all: Tensor) -> list[list[int]]:
        """The rule's call per layer alone: what settling watches (no X-means record needed)."""
        if prm_cfg.layers == "together":
            return [by_rule(rows_all.numpy().astype(np.float64))] * len(model.widths)
        return [by_rule(rows.numpy().astype(np.float64)) for rows in model.split(rows_all)]

    answers: list[list[list[int]]] = []

    def settled(epoch: int) -> bool:
        """prm.settle: every settle_every epochs, the calls on the embeddings as they are; True
        once they have not changed for ``settle`` checks in a row."""
        if (epoch + 1) % prm_cfg.settle_every:
            return False
        answers.append(calls(model.embedding.weight[: task + 1].detach().cpu()))
        recent = answers[-prm_cfg.settle - 1:]
        return len(recent) == prm_cfg.settle + 1 and all(a == recent[-1] for a in recent)

    epochs["dtd"], trajectory = yield from _fit(ctx, model, task, data, phase="dtd", max_epochs=cfg.prm.dtd_epochs,
                                                protect=acc_mask, reg_used=acc_mask,
                                                settled=settled if prm_cfg.settle > 0 else None)
    started = time.perf_counter()
    layers, dissimilar, arrays = [], [], {}
    rows_all = model.embedding.weight[: task + 1].detach().cpu()
    tables = model.split(rows_all)
    for index, (result, was_undecided, called_by_xmeans, called) in enumerate(decide(rows_all)):
        points = tables[index].numpy().astype(np.float64)
        used = sorted(forced[index]) if forced is not None else dissimilar_set(
            similarity=ctx.strategy.similarity, task=task, xmeans_dissimilar=called, groups=groups)
        record = result.to_dict()
        del record["centers"]  # the means of each cluster's rows of arrays/dtd_<t>.npz: not logged twice
        layers.append({"xmeans": record, "undecided": was_undecided,
                       "dissimilar_xmeans": called_by_xmeans, "dissimilar": used})
        dissimilar.append(used)
        arrays[f"embeddings_l{index}"] = points.astype(np.float32)
        arrays[f"trajectory_l{index}"] = _stack(trajectory, index, cfg.record.trajectory_dtype)
    model.load_state_dict(saved)
    ctx.emit(TaskArrays(task=task, kind="dtd", arrays=arrays))
    source = "whatif" if forced is not None else prm_cfg.clustering if ctx.strategy.similarity == "xmeans" \
        else ctx.strategy.similarity
    ctx.emit(DTDResult(task=task, layers=layers, source=source,
                       seconds=time.perf_counter() - started))
    return dissimilar, epochs, rows_all.numpy().astype(np.float64)


def _apart(ctx: _Context, model: MaskedMLP, steps: Steps) -> Any:
    """Drive the steps of a side network (CAT's transfer and reference networks) to the end,
    now, on a stack of its own with the run's kind of step; returns what they return."""
    return _drive(Stack(models=[model], configs=[ctx.cfg], stepper=ctx.stack.stepper), {0: steps})[0]


def _transfer_test(ctx: _Context, seq: TaskSequence, model: MaskedMLP, task: int,
                   data: dict[str, Tensor]) -> TransferTest:
    """CAT's similarity detection for ``task``: per earlier task j, a transfer network (the
    shared weights under j's mask at smax, frozen, with a fresh head trained on ``task``),
    and one reference network (fresh, unmasked, trained on ``task`` alone); j is similar when
    its transfer network is strictly more accurate on ``task``'s validation set. Every
    training has its own patience schedule capped at ``cat.detect_epochs``; the networks are
    thrown away, only the calls and their times are kept."""
    cfg, smax = ctx.cfg, ctx.cfg.hat.smax
    budget = min(cfg.cat.detect_epochs, cfg.optim.max_epochs)  # CAT's code: the main budget for every phase
    accs, epochs = [], []
    clock = time.perf_counter()
    for j in range(task):
        with _run_rng(ctx):
            net = _build_model(cfg, seq, ctx.strategy, ctx.device)  # its head for ``task`` is the fresh one
        with torch.no_grad():
            net.layers.load_state_dict(model.layers.state_dict())
            net.embedding.weight[task] = model.embedding.weight[j]
        ran, _ = _apart(ctx, net, _fit(ctx, net, task, data, phase="transfer", max_epochs=budget, head_only=True,
                                       anneal=False))
        epochs.append(ran)
        accs.append(evaluate(net, task, data["x_val"], data["y_val"], smax)[1])
    seconds = {"transfer": time.perf_counter() - clock}
    clock = time.perf_counter()
    with _run_rng(ctx):
        reference = _build_model(cfg, seq, dataclasses.replace(ctx.strategy, masked=False), ctx.device)
    reference_epochs, _ = _apart(ctx, reference, _fit(ctx, reference, task, data, phase="reference",
                                                      max_epochs=budget))
    reference_acc = evaluate(reference, task, data["x_val"], data["y_val"], smax)[1]
    seconds["reference"] = time.perf_counter() - clock
    return TransferTest(task=task, transfer_acc=accs, reference_acc=reference_acc,
                        similar=[j for j in range(task) if accs[j] > reference_acc], epochs=epochs,
                        reference_epochs=reference_epochs, seconds=seconds)


def _cat_before(ctx: _Context, seq: TaskSequence, model: MaskedMLP, kta: TransferAttention, task: int,
                data: dict[str, Tensor], task_masks: list[list[Tensor]], acc_mask: list[Tensor],
                ) -> tuple[TransferTest, list[tuple[Tensor, Tensor]], list[Tensor], KTAPhase | None]:
    """CAT before it learns ``task``: the transfer test (emitted), then CAT's gradient
    multipliers, the units they leave protected (recorded as ``protected_l<l>``), and the
    attention phase when some earlier task was called similar (else None: HAT's step with
    CAT's multipliers, which equal HAT's when every earlier task is dissimilar)."""
    test = _transfer_test(ctx, seq, model, task, data)
    ctx.emit(test)
    free = [M.cat_free([m[l] for m in task_masks], test.dissimilar) for l in range(len(acc_mask))]
    keeps = [(w.to(ctx.device), b.to(ctx.device)) for w, b in M.cat_keeps(acc_mask, free)]
    protected = [a * (1.0 - f) for a, f in zip(acc_mask, free)]
    custom = None
    if test.similar:
        custom = KTAPhase(model=model, kta=kta, task=task, gates=_gates(task_masks, test.similar, ctx.device),
                          keeps=keeps, reg=M.regulariser_weights(acc_mask, model.widths), cfg=ctx.cfg,
                          rng=lambda: _run_rng(ctx))
    return test, keeps, protected, custom


def _gates(task_masks: list[list[Tensor]], tasks: Sequence[int], device: torch.device) -> list[list[Tensor]]:
    """The smax masks of ``tasks``, every layer, on the device: what CAT's attention reads."""
    return [[m.to(device) for m in task_masks[j]] for j in tasks]


@torch.no_grad()
def _copy_nearest_head(model: MaskedMLP, task: int, dtd_rows: np.ndarray, dissimilar_last: Sequence[int]) -> None:
    """``PRMConfig.head_init == "similar"``: start the new task's head from the head of its
    nearest (cosine, DTD embeddings) earlier similar task with as many classes, so that the
    shared units the relaxed mask frees are moved in a direction that task's head can read.
    "Similar" is the last masked layer's call (the layer the heads read); "nearest" is the
    cosine distance over all layers' DTD embeddings side by side."""
    size = model.heads[task].out_features
    similar = [i for i in range(task) if i not in set(dissimilar_last) and model.heads[i].out_features == size]
    if similar:
        dist = cosine_distances(dtd_rows)[task]
        nearest = min(similar, key=lambda i: dist[i])
        model.heads[task].load_state_dict(model.heads[nearest].state_dict())


@dataclass(frozen=True, kw_only=True)
class EWC:
    """EWC's quadratic penalty lam/2 * sum F (p - anchor)^2 on the hidden layers' weights and
    biases (``fisher`` and ``anchor`` in ``model.shared_parameters()`` order)."""

    fisher: list[Tensor]
    anchor: list[Tensor]
    lam: float

    def terms(self) -> tuple[tuple[tuple[Tensor, Tensor], ...], tuple[tuple[Tensor, Tensor], ...], float]:
        """(fisher, anchor, lam) as a ``prm.stack.Phase`` holds them: (weight, bias) per layer."""
        def pairs(ts: list[Tensor]) -> tuple[tuple[Tensor, Tensor], ...]:
            return tuple(zip(ts[0::2], ts[1::2]))

        return pairs(self.fisher), pairs(self.anchor), self.lam

    @torch.no_grad()
    def value(self, model: MaskedMLP) -> float:
        return float(self.lam / 2 * sum((f * (p - a) ** 2).sum()
                                        for f, p, a in zip(self.fisher, model.shared_parameters(), self.anchor)))


def _fisher(model: MaskedMLP, task: int, data: dict[str, Tensor], batch_size: int, smax: float) -> list[Tensor]:
    """Empirical Fisher diagonal of the shared weights on the task's training data."""
    model.train()
    params = model.shared_parameters()
    fisher = [torch.zeros_like(p) for p in params]
    x, y = data["x_train"], data["y_train"]
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        model.zero_grad(set_to_none=True)
        logits, _ = model(xb, task, smax)
        F.cross_entropy(logits, yb).backward()
        for f, p in zip(fisher, params):
            f += p.grad.detach() ** 2 * len(xb)
    model.zero_grad(set_to_none=True)
    model.eval()
    return [f / len(x) for f in fisher]


@torch.no_grad()
def _init_embedding(model: MaskedMLP, task: int, how: str) -> None:
    """Set the new task's embedding row before DTD (``PRMConfig.embedding_init``); ``normal``
    keeps HAT's N(0, 1) draw from the model's construction."""
    if how == "zeros":
        model.embedding.weight[task].zero_()
    elif how == "mean":
        model.embedding.weight[task] = model.embedding.weight[:task].mean(0)


def _build_model(cfg: RunConfig, seq: TaskSequence, strategy: Strategy, device: torch.device) -> MaskedMLP:
    return MaskedMLP(
        input_dim=seq.input_dim, hidden=cfg.model.hidden, head_sizes=[t.n_classes for t in seq.tasks],
        input_dropout=cfg.model.input_dropout, hidden_dropout=cfg.model.hidden_dropout,
        masked=strategy.masked,
    ).to(device)


@dataclass(frozen=True, kw_only=True)
class Job:
    """One run of ``train_together``: ``train_sequence``'s arguments."""

    config: RunConfig
    emit: Emit | None = None
    should_stop: Callable[[], bool] | None = None
    sequence: TaskSequence | None = None
    resume: Resume | None = None


def train_sequence(
    config: RunConfig,
    *,
    emit: Emit | None = None,
    should_stop: Callable[[], bool] | None = None,
    sequence: TaskSequence | None = None,
    resume: Resume | None = None,
    compile: str = "auto",
) -> RunResult:
    """Learn every task of the configured sequence in order, reporting through ``emit``.

    A ``sequence`` passed in is used as given (the caller built it from this config, shots
    included). With ``resume``, learning starts at its task from its checkpoint (the events
    of the tasks before are the caller's to replay). Ends with a ``RunEnd`` event whatever
    happens: 'finished', 'stopped' (``should_stop`` returned True, or Ctrl-C, which is
    re-raised) or 'failed' (the exception is re-raised).

    ``compile`` (``prm.config.COMPILE_MODES``) picks the compiled SGD step or the eager one;
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
        ctx = _Context(cfg=cfg, strategy=STRATEGIES[cfg.method], device=torch.device(cfg.device),
                       generator=torch.Generator().manual_seed(cfg.seed), emit=job.emit or (lambda event: None),
                       should_stop=job.should_stop or (lambda: False))
        seq = job.sequence or make_sequence(cfg.sequence, seed=cfg.seed, n_tasks=cfg.n_tasks, data_dir=cfg.data_dir,
                                            shots=cfg.shots)
        ctx.torch_state = torch.Generator().manual_seed(cfg.seed).get_state()
        with _run_rng(ctx):
            models.append(_build_model(cfg, seq, ctx.strategy, ctx.device))
        contexts.append(ctx)
        sequences.append(seq)
    if len({stack_key(c.cfg, q) for c, q in zip(contexts, sequences)}) != 1:
        raise ValueError("train_together: the runs differ in method, network, task count, input size or device; "
                         "train them in separate stacks")
    compiled = S.use_compiled(compile, config=contexts[0].cfg, sequence=sequences[0], runs=len(jobs))  # one per stack
    stack = Stack(models=models, configs=[c.cfg for c in contexts], stepper=S.compiled() if compiled else S.sgd_step)
    runs = {}
    for slot, (ctx, seq, job) in enumerate(zip(contexts, sequences, jobs)):
        ctx.stack, ctx.slot = stack, slot
        runs[slot] = _run(ctx, seq, models[slot], job.resume, compiled)
    return _drive(stack, runs)


def _run(ctx: _Context, seq: TaskSequence, model: MaskedMLP, resume: Resume | None, compiled: bool) -> Steps:
    """One run from RunStarted to RunEnd, as steps for the driver; returns its RunResult."""
    config, emit = ctx.cfg, ctx.emit
    started = time.perf_counter()
    T = len(seq.tasks)
    test_acc = np.full((T, T), np.nan)
    val_acc = np.full((T, T), np.nan)
    status = "finished"
    oracle = seq.describe().get("oracle_transfer")
    emit(RunStarted(config=config.to_dict(), tasks=[t.describe() for t in seq.tasks],
                    sequence=seq.name, input_dim=seq.input_dim, oracle_transfer=oracle, compiled=compiled))
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


def run_alone(ctx: _Context, model: MaskedMLP, steps: Steps) -> Any:
    """Drive the steps of one run (a phase, DTD, a whole run) on their own, eagerly, and
    return what the generator returns: for tests and scripts that call the engine's parts."""
    ctx.stack, ctx.slot = Stack(models=[model], configs=[ctx.cfg], stepper=S.sgd_step), 0
    return _drive(ctx.stack, {0: steps})[0]


def _drive(stack: Stack, runs: dict[int, Steps]) -> list[Any]:
    """Step the runs' generators until all have ended. Each round trains the next batch of
    every run, in one stack step per kind of step (full, head only, with EWC's penalty), so
    that runs at different tasks and epochs still share each call. A run that ends, or
    fails, leaves the others going; its exception is re-raised after them. Ctrl-C stops
    every run (each records it)."""
    results: dict[int, Any] = {}
    pending: dict[int, Request] = {}
    failure: BaseException | None = None

    def advance(slot: int, sent: tuple[Tensor, Tensor] | None) -> None:
        nonlocal failure
        try:
            pending[slot] = runs[slot].send(sent)
        except StopIteration as end:
            pending.pop(slot, None)
            results[slot] = end.value
        except Exception as exc:  # recorded as failed by the run itself
            pending.pop(slot, None)
            failure = failure or exc

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
        for slot in list(pending):
            try:
                if isinstance(exc, Exception):
                    runs[slot].throw(exc)
                else:
                    runs[slot].close()
            except BaseException:
                pass
        raise
    if failure is not None:
        raise failure
    return [results[slot] for slot in sorted(results)]


def _restore(ctx: _Context, model: MaskedMLP, resume: Resume, test_acc: np.ndarray, val_acc: np.ndarray) -> None:
    """Put the model, the generators and the accuracy rows where the checkpoint's task starts."""
    point = resume.checkpoint
    model.load_state_dict(point.model)
    ctx.torch_state = point.rng_torch.clone()
    ctx.generator.set_state(point.rng_generator)
    if point.rng_cuda is not None:
        torch.cuda.set_rng_state(point.rng_cuda, ctx.device)
    test_acc[: point.task] = resume.test_rows
    val_acc[: point.task] = resume.val_rows


def _learn(ctx: _Context, seq: TaskSequence, model: MaskedMLP, test_acc: np.ndarray, val_acc: np.ndarray,
           resume: Resume | None = None) -> Steps:
    cfg, strategy = ctx.cfg, ctx.strategy
    smax = cfg.hat.smax
    groups = true_groups([t.describe() for t in seq.tasks])
    data = [_to(t, ctx.device) for t in seq.tasks]
    eval_models: list[MaskedMLP] = []  # STL keeps one network per task
    task_masks: list[list[Tensor]] = []
    acc_mask: list[Tensor] | None = None
    fisher: list[Tensor] | None = None
    anchor: list[Tensor] | None = None
    first = 0
    kta: TransferAttention | None = None
    similar_sets: list[list[int]] = []  # CAT: per task, the earlier tasks its transfer test called similar
    if strategy.cat:
        if resume is not None:
            raise ValueError("CAT runs cannot be resumed: their checkpoints would lack the attention and the calls")
        with _run_rng(ctx):
            kta = TransferAttention(width=cfg.model.hidden[-1], head_sizes=[task.n_classes for task in seq.tasks],
                                    heads=cfg.cat.heads, dropout=cfg.cat.attention_dropout).to(ctx.device)
    if resume is not None:
        _restore(ctx, model, resume, test_acc, val_acc)
        first = resume.checkpoint.task
        for masks in resume.checkpoint.task_masks:
            task_masks.append(list(masks))
            acc_mask = [M.accumulate(None if acc_mask is None else acc_mask[l], m) for l, m in enumerate(masks)]
    for t in range(first, len(seq.tasks)):
        seconds: dict[str, float] = {}
        if strategy.masked and not strategy.cat and cfg.record.checkpoints and t > 0:
            ctx.emit(capture(task=t, model=model, task_masks=task_masks, generator=ctx.generator, config=cfg,
                             rng_torch=ctx.torch_state))
        if strategy.fresh_per_task and t > 0:
            with _run_rng(ctx):
                model = _build_model(cfg, seq, strategy, ctx.device)
            ctx.stack.adopt(ctx.slot, model)
        protect, dissimilar, epochs, keeps, custom = acc_mask, None, {}, None, None
        if strategy.cat and t > 0:
            test, keeps, protect, custom = _cat_before(ctx, seq, model, kta, t, data[t], task_masks, acc_mask)
            seconds.update(test.seconds)
            epochs.update(transfer=sum(test.epochs), reference=test.reference_epochs)
        if strategy.cat:
            similar_sets.append(test.similar if t > 0 else [])
        if strategy.runs_dtd and t > 0:
            _init_embedding(model, t, cfg.prm.embedding_init)
            clock = time.perf_counter()
            forced = resume.dissimilar if resume is not None and t == first else None
            dissimilar, epochs, dtd_rows = yield from _dtd(ctx, model, t, data[t], acc_mask, groups, forced)
            if cfg.prm.head_init == "similar":
                _copy_nearest_head(model, t, dtd_rows, dissimilar[-1])
            protect = [M.relaxed_mask([m[l] for m in task_masks], d, len(acc_mask[l]), relax=cfg.prm.relax)
                       for l, d in enumerate(dissimilar)]
            seconds["dtd"] = time.perf_counter() - clock
        reg_used = protect if cfg.prm.reg_mask == "relaxed" and dissimilar is not None else acc_mask
        ewc = EWC(fisher=fisher, anchor=anchor, lam=cfg.ewc_lambda) if strategy.ewc and fisher is not None else None
        clock = time.perf_counter()
        epochs["train"], trajectory = yield from _fit(
            ctx, model, t, data[t], phase="train", max_epochs=cfg.optim.max_epochs,
            protect=protect if strategy.protect != "none" else None, reg_used=reg_used, ewc=ewc,
            also=[(i, data[i]) for i in range(t)] if strategy.joint else (), keeps=keeps, custom=custom)
        seconds["train"] = time.perf_counter() - clock
        arrays: dict[str, np.ndarray] = {}
        if strategy.masked:
            mask_t = _smax_masks(model, t, smax)
            previous = acc_mask
            task_masks.append(mask_t)
            acc_mask = [M.accumulate(None if previous is None else previous[l], m) for l, m in enumerate(mask_t)]
            for l, emb in enumerate(model.task_embeddings(t)):
                arrays[f"embedding_l{l}"] = emb.detach().cpu().numpy().astype(np.float32)
                arrays[f"mask_l{l}"] = mask_t[l].numpy()
                arrays[f"accumulated_l{l}"] = acc_mask[l].numpy()
                if protect is not None:
                    arrays[f"protected_l{l}"] = protect[l].cpu().numpy()
                arrays[f"trajectory_l{l}"] = _stack(trajectory, l, cfg.record.trajectory_dtype)
        if strategy.ewc:
            with _run_rng(ctx):
                new = _fisher(model, t, data[t], cfg.optim.batch_size, smax)
            fisher = new if fisher is None else [(f * t + g) / (t + 1) for f, g in zip(fisher, new)]
            anchor = [p.detach().clone() for p in model.shared_parameters()]
        if strategy.fresh_per_task:
            eval_models.append(model)
        clock = time.perf_counter()
        kta_used: list[bool] | None = [] if strategy.cat else None
        for i in range(t + 1):
            if strategy.cat and similar_sets[i]:  # CAT's choice between the main and the attention head
                use, val_acc[t, i], test_acc[t, i] = choose_head(
                    model, kta, i, _gates(task_masks, similar_sets[i], ctx.device), data[i], smax)
                kta_used.append(use)
                continue
            if kta_used is not None:
                kta_used.append(False)
            net = eval_models[i] if strategy.fresh_per_task and not strategy.joint else model
            _, test_acc[t, i] = evaluate(net, i, data[i]["x_test"], data[i]["y_test"], smax)
            _, val_acc[t, i] = evaluate(net, i, data[i]["x_val"], data[i]["y_val"], smax)
        seconds["eval"] = time.perf_counter() - clock
        if arrays:
            ctx.emit(TaskArrays(task=t, kind="task", arrays=arrays))
        ctx.emit(TaskEnd(
            task=t, test_acc=_row(test_acc[t]), val_acc=_row(val_acc[t]), seconds=seconds, epochs=epochs,
            capacity=[M.capacity_used(m) for m in acc_mask] if acc_mask is not None else [], kta=kta_used,
        ))


def _row(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]
