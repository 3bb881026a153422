"""One HAT/PRM training step written the plain way: one run, ordinary torch, autograd.

Why it exists: every run trains with ``prm.step.sgd_step``, which is written for speed (R runs
at once, the backward pass spelt out by hand) and is therefore hard to read. This is the same
step as a reader would write it from the method's description (``docs/method.md``), and it is
what the fast step is checked against: ``tests/test_step.py`` compares the two parameter by
parameter, for every run of a stack. Nothing trains with it; it is the one place to read what
a step does.

A step, in order:
  forward    h_l = relu(W_l h_{l-1} + b_l) * dropout_l * a_l,  a_l = sigmoid(s e_l)  (``masks.task_mask``)
  objective  cross-entropy + lamb * ``masks.sparsity_regulariser`` + EWC's penalty
  gradients  autograd; then the rules of ``prm.masks``: each weight's and bias's gradient times
             its keep multiplier (``masks.layer_keeps`` of the protected mask, HAT's a_<=t-1 or
             PRM's relaxed p_<=t-1), the embedding's times ``masks.embedding_compensation``
  update     clip the whole gradient's norm at ``clip`` (clip_grad_norm_'s rule), p -= lr * g,
             clamp the embedding to +-thres_emb.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from prm import masks as M

Pair = tuple[Tensor, Tensor]  # (weight out x in, bias out) of one layer


@dataclass(frozen=True, kw_only=True)
class Stepped:
    """A run's parameters after one step (new tensors, the inputs untouched) and its data loss."""

    layers: list[Pair]
    head: Pair
    embedding: Tensor | None
    loss: float


def dropout_masks(noise: Tensor, rates: Tensor, sizes: Sequence[int]) -> list[Tensor]:
    """Inverted dropout from uniform draws: unit u is dropped when its draw is below its layer's
    rate, kept ones are scaled by 1 / (1 - rate); one mask per block of ``sizes`` (the input,
    then each hidden layer). The draws come from outside so that the fast step sees the same."""
    return list(torch.split((noise >= rates).float() / (1.0 - rates), list(sizes), dim=-1))


def ewc_penalty(layers: Sequence[Pair], fisher: Sequence[Pair], anchor: Sequence[Pair], lam: float) -> Tensor:
    """EWC's lam/2 * sum F (p - anchor)^2 over the hidden layers' weights and biases."""
    return lam / 2 * sum((f * (p - a) ** 2).sum() for (fw, fb), (aw, ab), (w, b) in zip(fisher, anchor, layers)
                         for f, a, p in ((fw, aw, w), (fb, ab, b)))


def _logits(layers: Sequence[Pair], head: Pair, masks: Sequence[Tensor] | None, x: Tensor,
            drops: Sequence[Tensor]) -> Tensor:
    """The masked MLP's forward pass with dropout (``prm.model.MaskedMLP``'s, dropout made explicit)."""
    h = x * drops[0]
    for index, (w, b) in enumerate(layers):
        h = torch.relu(F.linear(h, w, b)) * drops[index + 1]
        if masks is not None:
            h = h * masks[index]
    return F.linear(h, *head)


def reference_step(*, layers: Sequence[Pair], head: Pair, embedding: Tensor | None, x: Tensor, y: Tensor,
                   noise: Tensor, rates: Tensor, s: float, lr: float, smax: float, lamb: float, thres_cosh: float,
                   thres_emb: float, clip: float, protect: Sequence[Tensor] | None = None,
                   used: Sequence[Tensor] | None = None,
                   penalty: tuple[Sequence[Pair], Sequence[Pair], float] | None = None,
                   train_features: bool = True) -> Stepped:
    """One SGD step of one run on one batch (``x``: B x inputs, ``y``: B); returns the new parameters.

    ``embedding``: the task's embeddings, all layers end to end (None: an unmasked network).
    ``noise`` (B x (inputs + units)) and ``rates`` (inputs + units): dropout's draws and each
    unit's drop probability (:func:`dropout_masks`). ``protect``: one mask per layer whose
    units are held (None frees every weight); ``used``: the earlier tasks' masks the
    regulariser spares (None: the first task, all units free). ``penalty``: EWC's (fisher,
    anchor, lambda) per hidden layer. ``train_features`` False trains the head alone (DTD's
    first stage): no regulariser, layers and embedding left as they are.
    """
    layers = [(w.clone().requires_grad_(), b.clone().requires_grad_()) for w, b in layers]
    head = (head[0].clone().requires_grad_(), head[1].clone().requires_grad_())
    embedding = None if embedding is None else embedding.clone().requires_grad_()
    widths = [w.shape[0] for w, _ in layers]
    masks = None if embedding is None else list(torch.split(M.task_mask(embedding, s), widths))
    drops = dropout_masks(noise, rates, [x.shape[-1], *widths])
    loss = F.cross_entropy(_logits(layers, head, masks, x, drops), y)
    total = loss
    if masks is not None and train_features:
        total = total + lamb * M.sparsity_regulariser(masks, used)
    if penalty is not None:
        total = total + ewc_penalty(layers, *penalty)
    features = [p for pair in layers for p in pair] if train_features else []
    masked = [embedding] if train_features and embedding is not None else []
    trained = [*features, *head, *masked]
    grads = list(torch.autograd.grad(total, trained))
    if train_features and protect is not None:
        keeps = [k for pair in M.layer_keeps(protect) for k in pair]
        grads[:len(features)] = [g * k for g, k in zip(grads, keeps)]
    if masked:
        grads[-1] = grads[-1] * M.embedding_compensation(embedding.detach(), s, smax, thres_cosh)
    stepped = _descend(trained, grads, lr=lr, clip=clip)
    if masked:
        stepped[-1] = stepped[-1].clamp(-thres_emb, thres_emb)
    if not train_features:  # the layers and the embedding stay as they were
        kept = [p.detach() for pair in layers for p in pair]
        stepped = kept + stepped + ([] if embedding is None else [embedding.detach()])
    n = 2 * len(layers)
    return Stepped(layers=list(zip(stepped[:n:2], stepped[1:n:2])), head=(stepped[n], stepped[n + 1]),
                   embedding=None if embedding is None else stepped[n + 2], loss=float(loss.detach()))


def _descend(params: Sequence[Tensor], grads: Sequence[Tensor], *, lr: float, clip: float) -> list[Tensor]:
    """Clip the gradient's total norm at ``clip`` (torch.nn.utils.clip_grad_norm_'s rule), then
    SGD: each parameter's new value, in ``params``' order."""
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    factor = clip / (float(norm) + 1e-6) if norm > clip else 1.0
    return [(p - lr * factor * g).detach() for p, g in zip(params, grads)]
