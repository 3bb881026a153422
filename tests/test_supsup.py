"""SupSup (prm.supsup, prm.methods.supsup): the top-k rule and its straight-through gradient
on a layer worked by hand, the initialisations, determinism, the recorded supermasks (and
damaged ones), learning, and the zero forgetting that fixed weights and frozen masks make exact.
"""

from __future__ import annotations

import contextlib
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prm import analysis
from prm.config import ConfigError, RunConfig
from prm.engine import Job, train_sequence, train_together
from prm.learner import OwnPhase
from prm.methods.supsup import SupSupConfig
from prm.run import RunWriter, load_run
from prm.stack import Request
from prm.supsup import SupermaskNet, fixed_weight, initial_scores, kept_count, supermask
from tests.conftest import tiny_config

# ----------------------------------------------------------------------------- the rule, by hand

# A 2 x 3 layer. |scores| = .3 .1 .05 / .4 .2 .02: the three largest are .4, .3 and .2.
SCORES = [[0.3, -0.1, 0.05], [-0.4, 0.2, -0.02]]
WEIGHT = [[1.0, 2.0, -1.0], [0.5, -1.0, 3.0]]


def test_kept_count_drops_the_rounded_down_share_as_the_authors_code_does():
    assert kept_count(6, 0.5) == 3
    assert kept_count(5, 0.5) == 3   # int(2.5) = 2 dropped: the count rounds up
    assert kept_count(6, 0.3) == 2   # int(4.2) = 4 dropped
    assert kept_count(10, 1.0) == 10 and kept_count(10, 0.01) == 1


def test_the_mask_keeps_the_top_k_by_magnitude_in_each_layer():
    scores = torch.tensor(SCORES)
    assert supermask(scores, 0.5).tolist() == [[1, 0, 0], [1, 1, 0]]
    assert supermask(scores, 0.3).tolist() == [[1, 0, 0], [1, 0, 0]]   # .4 and .3 only
    assert supermask(scores, 1.0).tolist() == [[1, 1, 1], [1, 1, 1]]


def test_the_straight_through_gradient_by_hand():
    """y = (W * M) x, L = c . y with x = (1, 2, 3), c = (1, -2), density 0.5.
    Forward: W * M = [[1, 0, 0], [.5, -1, 0]], y = (1, .5 - 2) = (1, -1.5), L = 1 + 3 = 4.
    dL/d(W*M) = c x^T = [[1, 2, 3], [-2, -4, -6]]; dL/dM = that * W = [[1, 4, -3], [-1, 4, -18]];
    the top-k passes it unchanged to |S|, and |.| multiplies by sign(S) = [[+, -, +], [-, +, -]]:
    dL/dS = [[1, -4, -3], [1, 4, 18]]. The dropped weights' scores learn too (-4, -3, 18)."""
    scores = torch.tensor(SCORES, requires_grad=True)
    x, c = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, -2.0])
    y = F.linear(x, torch.tensor(WEIGHT) * supermask(scores, 0.5))
    assert y.tolist() == [1.0, -1.5]
    loss = (c * y).sum()
    assert loss.item() == 4.0
    loss.backward()
    assert scores.grad.tolist() == [[1.0, -4.0, -3.0], [1.0, 4.0, 18.0]]


