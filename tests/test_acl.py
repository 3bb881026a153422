"""ACL (prm.acl, prm.methods.acl): the difference loss and the gradient reversal against numbers
worked by hand, determinism, the ``parts`` record and its hostile copies, and the rule's
invariant: a task's private module and head never move after its task."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from prm.acl import Discriminator, SharedPrivate, difference_loss, reverse_gradient
from prm.config import ConfigError, ModelConfig, OptimConfig, RunConfig
from prm.engine import Job, train_sequence, train_together
from prm.methods import acl as A
from prm.run import RunWriter, load_run
from tests.conftest import tiny_config


def acl_config(**changes) -> RunConfig:
    return tiny_config(method="acl", **changes)


# ----------------------------------------------------------------------------- the rule, by hand


def test_difference_loss_by_hand():
    """S rows (3, 4) and (0, 2) become (0.6, 0.8) and (0, 1); P rows (2) and (5) become (1) and
    (1). S^T P = (0.6 + 0, 0.8 + 1) = (0.6, 1.8); the mean of the squares is (0.36 + 3.24) / 2 =
    1.8. The norms are constants for the gradient: dL/dS_n = P_n (S^T P)^T, each row then divided
    by its sample's norm: row 1 (0.6, 1.8) / 5 = (0.12, 0.36), row 2 (0.6, 1.8) / 2 = (0.3, 0.9)."""
    shared = torch.tensor([[3.0, 4.0], [0.0, 2.0]], requires_grad=True)
    private = torch.tensor([[2.0], [5.0]])
    loss = difference_loss(shared, private)
    assert float(loss.detach()) == pytest.approx(1.8, abs=1e-5)
    loss.backward()
    assert torch.allclose(shared.grad, torch.tensor([[0.12, 0.36], [0.3, 0.9]]), atol=1e-5)
    # uncorrelated over the batch: P's feature flips sign between two samples S sees alike
    assert float(difference_loss(torch.tensor([[2.0, 0.0], [2.0, 0.0]]), torch.tensor([[1.0], [-1.0]]))) == 0.0


