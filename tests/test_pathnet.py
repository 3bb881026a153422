"""PathNet (prm.pathnet, prm.methods.pathnet): the forward pass, the freezing rule and the genetic
rules against cases worked out by hand; then whole runs: determinism, stacking, learning with no
forgetting at all, and recorded paths that readers check."""

from __future__ import annotations

import contextlib
import shutil

import numpy as np
import pytest
import torch

from prm import pathnet as P
from prm.config import ConfigError, ModelConfig, RunConfig
from prm.data import sequence_for
from prm.engine import Job, train_sequence, train_together
from prm.events import EpochEnd, TaskArrays, TaskEnd
from prm.methods.pathnet import PathNetConfig
from prm.run import RunWriter, load_run
from prm.stack import Request
from prm.trainer import Context, build_model, run_alone, to_device
from prm.tune import apply_params, search_space
from tests.conftest import tiny_config

SMALL = PathNetConfig(generations=2, epochs=2)


def pathnet_config(**changes) -> RunConfig:
    return tiny_config(method="pathnet", pathnet=SMALL).replace(**changes)


# ----------------------------------------------------------------------------- the network, by hand


def _hand_network() -> P.ModularMLP:
    """2 inputs, two layers of 3 modules of 2 units (expand 0.5 of width 4), two 2-way heads,
    no dropout. Layer 1: module 0 = identity, 1 = 2 x identity + 1, 2 = -identity. Layer 2:
    module 0 swaps its inputs and adds (0.5, 0), 1 = 2 x identity, 2 = 10 x identity. Head 0 and
    head 1: identity, no bias."""
    net = P.ModularMLP(input_dim=2, hidden=(4, 4), modules=3, expand=0.5, head_sizes=[2, 2],
                       input_dropout=0.0, hidden_dropout=0.0)
    eye = torch.eye(2)
    with torch.no_grad():
        net.weights[0].copy_(torch.stack([eye, 2 * eye, -eye]))
        net.biases[0].copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
        net.weights[1].copy_(torch.stack([eye.flip(0), 2 * eye, 10 * eye]))
        net.biases[1].copy_(torch.tensor([[0.5, 0.0], [0.0, 0.0], [0.0, 0.0]]))
        for head in net.heads:
            head.weight.copy_(eye)
            head.bias.zero_()
    return net


def test_the_forward_pass_sums_the_paths_modules_only():
    """x = (1, -2). Layer 1 on modules {0, 2}: relu(1, -2) + relu(-1, 2) = (1, 0) + (0, 2) = (1, 2)
    (module 1 would add relu(3, -3) = (3, 0)). Layer 2 on {0, 1}: relu((2, 1) + (0.5, 0)) +
    relu(2 x (1, 2)) = (2.5, 1) + (2, 4) = (4.5, 5) (module 2 would add (10, 20)). A repeated gene
    names its module once."""
    net = _hand_network().eval()
    x = torch.tensor([[1.0, -2.0]])
    for genotype in ([[0, 2], [0, 1]], [[2, 0, 2], [1, 0, 0]]):
        net.paths[0] = net.route(np.array(genotype))
        logits, _ = net(x, 0)
        assert logits.tolist() == [[4.5, 5.0]]
    net.paths[0] = net.route(np.array([[1], [2]]))  # relu(3, -3) = (3, 0); 10 x (3, 0)
    assert net(x, 0)[0].tolist() == [[30.0, 0.0]]
    assert net.path_matrix(0).tolist() == [[0, 1, 0], [0, 0, 1]] and net.path_matrix(0).dtype == np.uint8


def test_frozen_modules_and_other_heads_get_no_update_and_the_free_path_does():
    """Task 0 keeps modules {0, 2} of layer 1 and {0} of layer 2. Task 1 trains the path
    {0, 1} / {0, 1}: of its modules only the free ones (layer 1: 1; layer 2: 1) move; module 2
    of layer 1 is off the path, task 0's head is not task 1's: nothing else moves. After the
    task, resetting the free modules puts back the first draw of every module no task kept."""
    net = _hand_network()
    net.paths[0] = net.route(np.array([[0, 2], [0, 0]]))
    net.freeze(0)
    assert net.frozen.tolist() == [[True, False, True], [True, False, False]]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.tensor([[1.0, 2.0], [2.0, 1.0], [0.5, 3.0]]), torch.tensor([0, 1, 1])
    phase = P.PathPhase(learner=net, task=1, cfg=RunConfig(method="pathnet"), rng=contextlib.nullcontext,
                        genotype=np.array([[0, 1], [0, 1]]))
    phase.step(Request(phase=None, x=x, y=y, n=3, noise=None, s=1.0, lr=0.5))
    moved = {k: ~torch.isclose(v, before[k]).reshape(v.shape[0], -1).all(1) for k, v in net.state_dict().items()
             if k.startswith(("weights", "biases"))}
    assert moved["weights.0"].tolist() == [False, True, False] and moved["biases.0"].tolist() == [False, True, False]
    assert moved["weights.1"].tolist() == [False, True, False] and moved["biases.1"].tolist() == [False, True, False]
    assert torch.equal(net.heads[0].weight, before["heads.0.weight"])
    assert not torch.equal(net.heads[1].weight, before["heads.1.weight"])
    net.reset_free()  # the "first draw" is the random one __init__ made before the hand values
    for layer, free in ((0, 1), (1, 1), (1, 2)):
        assert torch.equal(net.weights[layer][free], net.initial[layer][0][free])
    assert torch.equal(net.weights[0][0], torch.eye(2)) and torch.equal(net.weights[0][2], -torch.eye(2))


