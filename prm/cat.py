"""CAT's knowledge-transfer attention (KTA) and the step that trains it beside the main head.

CAT (Ke, Liu and Huang, NeurIPS 2020; docs/cat.md) learns task t with the earlier tasks S its
transfer tests called similar (:func:`transfer_test`) as HAT does, plus a second head: for each
input x, the features of x under every similar task's frozen mask (the shared weights, each
j in S gating the units it learnt with) are attended over, with a learnt query per task, and
a head of t's own reads the result. Both heads' losses are summed, the KTA head's weighted
by ``cat.kta_weight``; the shared weights' gradients are scaled by CAT's multipliers
(``prm.masks.cat_keeps``), so the units similar tasks claimed first move for t and carry
what t learns back to them. At evaluation, each task uses the head that scores higher on its
own validation set (:func:`choose_head`), as CAT's code does.

Written with autograd, unlike ``prm.step``'s hand-written HAT step: attention is outside what
that step spells out, and CAT is the slow baseline here, not the method being made fast.
The attention itself is torch's ``nn.MultiheadAttention`` (no biases, as CAT's), wrapped in
CAT's pre-norm residual block with a feed-forward layer and a final layer norm.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prm import masks as M
from prm import trainer as T
from prm.data import TaskSequence
from prm.events import TransferTest
from prm.model import MaskedMLP
from prm.stack import Request

if TYPE_CHECKING:  # types only: the config module imports the method registry, which imports this one
    from prm.config import RunConfig

Gates = Sequence[Sequence[Tensor]]
"""Per similar task, its frozen mask of every masked layer (at smax)."""


class TransferAttention(nn.Module):
    """Attention over the similar tasks' features, with a learnt query and a head per task.

    The query is input independent (CAT's ``q1``: a per-task vector through a ReLU); the
    input enters through the keys and values, one per similar task. The block is pre-norm:
    query + dropout(attention), then + a feed-forward layer, then a final layer norm."""

    def __init__(self, *, width: int, head_sizes: Sequence[int], heads: int, dropout: float) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(len(head_sizes), width))
        self.query_norm = nn.LayerNorm(width, eps=1e-6)
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropout, bias=False, batch_first=True)
        self.attention_dropout = nn.Dropout(dropout)
        self.ffn_norm = nn.LayerNorm(width, eps=1e-6)
        self.ffn = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.Dropout(dropout))
        self.out_norm = nn.LayerNorm(width, eps=1e-6)
        self.heads = nn.ModuleList(nn.Linear(width, n) for n in head_sizes)

    def forward(self, task: int, features: Tensor) -> Tensor:
        """Logits of ``task``'s KTA head; ``features``: batch x similar tasks x width."""
        query = torch.relu(self.query[task]).expand(features.shape[0], 1, -1)
        attended, _ = self.attention(self.query_norm(query), features, features, need_weights=False)
        h = query.squeeze(1) + self.attention_dropout(attended.squeeze(1))
        h = h + self.ffn(self.ffn_norm(h))
        return self.heads[task](self.out_norm(h))


def similar_features(model: MaskedMLP, x: Tensor, gates: Gates) -> Tensor:
    """The features of ``x`` under each similar task's mask: batch x similar tasks x width."""
    return torch.stack([model.features(x, 0, 1.0, gates=g)[0] for g in gates], dim=1)


@dataclass(kw_only=True)
class KTAPhase:
    """CAT's kept training of ``task`` when it has similar earlier tasks: what ``prm.trainer.fit``
    calls instead of the stacked step (``step``) and its validation (``score``).

    ``keeps``: CAT's gradient multipliers per layer; ``reg``: the sparsity regulariser's unit
    weights and normaliser (``masks.regulariser_weights``); ``rng``: the run's own stream of
    torch's generator for the block (dropout), so the run stays reproducible."""

    model: MaskedMLP
    kta: TransferAttention
    task: int
    gates: Gates
    keeps: Sequence[tuple[Tensor, Tensor]]
    reg: tuple[Tensor, Tensor]
    cfg: RunConfig
    rng: Callable[[], AbstractContextManager]

    def step(self, request: Request) -> tuple[Tensor, Tensor]:
        """One SGD step on the real rows of ``request``; returns (main head's loss, its logits)."""
        model, kta, hat, t = self.model, self.kta, self.cfg.hat, self.task
        x, y, s = request.x[: request.n], request.y[: request.n], request.s
        params = [*model.parameters(), *kta.parameters()]
        with self.rng():
            model.train()
            kta.train()
            for p in params:
                p.grad = None
            logits, mask = model(x, t, s)
            data_loss = F.cross_entropy(logits, y)
            reg = (mask * self.reg[0].to(mask)).sum() / self.reg[1].to(mask)
            kta_loss = F.cross_entropy(kta(t, similar_features(model, x, self.gates)), y)
            (data_loss + hat.lamb * reg + self.cfg.cat.kta_weight * kta_loss).backward()
        with torch.no_grad():
            for layer, (keep_w, keep_b) in zip(model.layers, self.keeps):
                layer.weight.grad *= keep_w
                layer.bias.grad *= keep_b
            emb = model.embedding.weight
            row = emb.grad[t] * M.embedding_compensation(emb[t], s, hat.smax, hat.thres_cosh)
            emb.grad.zero_()  # only the new task's embedding learns
            emb.grad[t] = row
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], self.cfg.optim.clip)
            for p in params:
                if p.grad is not None:
                    p -= request.lr * p.grad
            emb[t].clamp_(-hat.thres_emb, hat.thres_emb)
        return data_loss.detach(), logits.detach()

    @torch.no_grad()
    def score(self, x: Tensor, y: Tensor) -> tuple[float, float]:
        """Validation loss early stopping watches (both heads' losses, the KTA's weighted, as
        in CAT's code) and the better head's accuracy."""
        main, attended = head_scores(self.model, self.kta, self.task, self.gates, x, y, self.cfg.hat.smax)
        return main[0] + self.cfg.cat.kta_weight * attended[0], max(main[1], attended[1])

    def state(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.kta.state_dict().items()}

    def load(self, state: dict[str, Tensor]) -> None:
        self.kta.load_state_dict(state)