def _hand_discriminator() -> Discriminator:
    """Width 1, hidden 1, task 0 (classes fake and task 0): z -> h = leaky(z) -> h -> (-h, h)."""
    dis = Discriminator(width=1, hidden=1, tasks=1)
    layers = [m for m in dis.layers if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer, w in zip(layers, ([[1.0]], [[1.0]], [[-1.0], [1.0]])):
            layer.weight.copy_(torch.tensor(w))
            layer.bias.zero_()
    return dis


def test_gradient_reversal_sign_by_hand():
    """z = 0.5 gives logits (-0.5, 0.5); the real label is 1 (task 0 + 1). p1 = 1 / (1 + e^-1) =
    0.731059, CE = log(1 + e^-1) = 0.313262, dCE/dz = (p0 - 0)(-1) + (p1 - 1)(1) = -0.537883
    without the reversal. Through it S receives +0.537883: a descent step lowers z and with it
    D's confidence in the real task (CE rises), while D's own last layer gets the plain
    gradient (p0 h, (p1 - 1) h) = (0.134471, -0.134471) and learns to recognise the task."""
    x = torch.tensor([2.0], requires_grad=True)
    (3.0 * reverse_gradient(x)).sum().backward()
    assert float(x.grad) == -3.0
    dis = _hand_discriminator()
    z = torch.tensor([[0.5]], requires_grad=True)
    loss = torch.nn.functional.cross_entropy(dis(z), torch.tensor([1]))
    assert float(loss.detach()) == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    loss.backward()
    assert float(z.grad) == pytest.approx(+0.537883, abs=1e-6)
    assert dis.layers[3].weight.grad.flatten().tolist() == pytest.approx([0.134471, -0.134471], abs=1e-6)
    with torch.no_grad():
        lower = torch.nn.functional.cross_entropy(dis(z - 0.1 * z.grad), torch.tensor([1]))
    assert float(lower) > float(loss.detach())


def test_objective_weighs_the_three_losses_and_trains_only_the_task_parts():
    torch.manual_seed(0)
    net = SharedPrivate(input_dim=4, hidden=(3, 3), private=2, head_sizes=[2, 2], input_dropout=0.0,
                        hidden_dropout=0.0, adv_weight=0.05, diff_weight=0.1)
    net.fresh_discriminator(1, hidden=5)
    assert net.discriminator.layers[3].out_features == 3  # fake, task 0, task 1
    x, y = torch.randn(6, 4), torch.tensor([0, 1] * 3)
    with torch.no_grad():
        data, adversarial, difference, _ = net.losses(x, y, 1)
        total, reported, _ = net.objective(x, y, 1)
    assert float(total) == pytest.approx(float(data + 0.05 * adversarial + 0.1 * difference), abs=1e-6)
    assert float(reported) == pytest.approx(float(data))
    names = {id(p) for p in net.trainable(1)}
    assert all(id(p) not in names for p in [*net.privates[0].parameters(), *net.heads[0].parameters(),
                                            *net.discriminator.parameters()])


# ----------------------------------------------------------------------------- settings


def test_acl_settings_are_validated():
    with pytest.raises(ConfigError, match="acl.adv_weight"):
        RunConfig(method="acl", acl=A.ACLConfig(adv_weight=-1.0))
    with pytest.raises(ConfigError, match="acl.private_ratio"):
        RunConfig(method="acl", acl=A.ACLConfig(private_ratio=0.0))
    with pytest.raises(ConfigError, match="acl.discriminator_ratio"):
        RunConfig(method="acl", model=ModelConfig(hidden=(256, 256)), acl=A.ACLConfig(discriminator_ratio=1000.0))
    with pytest.raises(ConfigError, match="acl.s_steps"):
        RunConfig(method="acl", acl=A.ACLConfig(s_steps=0))
    assert {r.name for r in A.METHOD.ranges} == {"adv_weight", "diff_weight"}


# ----------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A recorded 3-task run; per task, copies of its private module and head right after it,
    and the learner itself."""
    folder = tmp_path_factory.mktemp("acl") / "run"
    kept: list = []
    after = A.Adversarial.after

    def keep(self, task, model, plan, trajectory):
        parts = (self.learner.privates[task], self.learner.heads[task])
        kept.append((*({k: v.clone() for k, v in m.state_dict().items()} for m in parts), self.learner))
        return after(self, task, model, plan, trajectory)

    cfg = acl_config()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(A.Adversarial, "after", keep)
        result = train_sequence(cfg, emit=RunWriter(folder, config=cfg), compile="off")
    return folder, result, kept


def test_acl_learns_above_chance_and_never_moves_a_finished_tasks_private_module(recorded):
    folder, result, kept = recorded
    assert result.status == "finished"
    assert (result.test_acc[-1] > 0.75).all(), result.test_acc[-1]  # 2-way tasks: chance is 0.5
    learner = kept[-1][2]
    for task, (private, head, _) in enumerate(kept):
        for now, then in ((learner.privates[task], private), (learner.heads[task], head)):
            assert all(torch.equal(v, then[k]) for k, v in now.state_dict().items()), f"task {task} moved"


def test_parts_are_recorded_and_the_private_reading_of_a_finished_task_never_changes(recorded):
    folder, result, _ = recorded
    run = load_run(folder)
    assert run.warnings == ()
    parts = [run.own(t, "parts") for t in range(3)]
    for t, p in enumerate(parts):
        assert p.shape == (t + 1, 3) and p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
        assert np.allclose(p[:, 0], result.test_acc[t, : t + 1])  # both modules: the accuracy matrix
    for i in range(3):  # P_i and its head are frozen: the private-only accuracy of task i is fixed
        assert len({float(parts[t][i, 2]) for t in range(i, 3)}) == 1


@pytest.mark.parametrize("damage, message", [
    (np.zeros((3, 3), np.float32), "shape"),
    (np.full((2, 3), np.nan, np.float32), "not finite"),
    (np.full((2, 3), 1.5, np.float32), "outside"),
    (np.zeros((2, 3), np.int64), "dtype"),
])
def test_a_damaged_parts_array_is_dropped_with_a_warning_and_the_rest_kept(recorded, tmp_path, damage, message):
    copy = Path(shutil.copytree(recorded[0], tmp_path / "copy"))
    path = copy / "arrays" / "task_001.npz"
    arrays = dict(np.load(path))
    arrays["parts"] = damage
    np.savez_compressed(path, **arrays)
    run = load_run(copy)
    assert run.own(1, "parts") is None and run.own(0, "parts") is not None and run.own(2, "parts") is not None
    assert run.state.tasks_done == 3
    assert any("task_001.npz" in w and "parts" in w and message in w for w in run.warnings), run.warnings


def test_acl_runs_are_deterministic_alone_and_together():
    cfg = acl_config(optim=OptimConfig(max_epochs=3, patience=2))
    first = train_sequence(cfg, compile="off").test_acc
    assert np.array_equal(first, train_sequence(cfg, compile="off").test_acc, equal_nan=True)
    other = cfg.replace(seed=1)
    together = train_together([Job(config=cfg), Job(config=other)], compile="off")
    assert np.array_equal(together[0].test_acc, first, equal_nan=True)
    assert np.array_equal(together[1].test_acc, train_sequence(other, compile="off").test_acc, equal_nan=True)


def test_one_batch_is_s_steps_of_the_main_network_then_d_steps_of_the_discriminator(monkeypatch):
    """The original's schedule per batch; D, trained on S's features (label task + 1) against
    Gaussian samples (label 0), learns to tell them apart; the main network's steps leave it be."""
    from prm import trainer as T
    from prm.data import sequence_for
    from prm.learner import OwnPhase
    from prm.stack import Request

    cfg = acl_config(acl=A.ACLConfig(s_steps=3, d_steps=2))
    seq = sequence_for(cfg)
    ctx = T.Context(cfg=cfg, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                    emit=lambda e: None, should_stop=lambda: False,
                    torch_state=torch.Generator().manual_seed(0).get_state())
    data = [T.to_device(t, ctx.device) for t in seq.tasks]
    hooks = A.Adversarial(ctx=ctx, seq=seq, data=data, groups=[0, 1, 2])
    hooks.start(None)
    phase = hooks.phase(1)
    calls = []
    main, dis = OwnPhase.step, A.AdversarialPhase.discriminator_step
    monkeypatch.setattr(OwnPhase, "step", lambda self, r: (calls.append("S"), main(self, r))[1])
    monkeypatch.setattr(A.AdversarialPhase, "discriminator_step",
                        lambda self, r, lr, decay: (calls.append((lr, decay)), dis(self, r, lr, decay))[1])
    d = data[1]
    request = Request(phase=None, x=d["x_train"][:32], y=d["y_train"][:32], n=32, noise=None, lr=0.5, s=400.0)
    before = [p.detach().clone() for p in hooks.learner.discriminator.parameters()]
    phase.step(request)
    assert calls == ["S", "S", "S", (0.05, 0.01), (0.05, 0.01)]
    monkeypatch.undo()
    torch.manual_seed(0)
    learner, x = hooks.learner, d["x_train"][:32]
    for _ in range(30):
        phase.discriminator_step(request, lr=0.5, decay=0.01)
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.discriminator.parameters()))
    learner.eval()
    with torch.no_grad():
        real = learner.discriminator(learner.encode(x, 1)[0]).argmax(1)
        fake = learner.discriminator(torch.randn(32, cfg.model.hidden[-1])).argmax(1)
    assert (real == 2).float().mean() > 0.9 and (fake == 0).float().mean() > 0.9