# ----------------------------------------------------------------------------- the genetic rules, by hand


def test_mutation_moves_the_genes_drawn_below_the_probability_wrapping_round_m():
    """M = 16, probability 1/6 = 0.1667 (N = 3, two layers). Draws below it: gene (0, 0) at 0.10
    moves 0 - 2 = -2 -> 14; (0, 2) at 0.01 moves 15 + 2 = 17 -> 1; (1, 1) at 0.16 moves 7 - 1 = 6.
    (1, 2) at 0.17 is just above: 9 stays, as do the others."""
    genotype = np.array([[0, 5, 15], [3, 7, 9]])
    uniforms = np.array([[0.10, 0.50, 0.01], [0.90, 0.16, 0.17]])
    shifts = np.array([[-2, 1, 2], [2, -1, 1]])
    child = P.mutate(genotype, modules=16, probability=1 / 6, uniforms=uniforms, shifts=shifts)
    assert child.tolist() == [[14, 5, 1], [3, 6, 9]]
    assert genotype.tolist() == [[0, 5, 15], [3, 7, 9]]  # the winner itself is untouched
    draws = P.mutation_draws((2, 3), torch.Generator().manual_seed(0))
    assert draws[0].shape == (2, 3) and ((draws[1] >= -2) & (draws[1] <= 2)).all()


def test_the_tournament_keeps_the_lower_loss_and_the_elite_on_a_tie():
    fitness = [0.3, 0.2, 0.5, 0.5]
    assert P.tournament(fitness, [(0, 1), (2, 3)], elite=1) == [(1, 0), (2, 3)]
    assert P.tournament(fitness, [(0, 1), (2, 3)], elite=3) == [(1, 0), (3, 2)]
    assert sorted(sum(P.pairs(6, torch.Generator().manual_seed(1)), ())) == list(range(6))
    genotype = P.random_genotype(layers=2, modules=16, active=3, generator=torch.Generator().manual_seed(0))
    assert genotype.shape == (2, 3) and all(len(set(row)) == 3 for row in genotype.tolist())


def test_evolution_ends_on_the_elites_state_and_path():
    """After the tournaments the network holds the state of the lowest validation loss seen, and
    the winning genotype scores exactly that loss (the last fitness entry); the curve never rises."""
    cfg, events = pathnet_config(), []
    ctx = Context(cfg=cfg, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                  emit=events.append, should_stop=lambda: False,
                  torch_state=torch.Generator().manual_seed(0).get_state())
    seq = sequence_for(cfg)
    data = to_device(seq.tasks[0], ctx.device)
    net = P.ModularMLP(input_dim=seq.input_dim, hidden=cfg.model.hidden, modules=16, expand=0.258,
                       head_sizes=[2] * 3, input_dropout=0.2, hidden_dropout=0.5)
    model = build_model(cfg, seq, masked=False, device=ctx.device)
    found = run_alone(ctx, model, P.evolve(ctx, model, net, 0, data, SMALL))
    assert 1 <= len(found.fitness) <= SMALL.generations and found.fitness == sorted(found.fitness, reverse=True)
    phase = P.PathPhase(learner=net, task=0, cfg=cfg, rng=contextlib.nullcontext, genotype=found.genotype)
    assert phase.score(data["x_val"], data["y_val"])[0] == found.fitness[-1]
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert [e.epoch for e in epochs] == list(range(found.epochs)) and {e.phase for e in epochs} == {"evolve"}


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize("change, field", [
    ({"active": 17}, "pathnet.active"), ({"population": 3}, "pathnet.population"),
    ({"modules": 0}, "pathnet.modules"),
    ({"mutation": -1.0}, "pathnet.mutation"), ({"expand": 0.001}, "pathnet.expand"),
    ({"generations": 0}, "pathnet.generations"), ({"epochs": 1.5}, "pathnet.epochs"),
])
def test_impossible_settings_are_refused_naming_the_field(change, field):
    with pytest.raises(ConfigError, match=field):
        RunConfig(method="pathnet", pathnet=PathNetConfig(**change))


