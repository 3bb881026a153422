"""EWC's Fisher diagonal, the rule the paper's EHAT (HAT's package) uses, against values worked
by hand: squared mini-batch gradients of the training loss, each weighted by its batch's size,
over the task's size; and the mean over tasks (docs/baselines.md, "EWC and the paper's EHAT")."""

from __future__ import annotations

import math

import pytest
import torch

from prm.methods.ewc import fisher_diagonal
from prm.model import MaskedMLP


def _net() -> MaskedMLP:
    """One input, one hidden ReLU unit h = relu(x), a two-class head with logits (h, -h)."""
    net = MaskedMLP(input_dim=1, hidden=(1,), head_sizes=[2], input_dropout=0.0, hidden_dropout=0.0, masked=False)
    with torch.no_grad():
        net.layers[0].weight.fill_(1.0)
        net.layers[0].bias.zero_()
        net.heads[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        net.heads[0].bias.zero_()
    return net


def _gradients(x: float, y: int) -> tuple[float, float]:
    """dL/dW and dL/db of the hidden unit for one image, by hand: logits (h, -h) give
    p(0) = sigmoid(2h); dL/dlogits = p - onehot(y); dL/dh = (p0 - [y=0]) - (p1 - [y=1])."""
    h = max(x, 0.0)
    p0 = 1.0 / (1.0 + math.exp(-2.0 * h))
    d_logit = (p0 - (y == 0), (1.0 - p0) - (y == 1))
    dh = d_logit[0] - d_logit[1]
    return dh * x, dh


DATA = {"x_train": torch.tensor([[1.0], [2.0]]), "y_train": torch.tensor([0, 1])}


def test_fisher_of_single_images_is_the_mean_squared_gradient():
    (gw1, gb1), (gw2, gb2) = _gradients(1.0, 0), _gradients(2.0, 1)
    assert (gw1, gb1) == pytest.approx((-0.238406, -0.238406), abs=1e-6)
    assert (gw2, gb2) == pytest.approx((3.928055, 1.964028), abs=1e-6)
    fisher = fisher_diagonal(_net(), 0, DATA, batch_size=1, smax=400.0)
    assert float(fisher[0]) == pytest.approx((gw1 ** 2 + gw2 ** 2) / 2, rel=1e-5)
    assert float(fisher[1]) == pytest.approx((gb1 ** 2 + gb2 ** 2) / 2, rel=1e-5)


def test_fisher_of_a_batch_squares_its_mean_gradient_weighted_by_its_size():
    (gw1, gb1), (gw2, gb2) = _gradients(1.0, 0), _gradients(2.0, 1)
    fisher = fisher_diagonal(_net(), 0, DATA, batch_size=2, smax=400.0)
    assert float(fisher[0]) == pytest.approx(((gw1 + gw2) / 2) ** 2 * 2 / 2, rel=1e-5)  # 1.84482^2 = 3.40336
    assert float(fisher[0]) == pytest.approx(3.403362, rel=1e-5)
    assert float(fisher[1]) == pytest.approx(((gb1 + gb2) / 2) ** 2, rel=1e-5)
