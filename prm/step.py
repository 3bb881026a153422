"""One SGD step of HAT's rules, forward and backward written out by hand, for R runs at once.

Why by hand: the network is a fixed MLP (``prm.model``), and at the default width a step is
a few hundred microseconds, of which autograd's bookkeeping was a third. Spelt out, the step
is a short chain of batched matrix products and elementwise maths that ``torch.compile``
fuses into a handful of kernels (:func:`compiled`). What the step computes is easier read in
``prm.reference``, the same step for one run with autograd, and ``tests/test_step.py`` checks
every parameter of this one against it.

Every tensor has a leading run dimension R: R = 1 for one run, R > 1 for runs of equal
shape trained together (several seeds, or configurations that differ only in numbers), which
then share each matrix product. Runs never mix: run r's gradient depends on run r's slice
only. Hyper-parameters and the slope s are per-run tensors, not Python numbers, so that a
new value never recompiles.

The step updates the parameters in place (they are views of the networks' parameters) and
returns each run's data loss and logits. The rules are HAT's (``docs/method.md``); those that
``prm.masks`` states are called from there, not restated:
  forward    h_l = relu(W_l h_{l-1} + b_l) * dropout_l * a_l,  a_l = sigmoid(s e_l)  (``masks.task_mask``)
  objective  CE(head(h_L), y) + lamb * sum(a * w) / n     (w, n: ``masks.regulariser_weights``;
             its gradient ``masks.regulariser_gradient``)
  gradients  weights and biases scaled by the keep multipliers (``masks.layer_keeps``, passed in),
             the embedding's by HAT's cosh compensation (``masks.embedding_compensation``)
  update     clip the gradient norm at ``clip``, p -= lr * g, clamp e to +-thres_emb.
Dropout arrives as uniform noise drawn by each run from its own generator (and is turned into
masks inside the step), so that eager and compiled steps, alone or stacked, see the same draws.

The pieces below are plain functions that ``torch.compile`` inlines into one graph; splitting
them changed no floating-point operation nor its order.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from prm import masks as M

Pair = tuple[Tensor, Tensor]  # (weight R x out x in, bias R x out)

COMPILE_MODES = ("auto", "on", "off")
"""How SGD steps run: ``auto`` compiled where that was measured to pay (:func:`compile_pays`),
``on`` always compiled, ``off`` eager (the same function, op by op)."""


@dataclass(frozen=True, kw_only=True)
class Hyper:
    """HAT's constants, one value per run (shape R)."""

    smax: Tensor
    lamb: Tensor
    thres_cosh: Tensor
    thres_emb: Tensor
    clip: Tensor


class _Saved(NamedTuple):
    """What the forward pass keeps for the backward one, per hidden layer."""

    inputs: list[Tensor]  # the layer's input (after the previous layer's dropout and gate)
    pre: list[Tensor]  # z = W h + b
    post: list[Tensor]  # relu(z)
    gates: list[Tensor]  # dropout * mask, the factor relu(z) is multiplied by


def _col(v: Tensor, dims: int) -> Tensor:
    """A per-run value shaped to broadcast against a tensor of ``dims`` dimensions."""
    return v.view(-1, *([1] * (dims - 1)))