@torch.no_grad()
def head_scores(model: MaskedMLP, kta: TransferAttention, task: int, gates: Gates, x: Tensor, y: Tensor,
                smax: float, chunk: int = 4096) -> tuple[tuple[float, float], tuple[float, float]]:
    """(loss, accuracy) of ``task``'s main head and of its KTA head, dropout off."""
    model.eval()
    kta.eval()
    sums = torch.zeros(4)
    for start in range(0, len(x), chunk):
        xb, yb = x[start:start + chunk], y[start:start + chunk]
        main = model(xb, task, smax)[0]
        attended = kta(task, similar_features(model, xb, gates))
        for k, logits in enumerate((main, attended)):
            sums[2 * k] += float(F.cross_entropy(logits, yb, reduction="sum"))
            sums[2 * k + 1] += int((logits.argmax(1) == yb).sum())
    sums /= len(x)
    return (float(sums[0]), float(sums[1])), (float(sums[2]), float(sums[3]))


@torch.no_grad()
def choose_head(model: MaskedMLP, kta: TransferAttention, task: int, gates: Gates, data: dict[str, Tensor],
                smax: float) -> tuple[bool, float, float]:
    """CAT's choice for ``task``: its KTA head when that is strictly more accurate on the
    task's validation set, else the main head. Returns (KTA chosen, validation accuracy,
    test accuracy) of the chosen head."""
    main_val, kta_val = head_scores(model, kta, task, gates, data["x_val"], data["y_val"], smax)
    main_test, kta_test = head_scores(model, kta, task, gates, data["x_test"], data["y_test"], smax)
    use = kta_val[1] > main_val[1]
    return use, (kta_val if use else main_val)[1], (kta_test if use else main_test)[1]


def transfer_test(ctx: T.Context, seq: TaskSequence, model: MaskedMLP, task: int,
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
        with T.run_rng(ctx):
            net = T.build_model(cfg, seq, masked=True, device=ctx.device)  # its head for ``task`` is the fresh one
        with torch.no_grad():
            net.layers.load_state_dict(model.layers.state_dict())
            net.embedding.weight[task] = model.embedding.weight[j]
        ran, _ = T.apart(ctx, net, T.fit(ctx, net, task, data, phase="transfer", max_epochs=budget, head_only=True,
                                         anneal=False))
        epochs.append(ran)
        accs.append(T.evaluate(net, task, data["x_val"], data["y_val"], smax)[1])
    seconds = {"transfer": time.perf_counter() - clock}
    clock = time.perf_counter()
    with T.run_rng(ctx):
        reference = T.build_model(cfg, seq, masked=False, device=ctx.device)
    reference_epochs, _ = T.apart(ctx, reference, T.fit(ctx, reference, task, data, phase="reference",
                                                        max_epochs=budget))
    reference_acc = T.evaluate(reference, task, data["x_val"], data["y_val"], smax)[1]
    seconds["reference"] = time.perf_counter() - clock
    return TransferTest(task=task, transfer_acc=accs, reference_acc=reference_acc,
                        similar=[j for j in range(task) if accs[j] > reference_acc], epochs=epochs,
                        reference_epochs=reference_epochs, seconds=seconds)


def gates(task_masks: Sequence[Sequence[Tensor]], tasks: Sequence[int], device: torch.device) -> list[list[Tensor]]:
    """The smax masks of ``tasks``, every layer, on the device: what CAT's attention reads."""
    return [[m.to(device) for m in task_masks[j]] for j in tasks]