def test_settings_round_trip_and_the_tuned_mutation_is_a_valid_config():
    cfg = RunConfig(method="pathnet", pathnet=PathNetConfig(mutation=0.25))
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert "mutation" in [r.name for r in search_space("pathnet")]
    assert apply_params(RunConfig(method="pathnet"), {"mutation": 2.5}).pathnet.mutation == 2.5
    # more expected moves than genes (3 genes a layer, one layer): every gene moves, a valid config, so
    # that no sampled value of the tuned range can end a study
    narrow = RunConfig(method="pathnet", model=ModelConfig(hidden=(64,)), pathnet=PathNetConfig(active=1))
    assert apply_params(narrow, {"mutation": 2.9}).pathnet.mutation == 2.9


# ----------------------------------------------------------------------------- whole runs


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One recorded 3-task run: its folder, its result and its events."""
    folder = tmp_path_factory.mktemp("pathnet") / "run"
    events: list = []
    writer = RunWriter(folder, config=pathnet_config())
    result = train_sequence(pathnet_config(), emit=lambda e: (events.append(e), writer(e)), compile="off")
    writer.close()
    return folder, result, events


def test_a_run_learns_and_never_forgets_a_learnt_task(recorded):
    """Frozen modules and a head of its own: a learnt task's accuracy never changes, exactly."""
    _, result, events = recorded
    assert result.status == "finished"
    R = result.test_acc
    assert np.diag(R).mean() > 0.8  # two-way tasks: chance is 0.5
    for j in range(1, len(R)):
        for acc in (R, result.val_acc):
            assert np.array_equal(acc[j, :j], acc[j - 1, :j])
    ends = [e for e in events if isinstance(e, TaskEnd)]
    assert all({"evolve", "train", "eval"} <= set(e.seconds) and e.epochs["evolve"] >= 1 for e in ends)
    paths = [e.arrays["path"] for e in events if isinstance(e, TaskArrays)]
    assert all(p.shape == (2, 16) and p.dtype == np.uint8 and (1 <= p.sum(1)).all() and (p.sum(1) <= 3).all()
               for p in paths)
    assert ends[-1].capacity == [float(c) for c in np.max(paths, axis=0).mean(1)]


def test_the_same_config_gives_the_same_run_and_stacked_seeds_equal_each_alone(recorded):
    _, first, _ = recorded
    again = train_sequence(pathnet_config(), compile="off")
    assert np.array_equal(first.test_acc, again.test_acc, equal_nan=True)
    configs = [pathnet_config(n_tasks=2, seed=s) for s in (0, 1)]
    alone = [train_sequence(c, compile="off") for c in configs]
    together = train_together([Job(config=c) for c in configs], compile="off")
    for a, b in zip(alone, together):
        assert np.array_equal(a.test_acc, b.test_acc, equal_nan=True)
        assert np.array_equal(a.val_acc, b.val_acc, equal_nan=True)


def test_the_recorded_paths_and_fitness_curves_load(recorded):
    folder, _, events = recorded
    run = load_run(folder)
    assert not run.warnings, run.warnings
    written = {e.task: e.arrays for e in events if isinstance(e, TaskArrays)}
    for task, arrays in written.items():
        assert np.array_equal(run.own(task, "path"), arrays["path"])
        assert np.array_equal(run.own(task, "fitness"), arrays["fitness"])


def _damage(folder, name, value):
    path = folder / "arrays" / "task_001.npz"
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays[name] = value
    with open(path, "wb") as out:
        np.savez(out, **arrays)


@pytest.mark.parametrize("name, value", [
    ("path", np.zeros((3, 16), dtype=np.uint8)),         # wrong shape: three layers
    ("path", np.zeros((2, 15), dtype=np.uint8)),         # wrong shape: fifteen modules
    ("path", np.full((2, 16), 2, dtype=np.uint8)),       # out of range
    ("path", np.zeros((2, 16), dtype=np.float32)),       # wrong dtype
    ("path", np.full((2, 16), np.nan)),                  # NaN (so also the wrong dtype)
    ("fitness", np.array([0.5, np.nan], dtype=np.float32)),
    ("fitness", np.array([-0.1], dtype=np.float32)),
    ("fitness", np.zeros((2, 2), dtype=np.float32)),
    ("fitness", np.array([1, 0], dtype=np.int64)),
])
def test_a_damaged_array_is_dropped_with_a_warning_and_the_rest_kept(recorded, tmp_path, name, value):
    folder = tmp_path / "copy"
    shutil.copytree(recorded[0], folder)
    _damage(folder, name, value)
    run = load_run(folder)
    assert run.own(1, name) is None
    assert any("task_001.npz" in w and name in w for w in run.warnings), run.warnings
    other = "fitness" if name == "path" else "path"
    assert run.own(1, other) is not None and run.own(0, name) is not None and run.own(2, name) is not None
    assert run.status == "finished" and run.state.tasks_done == 3