def sgd_step(
    *,
    layers: Sequence[Pair],
    head: Pair,
    embedding: Tensor | None,
    x: Tensor,
    y: Tensor,
    weight: Tensor,
    noise: Tensor,
    rates: Tensor,
    s: Tensor,
    lr: Tensor,
    keeps: Sequence[Pair] | None,
    reg_weights: Tensor | None,
    reg_norm: Tensor | None,
    hyper: Hyper,
    train_features: bool = True,
    penalty: tuple[Sequence[Pair], Sequence[Pair], Tensor] | None = None,
    class_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Train one batch per run in place; return (data loss per run, logits R x B x C).

    ``embedding`` is the task's row of embeddings (R x sum of widths), None for unmasked
    networks. ``weight`` (R x B) is each example's share of the loss: 1/n for the n real
    examples of a batch, 0 for padding, so that every batch of a phase has one shape.
    ``noise`` (R x B x (inputs + units)): uniform draws that make the dropout masks of the
    input and of every hidden layer, unit u dropped when its draw is below ``rates`` (R x
    (inputs + units), the drop probability of u's layer), kept ones scaled by 1 / (1 - rate).
    ``keeps``: per layer, the gradient multipliers of weight and bias; None frees all.
    ``train_features`` False trains the head alone (DTD's first stage). ``penalty``: EWC's
    (fisher, anchor, lambda) for the hidden layers. ``class_bias`` (R x C): 0 for a run's
    classes, -inf for the rows its head lacks when heads of different sizes share one stacked
    tensor (their logits vanish from the softmax and their rows get no gradient). A run with
    ``lr`` 0 is left exactly as it was: stacked runs that have no batch this step.
    """
    masked = embedding is not None
    widths = [w.shape[1] for w, _ in layers]
    mask = M.task_mask(embedding, _col(s, 2)) if masked else None
    gates = list(torch.split(mask, widths, dim=1)) if masked else [None] * len(layers)
    rates = rates.unsqueeze(1)
    drops = list(torch.split((noise >= rates) / (1.0 - rates), [x.shape[-1], *widths], dim=-1))
    h, saved = _forward(layers, x * drops[0], drops[1:], gates)
    hw, hb = head
    loss, logits, d = _cross_entropy(hw, hb, h, y, weight, class_bias)
    grads: list[Tensor] = [torch.bmm(d.transpose(1, 2), h), d.sum(1)]
    params: list[Tensor] = [hw, hb]
    if train_features:
        layer_grads, mask_grads = _backward_features(layers, torch.bmm(d, hw), saved, drops[1:], keeps=keeps,
                                                     penalty=penalty, masked=masked)
        grads = [*layer_grads, *grads]
        params = [p for pair in layers for p in pair] + params
        if masked:
            grads.append(_embedding_gradient(mask_grads, mask, embedding, s, reg_weights, reg_norm, hyper))
            params.append(embedding)
    _clip_and_descend(params, grads, clip=hyper.clip, lr=lr)
    if masked and train_features:
        _clamp_embedding(embedding, hyper.thres_emb, lr)
    return loss, logits


def _forward(layers: Sequence[Pair], h: Tensor, drops: Sequence[Tensor],
             gates: Sequence[Tensor | None]) -> tuple[Tensor, _Saved]:
    """The hidden layers from the dropped-out input ``h``: their output, and what backward needs."""
    saved = _Saved([], [], [], [])
    for (w, b), drop, gate in zip(layers, drops, gates):
        saved.inputs.append(h)
        z = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        a = torch.relu(z)
        g = drop if gate is None else drop * gate.unsqueeze(1)
        saved.pre.append(z)
        saved.post.append(a)
        saved.gates.append(g)
        h = a * g
    return h, saved


def _cross_entropy(hw: Tensor, hb: Tensor, h: Tensor, y: Tensor, weight: Tensor,
                   class_bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """The head's logits, each run's weighted cross-entropy, and its gradient in the logits."""
    logits = torch.baddbmm(hb.unsqueeze(1), h, hw.transpose(1, 2))
    if class_bias is not None:
        logits = logits + class_bias.unsqueeze(1)
    logp = torch.log_softmax(logits, dim=-1)
    loss = -(logp.gather(-1, y.unsqueeze(-1)).squeeze(-1) * weight).sum(1)
    d = torch.exp(logp)
    d = (d - torch.nn.functional.one_hot(y, d.shape[-1]).to(d)) * weight.unsqueeze(-1)
    return loss, logits, d


def _backward_features(layers: Sequence[Pair], d: Tensor, saved: _Saved, drops: Sequence[Tensor], *,
                       keeps: Sequence[Pair] | None, penalty, masked: bool) -> tuple[list[Tensor], list[Tensor]]:
    """From ``d``, the gradient in the last hidden layer's output, back to the input: each
    layer's (weight, bias) gradients, EWC's penalty added and the keep multipliers applied, in
    ``layers``' order; and, when masked, the gradient in each layer's mask values (first to last)."""
    mask_grads: list[Tensor] = []
    layer_grads: list[Tensor] = []
    for index in range(len(layers) - 1, -1, -1):
        w, b = layers[index]
        if masked:  # d/da of h = relu(z) * drop * a
            mask_grads.append((d * saved.post[index] * drops[index]).sum(1))
        dz = d * saved.gates[index] * (saved.pre[index] > 0)
        gw, gb = torch.bmm(dz.transpose(1, 2), saved.inputs[index]), dz.sum(1)
        if penalty is not None:
            fisher, anchor, lam = penalty
            (fw, fb), (aw, ab) = fisher[index], anchor[index]
            gw = gw + _col(lam, 3) * fw * (w - aw)
            gb = gb + _col(lam, 2) * fb * (b - ab)
        if keeps is not None:
            kw, kb = keeps[index]
            gw, gb = gw * kw, gb * kb
        layer_grads = [gw, gb, *layer_grads]
        if index > 0:
            d = torch.bmm(dz, w)
    return layer_grads, mask_grads[::-1]


def _embedding_gradient(mask_grads: Sequence[Tensor], mask: Tensor, embedding: Tensor, s: Tensor,
                        reg_weights: Tensor | None, reg_norm: Tensor | None, hyper: Hyper) -> Tensor:
    """The embedding's gradient: the mask's (plus the regulariser's), through the sigmoid
    a = sigmoid(s e), times HAT's cosh compensation."""
    dmask = torch.cat(list(mask_grads), dim=1)
    if reg_weights is not None:
        dmask = dmask + M.regulariser_gradient(reg_weights, _col(reg_norm, 2), _col(hyper.lamb, 2))
    compensation = M.embedding_compensation(embedding, _col(s, 2), _col(hyper.smax, 2), _col(hyper.thres_cosh, 2))
    return dmask * mask * (1.0 - mask) * _col(s, 2) * compensation


def _clip_and_descend(params: Sequence[Tensor], grads: Sequence[Tensor], *, clip: Tensor, lr: Tensor) -> None:
    """Clip the whole gradient's norm per run (torch.nn.utils.clip_grad_norm_'s rule), then SGD
    in place."""
    norm = torch.sqrt(sum((g * g).flatten(1).sum(1) for g in grads))
    scale = torch.where(norm > clip, clip / (norm + 1e-6), torch.ones_like(norm)) * lr
    for p, g in zip(params, grads):
        p.sub_(_col(scale, g.dim()) * g)


def _clamp_embedding(embedding: Tensor, thres_emb: Tensor, lr: Tensor) -> None:
    """Clamp each stepped run's embedding to +-thres_emb in place; runs with ``lr`` 0 stay exactly."""
    limit = _col(thres_emb, 2)
    clamped = torch.minimum(torch.maximum(embedding, -limit), limit)
    embedding.copy_(torch.where(_col(lr > 0, 2), clamped, embedding))


def compiler_available(device: str = "cpu") -> bool:
    """Inductor's CPU code needs a C++ compiler; CUDA needs Triton. Without them: eager."""
    import shutil

    if device == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
    return shutil.which(os.environ.get("CXX", "g++")) is not None or shutil.which("c++") is not None


_compiled = None


def compiled():
    """``sgd_step`` under ``torch.compile`` (one per process; graphs are cached per shape).

    Inductor's generated code is kept in ``prm.caches.cache_dir("inductor")`` unless
    TORCHINDUCTOR_CACHE_DIR says otherwise, so a new process loads it instead of compiling:
    about 20 s for the first graph on a cold cache, under 3 s on a warm one (bench/engine.py)."""
    global _compiled
    if _compiled is None:
        if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
            from prm.caches import cache_dir

            try:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir("inductor"))
            except OSError:  # an unwritable cache: inductor's default in the temp folder
                pass
        import torch._dynamo

        # one graph per shape: head sizes, batch sizes, stack sizes and the kinds of step
        # (masked, head only, unmasked, EWC) of every run a process trains; the default limit
        # of 8 is reached by a compare of several methods, and fullgraph then fails hard
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
        torch._dynamo.config.accumulated_recompile_limit = max(
            torch._dynamo.config.accumulated_recompile_limit, 1024)
        _compiled = torch.compile(sgd_step, fullgraph=True, dynamic=False)
    return _compiled


def use_compiled(mode: str, *, config, sequence, runs: int = 1) -> bool:
    """Whether a run (of a stack of ``runs``) steps compiled: ``on``/``off`` as said, ``auto``
    by :func:`compile_pays`."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile: unknown mode {mode!r}; choose one of {', '.join(COMPILE_MODES)}")
    if mode == "off":
        return False
    if not compiler_available(torch.device(config.device).type):
        if mode == "on":
            warnings.warn("compile on: no C++ compiler (g++ or $CXX) for torch.compile; stepping eagerly")
        return False
    return mode == "on" or compile_pays(config=config, sequence=sequence, runs=runs)


EPOCHS_PER_TASK = 100
"""Training epochs a task takes on average under HAT's patience schedule (HAT on digits-mixed:
9537 steps over 96 batches an epoch of all ten tasks), for estimating a run's steps."""

COMPILE_PAYS_STEPS = {"cpu": 15_000}
"""Steps above which compiling pays, per device type (bench/engine.py, docs/speed.md). Measured
on a 2-core CPU, HAT on digits-mixed (about 10 000 steps) took 8.6 s eager and 5.8 s compiled
once the graph existed, but a new process pays about 3 s (warm cache; about 10 s a graph the
first time on a machine) before its first compiled step: one digits run breaks even, two in a
process or a run five times as long gain. CUDA: no GPU was available to measure, so eager."""


def compile_pays(*, config, sequence, runs: int = 1) -> bool:
    """``auto``: compile when the estimated steps of the run, times the ``runs`` of its stack
    (each compiled call serves all of them), exceed its device's measured break-even.

    A rule of the config, the sequence and the stack alone, never of timings taken at run
    time, so that the same command always takes the same path (compiled and eager agree
    only to float rounding)."""
    limit = COMPILE_PAYS_STEPS.get(torch.device(config.device).type)
    if limit is None:
        return False
    batch = config.optim.batch_size
    steps = sum(-(-len(task.x_train) // batch) for task in sequence.tasks) * EPOCHS_PER_TASK
    return steps * runs > limit
