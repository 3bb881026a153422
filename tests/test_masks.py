"""HAT/PRM mask maths (prm.masks) against numbers worked out by hand (docs/method.md, 'HAT' and 'PRM')."""

import math

import pytest
import torch

from prm import masks as M


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol)


def test_anneal_s_runs_from_one_over_smax_to_smax_within_an_epoch():
    # B = 5 batches, smax = 400: s = 1/400 + (400 - 1/400) * b / 4
    assert M.anneal_s(0, 5, 400.0) == pytest.approx(0.0025)
    assert M.anneal_s(2, 5, 400.0) == pytest.approx(0.0025 + 399.9975 / 2)
    assert M.anneal_s(4, 5, 400.0) == pytest.approx(400.0)
    assert M.anneal_s(0, 1, 400.0) == 400.0  # single batch: no range, evaluation sharpness


def test_task_mask_is_sigmoid_of_scaled_embedding():
    e = torch.tensor([0.0, math.log(3.0), -math.log(3.0)])
    assert close(M.task_mask(e, 1.0), [0.5, 0.75, 0.25])
    assert close(M.task_mask(torch.tensor([6.0, -6.0]), 400.0), [1.0, 0.0])


def test_accumulate_is_elementwise_max_starting_from_zero():
    first = torch.tensor([0.2, 0.9])
    assert close(M.accumulate(None, first), [0.2, 0.9])
    assert close(M.accumulate(first, torch.tensor([0.5, 0.1])), [0.5, 0.9])


def test_relaxed_mask_takes_only_the_dissimilar_tasks():
    masks = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.3, 1.0])]
    assert close(M.relaxed_mask(masks, [0, 2], 3), [1.0, 0.3, 1.0])
    assert close(M.relaxed_mask(masks, [], 3), [0.0, 0.0, 0.0])  # all similar: nothing protected


def test_weight_keep_is_one_minus_min_of_out_and_in_masks():
    out, inp = torch.tensor([1.0, 0.5]), torch.tensor([0.2, 1.0, 0.0])
    assert close(M.weight_keep(out, inp), [[0.8, 0.0, 1.0], [0.8, 0.5, 1.0]])
    # first layer: the input is not masked, only the output unit counts
    assert close(M.weight_keep(torch.tensor([1.0, 0.25]), None), [[0.0], [0.75]])
    assert close(M.bias_keep(torch.tensor([1.0, 0.25])), [0.0, 0.75])


def test_layer_keeps_pairs_each_layer_with_the_previous_layers_mask():
    protect = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0, 1.0])]
    (w0, b0), (w1, b1) = M.layer_keeps(protect)
    assert close(w0, [[0.0], [1.0]]) and close(b0, [0.0, 1.0])
    assert close(w1, [[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]]) and close(b1, [1.0, 0.0, 0.0])


def test_embedding_compensation_matches_eq4():
    # e = 0: cosh terms cancel, factor = smax / s
    assert close(M.embedding_compensation(torch.tensor([0.0]), 1.0, 400.0, 50.0), [400.0])
    # e = 1, s = 2, smax = 4: 4/2 * (cosh 2 + 1) / (cosh 1 + 1) = 2 * 4.762196 / 2.543081
    expected = 2 * (3.7621957 + 1) / (1.5430806 + 1)
    assert close(M.embedding_compensation(torch.tensor([1.0]), 2.0, 4.0, 50.0), [expected], tol=1e-4)
    # s e = 100 is clamped to 50 inside cosh
    clamped = 400.0 / 100.0 * (math.cosh(50.0) + 1) / (math.cosh(1.0) + 1)
    got = M.embedding_compensation(torch.tensor([1.0], dtype=torch.float64), 100.0, 400.0, 50.0)
    assert float(got) == pytest.approx(clamped, rel=1e-9)


def test_sparsity_regulariser_counts_only_free_units():
    # first task: the mean of every mask value, (0.5 + 1 + 0) / 3
    assert float(M.sparsity_regulariser([torch.tensor([0.5, 1.0]), torch.tensor([0.0])], None)) == pytest.approx(0.5)
    # unit 0 is held already: reg = (1*0 + 1*1 + 0*1) / (0 + 1 + 1) = 0.5
    reg = M.sparsity_regulariser([torch.tensor([1.0, 1.0, 0.0])], [torch.tensor([1.0, 0.0, 0.0])])
    assert float(reg) == pytest.approx(0.5)
    # no free capacity: the denominator is floored, the penalty is 0, never NaN
    full = M.sparsity_regulariser([torch.tensor([1.0, 1.0])], [torch.tensor([1.0, 1.0])])
    assert float(full) == 0.0


def test_regulariser_gradient_is_autograds_of_the_regulariser():
    """The hand-written step adds lamb w / n to the masks' gradient: d(lamb R)/da, as autograd says."""
    masks = [torch.tensor([0.2, 0.9, 0.5]), torch.tensor([0.7, 0.1])]
    used = [torch.tensor([1.0, 0.0, 0.3]), torch.tensor([0.0, 0.6])]
    leaves = [m.clone().requires_grad_() for m in masks]
    (0.75 * M.sparsity_regulariser(leaves, used)).backward()
    weights, norm = M.regulariser_weights(used, [3, 2])
    got = M.regulariser_gradient(weights, norm, 0.75)
    assert torch.allclose(got, torch.cat([m.grad for m in leaves]))
    assert close(got, 0.75 * torch.tensor([0.0, 1.0, 0.7, 1.0, 0.4]) / 3.1)


def test_capacity_used_counts_units_above_one_half():
    assert M.capacity_used(torch.tensor([0.9, 0.6, 0.5, 0.1])) == 0.5