def test_one_step_of_a_task_moves_only_its_own_scores():
    """On the network: the fixed weights are buffers, the other tasks' scores stay, and a task
    whose masks are frozen answers exactly as before, however its scores are changed."""
    torch.manual_seed(0)
    net = _net()
    net.freeze(0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(8, 4)
    answer0 = net.eval()(x, 0, 1.0)[0].clone()
    phase = OwnPhase(learner=net, task=1, cfg=RunConfig(method="supsup"), rng=contextlib.nullcontext)
    for _ in range(3):
        phase.step(Request(phase=None, x=x, y=torch.tensor([0, 1] * 4), n=8, noise=None, lr=5.0, s=1.0))
    after = net.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == {"scores.0.1", "scores.1.1", "scores.2.1"}
    with torch.no_grad():
        for layer in net.scores:
            layer[0].mul_(-3.0)   # even task 0's scores changing cannot reach its frozen masks
    assert torch.equal(net.eval()(x, 0, 1.0)[0], answer0)


def _net(hidden=(3, 3)) -> SupermaskNet:
    return SupermaskNet(input_dim=4, hidden=hidden, head_sizes=[2, 2], density=0.5, weight_init="signed_constant",
                        score_init="kaiming_uniform", input_dropout=0.0, hidden_dropout=0.0)


def test_the_initialisations():
    torch.manual_seed(0)
    w = fixed_weight(50, 32, "signed_constant")
    assert torch.allclose(w.abs(), torch.full_like(w, math.sqrt(2 / 32))) and 0.3 < (w > 0).float().mean() < 0.7
    s = initial_scores(50, 32, "kaiming_uniform")
    assert s.abs().max() <= 1 / math.sqrt(32) and s.abs().max() > 0.9 / math.sqrt(32)
    assert fixed_weight(50, 32, "kaiming_normal").std() == pytest.approx(math.sqrt(2 / 32), rel=0.1)


@pytest.mark.parametrize("change, message", [
    ({"sparsity": 0.0}, "supsup.sparsity"), ({"sparsity": 1.5}, "supsup.sparsity"),
    ({"weight_init": "zeros"}, "supsup.weight_init"), ({"score_init": 3}, "supsup.score_init"),
])
def test_impossible_settings_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(method="supsup", supsup=SupSupConfig(**change))


# ----------------------------------------------------------------------------- runs


def supsup_config(**changes) -> RunConfig:
    return tiny_config(method="supsup", **changes)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One tiny run, recorded: (its folder, its result)."""
    folder = tmp_path_factory.mktemp("supsup") / "run"
    writer = RunWriter(folder, config=supsup_config())
    result = train_sequence(supsup_config(), emit=writer, compile="off")
    writer.close()
    return folder, result


def test_it_learns_and_forgets_nothing_exactly(recorded):
    _, result = recorded
    R = result.test_acc
    n = len(R)
    assert result.status == "finished"
    assert np.diag(R).mean() > 0.75  # 2-way tasks: chance is 0.5
    for i in range(n):  # fixed weights, frozen masks, a head per task: every column is constant
        assert all(R[j, i] == R[i, i] for j in range(i + 1, n)), R


def test_a_repeated_run_is_identical_and_stacked_runs_match_alone(recorded):
    _, first = recorded
    again = train_sequence(supsup_config(), compile="off")
    assert np.array_equal(first.test_acc, again.test_acc, equal_nan=True)
    configs = [supsup_config(seed=s) for s in (0, 1)]
    together = train_together([Job(config=c) for c in configs], compile="off")
    for c, t in zip(configs, together):
        alone = first if c.seed == 0 else train_sequence(c, compile="off")
        assert np.array_equal(t.test_acc, alone.test_acc, equal_nan=True)
        assert np.array_equal(t.val_acc, alone.val_acc, equal_nan=True)


def test_the_recorded_supermasks_unpack_to_masks_of_the_set_density(recorded):
    folder, _ = recorded
    run = load_run(folder)
    assert not [w for w in run.warnings if "supermask" in w], run.warnings
    shapes = [(32, 64), (32, 32)]  # digits: 64 inputs; tiny widths (32, 32)
    masks = {}
    for t in range(3):
        for layer, shape in enumerate(shapes):
            bits = run.own(t, "supermask", layer)
            assert bits.dtype == np.uint8 and bits.shape == (shape[0], math.ceil(shape[1] / 8))
            masks[t, layer] = analysis.unpack_mask(bits, shape)
            assert masks[t, layer].sum() == kept_count(shape[0] * shape[1], 0.5)
    assert not np.array_equal(masks[0, 0], masks[1, 0])  # each task its own mask


@pytest.mark.parametrize("damage, why", [
    (lambda a: a[:-3], "shape"),
    (lambda a: a[:, :-1], "shape"),
    (lambda a: np.full(a.shape, np.nan, dtype=np.float32), "dtype"),
    (lambda a: a.astype(np.uint16) * 300, "dtype"),
    (lambda a: a.astype(np.int8), "dtype"),
    (lambda a: a.reshape(-1), "shape"),
])
def test_a_damaged_supermask_is_dropped_with_a_warning_and_the_rest_kept(recorded, tmp_path, damage, why):
    folder = tmp_path / "copy"
    shutil.copytree(recorded[0], folder)
    path = folder / "arrays" / "task_001.npz"
    with np.load(path) as data:
        arrays = dict(data)
    arrays["supermask_l0"] = damage(arrays["supermask_l0"])
    np.savez(path, **arrays)
    run = load_run(folder)
    assert any("supermask_l0 ignored" in w and why in w for w in run.warnings), run.warnings
    assert run.own(1, "supermask", 0) is None
    assert run.own(1, "supermask", 1) is not None and run.own(0, "supermask", 0) is not None
    assert run.state.tasks_done == 3
