"""Pure mask maths of HAT and PRM (``docs/method.md``), each rule written once.

Every function here is a pure function of tensors, so that each rule can be tested against
numbers worked out by hand and the engine stays a thin loop around them. Both training steps
use these rules: the readable one (``prm.reference``) and the fast one (``prm.step``), which
passes per-run columns (R x 1 tensors) where a rule takes a slope or a constant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def anneal_s(batch: int, n_batches: int, smax: float) -> float:
    """HAT's per-batch slope: s = 1/smax + (smax - 1/smax) * (b-1)/(B-1), b = batch + 1.

    It restarts every epoch. With a single batch there is no range to anneal over; we use
    smax, so the only step trains the mask at the sharpness it is evaluated with.
    """
    if n_batches <= 1:
        return smax
    return 1.0 / smax + (smax - 1.0 / smax) * batch / (n_batches - 1)


def task_mask(embedding: Tensor, s: float | Tensor) -> Tensor:
    """a_t = sigmoid(s * e_t): HAT's gate on a layer's units."""
    return torch.sigmoid(s * embedding)


def accumulate(previous: Tensor | None, mask: Tensor) -> Tensor:
    """a_<=t = max(a_t, a_<=t-1), elementwise; a_<=0 is all zeros."""
    return mask.clone() if previous is None else torch.maximum(previous, mask)


def relaxed_mask(task_masks: Sequence[Tensor], dissimilar: Sequence[int], width: int, *, relax: float = 1.0) -> Tensor:
    """PRM's p_<=t-1 = max over i in D_t of a_i; zeros when D_t is empty (nothing protected).

    ``relax`` < 1 relaxes the similar tasks' units only partly: p = max(p_D, (1 - relax) a_S)
    with a_S the accumulated mask of the earlier tasks outside D_t, so a weight that only
    similar tasks use has its gradient scaled by ``relax`` instead of freed (1, the paper)
    or frozen (0, HAT).
    """
    out = torch.zeros(width)
    called = set(dissimilar)
    for i, mask in enumerate(task_masks):
        if i in called:
            out = torch.maximum(out, mask.to(out))
        elif relax < 1.0:
            out = torch.maximum(out, (1.0 - relax) * mask.to(out))
    return out


def weight_keep(mask_out: Tensor, mask_in: Tensor | None) -> Tensor:
    """Gradient multiplier of a weight matrix (out x in): 1 - min(a_out[i], a_in[j]).

    ``mask_in`` is None for the first layer, whose inputs are not masked: then 1 - a_out[i].
    """
    if mask_in is None:
        return (1.0 - mask_out).unsqueeze(1)
    return 1.0 - torch.minimum(mask_out.unsqueeze(1), mask_in.unsqueeze(0))


def bias_keep(mask_out: Tensor) -> Tensor:
    """Gradient multiplier of a bias: 1 - a_out."""
    return 1.0 - mask_out


def layer_keeps(protect: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """(weight multiplier, bias multiplier) for every masked layer, from one mask per layer."""
    keeps = []
    for index, mask_out in enumerate(protect):
        mask_in = protect[index - 1] if index > 0 else None
        keeps.append((weight_keep(mask_out, mask_in), bias_keep(mask_out)))
    return keeps


def first_claimed(task_masks: Sequence[Tensor]) -> list[Tensor]:
    """Per earlier task i, the units it claimed first: a_<=i - a_<=i-1 rounds to 1 (> 0.5).

    CAT's bookkeeping: a unit belongs to the task that first took it, whoever uses it later.
    """
    out, previous = [], None
    for mask in task_masks:
        current = accumulate(previous, mask)
        out.append((current if previous is None else current - previous) > 0.5)
        previous = current
    return out


def cat_free(task_masks: Sequence[Tensor], dissimilar: Sequence[int]) -> Tensor:
    """CAT's T: 1 on every unit no task in ``dissimilar`` claimed first (:func:`first_claimed`),
    0 on the rest; units first claimed by similar tasks, or by none, stay free."""
    free = torch.ones_like(task_masks[0])
    called = set(dissimilar)
    for i, claimed in enumerate(first_claimed(task_masks)):
        if i in called:
            free = free * (~claimed).to(free)
    return free


def cat_keeps(accumulated: Sequence[Tensor], free: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """CAT's gradient multipliers, per layer: max(HAT's 1 - min(a_out, a_in), min(T_out, T_in)).

    A weight moves when HAT would let it (an end unused by every earlier task) or when both
    its ends are free in T (:func:`cat_free`): claimed first by tasks similar to the new one.
    Unlike PRM's relaxed mask, which is built from the dissimilar tasks' masks alone, a unit
    a dissimilar task uses but a similar task claimed first stays free here; a weight from a
    free unit into a unit a dissimilar task claimed stays protected. The first layer's inputs
    are not masked: there T_out alone decides, as HAT's 1 - a_out does.
    """
    keeps = []
    for index, ((keep_w, keep_b), free_out) in enumerate(zip(layer_keeps(accumulated), free)):
        free_w = free_out.unsqueeze(1) if index == 0 else torch.minimum(free_out.unsqueeze(1),
                                                                        free[index - 1].unsqueeze(0))
        keeps.append((torch.maximum(keep_w, free_w.expand_as(keep_w)), torch.maximum(keep_b, free_out)))
    return keeps


def embedding_compensation(embedding: Tensor, s: float | Tensor, smax: float | Tensor,
                           thres_cosh: float | Tensor) -> Tensor:
    """HAT's Eq. 4 factor: smax (cosh(clamp(s e)) + 1) / (s (cosh(e) + 1)).

    It undoes the vanishing sigmoid gradient at low s, so that embeddings learn at a pace
    that does not depend on where s is in its annealing.
    """
    num = torch.cosh(torch.clamp(s * embedding, -thres_cosh, thres_cosh)) + 1.0
    den = torch.cosh(embedding) + 1.0
    return smax / s * num / den


def regulariser_weights(used: Sequence[Tensor] | None, widths: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Per-unit weights w and normaliser n with R = sum(a_t * w) / n (see below).

    They depend only on the masks of earlier tasks, so the engine computes them once per
    training phase and each step costs one product and one sum.
    """
    if used is None:
        total = sum(widths)
        return torch.ones(total), torch.tensor(float(total))
    free = 1.0 - torch.cat(list(used))
    return free, torch.clamp(free.sum(), min=1.0)


def regulariser_gradient(weights: Tensor, norm: Tensor, lamb: float | Tensor) -> Tensor:
    """d(lamb R)/da = lamb w / n: what the regulariser adds to each mask value's gradient
    (w, n from :func:`regulariser_weights`), for a step that writes its backward pass by hand."""
    return lamb * weights / norm


def sparsity_regulariser(masks: Sequence[Tensor], used: Sequence[Tensor] | None) -> Tensor:
    """R = sum a_t (1 - a_used) / sum (1 - a_used), over all layers and units.

    It penalises only units no earlier task holds, normalised by the free capacity; for the
    first task (``used`` None) it is the mean of all mask values. When no capacity is free
    the denominator is floored at one unit, so R stays finite (and is then ~0).
    """
    weights, norm = regulariser_weights(used, [len(m) for m in masks])
    return (torch.cat(list(masks)) * weights).sum() / norm


def capacity_used(mask: Tensor, threshold: float = 0.5) -> float:
    """Fraction of a layer's units an (accumulated) mask holds, counting a > threshold."""
    return float((mask > threshold).float().mean())
