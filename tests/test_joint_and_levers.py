"""The joint method, PRM's new levers (features, clustering, threshold, relax, embedding_init,
head_init) and that their runs load and show in the explorer."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

import prm.dtd as dtd_module
import prm.trainer as trainer
from prm import masks as M
from prm.config import (PRM_CHOICES, ConfigError, ModelConfig, OptimConfig, PRMConfig, RecordConfig,
                        RunConfig)
from prm.data import make_sequence
from prm.dtd import copy_nearest_head, init_embedding
from prm.engine import train_sequence
from prm.events import DTDResult, EpochEnd
from prm.methods import NAMES as METHODS
from prm.methods import REGISTRY
from prm.model import MaskedMLP
from prm.trainer import Context, fit, run_alone, to_device
from prm.stack import Stack
from prm.records import DTD_SOURCES
from prm.run import RunWriter, load_run
from prm.similarity import RULES, dissimilar_by_rule


def tiny(**changes) -> RunConfig:
    base = RunConfig(sequence="digits-classes", n_tasks=3, method="prm", seed=0,
                     model=ModelConfig(hidden=(16, 16)), optim=OptimConfig(max_epochs=3, patience=2),
                     prm=PRMConfig(dtd_epochs=2, head_epochs=1), record=RecordConfig(projections=("pca",)))
    return base.replace(**changes)


def with_prm(**levers) -> PRMConfig:
    return PRMConfig(dtd_epochs=2, head_epochs=1, **levers)


def context(cfg: RunConfig, emit=lambda e: None) -> Context:
    return Context(cfg=cfg, device=torch.device("cpu"),
                    generator=torch.Generator().manual_seed(0), emit=emit, should_stop=lambda: False)


def model_for(seq, *, masked: bool, hidden=(16, 16)) -> MaskedMLP:
    return MaskedMLP(input_dim=seq.input_dim, hidden=hidden, head_sizes=[t.n_classes for t in seq.tasks],
                     input_dropout=0.2, hidden_dropout=0.5, masked=masked)


def spy_steps(monkeypatch, log: list) -> None:
    """Record (task, x) of every SGD step: every batch goes through prm.stack.Stack.step."""
    original = Stack.step

    def spy(self, requests):  # the real rows: the last batch is padded to the phase's shape
        for q in requests.values():
            log.append((q.phase.task, q.x[:q.n].detach().clone()))
        return original(self, requests)

    monkeypatch.setattr(Stack, "step", spy)


def rows(x: torch.Tensor) -> Counter:
    return Counter(tuple(r) for r in x.tolist())


# ----------------------------------------------------------------------------- joint


@pytest.fixture(scope="module")
def joint_runs():
    cfg = tiny(method="joint")
    return cfg, train_sequence(cfg), train_sequence(cfg)


def test_joint_fills_the_lower_triangle_and_is_deterministic(joint_runs):
    _, first, second = joint_runs
    R = first.test_acc
    assert np.isfinite(R[np.tril_indices(3)]).all() and np.isnan(R[np.triu_indices(3, 1)]).all()
    assert np.isfinite(first.val_acc[np.tril_indices(3)]).all()
    assert np.array_equal(R, second.test_acc, equal_nan=True)
    assert np.array_equal(first.val_acc, second.val_acc, equal_nan=True)


def test_joint_first_row_is_stl_first_row(joint_runs):
    # Before the second task there is nothing to train jointly: the same fresh network, the same data.
    cfg, joint, _ = joint_runs
    stl = train_sequence(cfg.replace(method="stl"))
    assert joint.test_acc[0, 0] == stl.test_acc[0, 0]


@pytest.mark.parametrize("method", ["joint", "stl"])
def test_joint_trains_on_tasks_so_far_and_evaluates_a_row_with_one_network(method, monkeypatch):
    fits, tests = [], []
    real_fit, real_evaluate = trainer.fit, trainer.evaluate

    def fit(ctx, model, task, data, **kwargs):
        fits.append((task, [i for i, _ in kwargs.get("also", ())], id(model)))
        return real_fit(ctx, model, task, data, **kwargs)

    def evaluate(model, task, x, y, s, *args):
        tests.append((task, id(model), id(x)))
        return real_evaluate(model, task, x, y, s, *args)

    monkeypatch.setattr(trainer, "fit", fit)
    monkeypatch.setattr(trainer, "evaluate", evaluate)
    seq = make_sequence("digits-classes", seed=0, n_tasks=3)
    test_sets = {id(t.x_test) for t in seq.tasks}  # _to on the CPU keeps the tensors
    train_sequence(tiny(method=method), sequence=seq)
    assert [(t, also) for t, also, _ in fits] == [(t, list(range(t)) if method == "joint" else []) for t in range(3)]
    trained = [model for _, _, model in fits]
    assert len(set(trained)) == 3  # a fresh network per task for both
    on_test = [(task, model) for task, model, x in tests if x in test_sets]
    assert [task for task, _ in on_test] == [0, 0, 1, 0, 1, 2]
    rows = [on_test[0:1], on_test[1:3], on_test[3:6]]
    for t, row in enumerate(rows):
        used = [model for _, model in row]
        assert used == ([trained[t]] * (t + 1) if method == "joint" else trained[: t + 1])


def test_fit_with_also_visits_every_tasks_training_images_once_per_epoch(monkeypatch):
    cfg = tiny(method="joint")
    seq = make_sequence("digits-classes", seed=0, n_tasks=3)
    data = [to_device(t, torch.device("cpu")) for t in seq.tasks]
    log: list = []
    spy_steps(monkeypatch, log)
    ctx = context(cfg, emit=lambda e: log.append(e) if isinstance(e, EpochEnd) else None)
    torch.manual_seed(0)
    model = model_for(seq, masked=False)
    epochs, _ = run_alone(ctx, model, fit(ctx, model, 2, data[2], phase="train", max_epochs=2,
                                           also=[(0, data[0]), (1, data[1])]))
    ends = [n for n, item in enumerate(log) if isinstance(item, EpochEnd)]
    assert epochs == len(ends) == 2
    sizes = [len(d["x_train"]) for d in data]
    start = 0
    for end in ends:
        steps = log[start:end]
        start = end + 1
        assert all(len(x) <= cfg.optim.batch_size for _, x in steps)
        for task in range(3):
            mine = [x for t, x in steps if t == task]
            assert sum(len(x) for x in mine) == sizes[task]
            assert rows(torch.cat(mine)) == rows(data[task]["x_train"])  # each image exactly once
        order = [t for t, _ in steps]
        assert order != sorted(order, key=[2, 0, 1].index), "the tasks' batches are shuffled together"
        assert log[end].train_loss is not None and 0 <= log[end].val_acc <= 1


def test_fit_without_also_draws_the_batches_of_the_single_task_loop(monkeypatch):
    # The refactor must not change a single-task phase: one randperm per epoch from the run's
    # generator, consecutive slices of batch_size, in that order; each step then draws its
    # dropout noise from the same generator.
    cfg = tiny(method="hat")
    seq = make_sequence("digits-classes", seed=0, n_tasks=2)
    data = to_device(seq.tasks[0], torch.device("cpu"))
    log: list = []
    spy_steps(monkeypatch, log)
    torch.manual_seed(0)
    ctx, model = context(cfg), model_for(seq, masked=True)
    epochs, _ = run_alone(ctx, model, fit(ctx, model, 0, data, phase="train", max_epochs=3, also=()))
    generator, bs, x = torch.Generator().manual_seed(0), cfg.optim.batch_size, data["x_train"]
    expected = []
    units = seq.input_dim + sum(cfg.model.hidden)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        expected += [x[order[b:b + bs]] for b in range(0, len(x), bs)]
        for _ in range(0, len(x), bs):
            torch.rand(1, bs, units, generator=generator)
    assert len(log) == len(expected) and all(t == 0 for t, _ in log)
    assert all(torch.equal(got, want) for (_, got), want in zip(log, expected))


def test_a_single_task_run_is_deterministic():
    one, two = train_sequence(tiny(method="hat")), train_sequence(tiny(method="hat"))
    assert np.array_equal(one.test_acc, two.test_acc, equal_nan=True)
    assert np.array_equal(one.val_acc, two.val_acc, equal_nan=True)


# ----------------------------------------------------------------------------- relaxed masks


def test_relaxed_mask_by_hand():
    masks = [torch.tensor([0.9, 0.1]), torch.tensor([0.2, 0.8])]
    assert torch.allclose(M.relaxed_mask(masks, [0], 2, relax=0.25), torch.tensor([0.9, 0.6]))
    assert torch.allclose(M.relaxed_mask(masks, [0], 2, relax=1.0), torch.tensor([0.9, 0.1]))
    assert torch.allclose(M.relaxed_mask(masks, [0], 2), torch.tensor([0.9, 0.1]))  # default: the paper
    assert torch.allclose(M.relaxed_mask(masks, [], 2, relax=0.5), torch.tensor([0.45, 0.4]))
    assert torch.equal(M.relaxed_mask(masks, [], 2), torch.zeros(2))
    assert torch.allclose(M.relaxed_mask(masks, [0], 2, relax=0.0), torch.tensor([0.9, 0.8]))


def test_relax_one_is_the_old_rule_and_relax_zero_is_hats_accumulated_mask():
    generator = torch.Generator().manual_seed(1)
    masks = [torch.rand(7, generator=generator) for _ in range(5)]
    accumulated = None
    for m in masks:
        accumulated = M.accumulate(accumulated, m)
    for dissimilar in ([], [0], [1, 3], [0, 1, 2, 3, 4]):
        old = torch.zeros(7)
        for i in dissimilar:
            old = torch.maximum(old, masks[i])
        assert torch.equal(M.relaxed_mask(masks, dissimilar, 7, relax=1.0), old)
        assert torch.equal(M.relaxed_mask(masks, dissimilar, 7, relax=0.0), accumulated)
        middle = [M.relaxed_mask(masks, dissimilar, 7, relax=r) for r in (0.0, 0.3, 0.7, 1.0)]
        assert all(torch.all(a >= b) for a, b in zip(middle, middle[1:]))  # more relax, less protected


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("field, value", [
    ("features", "pixels"), ("features", ""), ("clustering", "kmeans"), ("clustering", "XMEANS"),
    ("embedding_init", "ones"), ("head_init", "copy"), ("threshold", 0.0), ("threshold", 2.0),
    ("threshold", -0.1), ("threshold", float("nan")), ("threshold", "0.3"), ("relax", -0.01), ("relax", 1.01),
    ("relax", float("inf")), ("relax", True),
])
def test_each_new_prm_field_is_validated_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"prm.{field}"):
        RunConfig(prm=PRMConfig(**{field: value}))


def test_every_choice_is_accepted_and_the_first_is_the_default():
    default = PRMConfig()
    for field, choices in PRM_CHOICES.items():
        assert getattr(default, field) == choices[0]
        for choice in choices:
            RunConfig(prm=PRMConfig(**{field: choice}))
    for threshold in (1e-6, 0.35, 1.999):
        RunConfig(prm=PRMConfig(threshold=threshold))
    for relax in (0, 0.0, 0.5, 1):
        RunConfig(prm=PRMConfig(relax=relax))


def test_config_with_new_values_round_trips_through_json():
    cfg = tiny(method="joint", sequence="digits-writers-few", shots=2,
               prm=with_prm(features="unit", clustering="linkage", threshold=0.5, relax=0.25,
                            embedding_init="mean", head_init="similar"))
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_an_old_config_without_the_new_fields_gets_the_papers_recipe():
    old = RunConfig().to_dict()
    del old["shots"]
    for field in ("features", "clustering", "threshold", "relax", "embedding_init", "head_init"):
        del old["prm"][field]
    assert RunConfig.from_dict(old) == RunConfig()


# ----------------------------------------------------------------------------- embedding_init


def test_init_embedding_zeros_mean_and_normal():
    seq = make_sequence("digits-classes", seed=0, n_tasks=4)
    torch.manual_seed(0)
    model = model_for(seq, masked=True)
    before = model.embedding.weight.detach().clone()
    init_embedding(model, 2, "normal")
    assert torch.equal(model.embedding.weight, before)
    init_embedding(model, 2, "zeros")
    after = model.embedding.weight.detach()
    assert torch.equal(after[2], torch.zeros(32))
    assert torch.equal(after[[0, 1, 3]], before[[0, 1, 3]])
    init_embedding(model, 3, "mean")
    after = model.embedding.weight.detach()
    assert torch.allclose(after[3], torch.stack([before[0], before[1], torch.zeros(32)]).mean(0))
    assert torch.equal(after[:2], before[:2])


@pytest.mark.parametrize("how", ["zeros", "mean"])
def test_the_new_embedding_is_set_when_dtd_starts_and_again_for_lwprm(how, monkeypatch):
    seen = {}
    real_dtd, real_fit = dtd_module.detect, trainer.fit

    def dtd(ctx, model, task, *args, **kwargs):
        seen[("dtd", task)] = model.embedding.weight.detach().clone()
        return real_dtd(ctx, model, task, *args, **kwargs)

    def fit(ctx, model, task, data, **kwargs):
        if kwargs["phase"] == "train":
            seen[("train", task)] = model.embedding.weight.detach().clone()
        return real_fit(ctx, model, task, data, **kwargs)

    monkeypatch.setattr(dtd_module, "detect", dtd)
    monkeypatch.setattr(trainer, "fit", fit)
    train_sequence(tiny(prm=with_prm(embedding_init=how)))
    for t in (1, 2):
        table = seen[("dtd", t)]
        expected = torch.zeros(32) if how == "zeros" else table[:t].mean(0)
        assert torch.allclose(table[t], expected)
        assert torch.allclose(seen[("train", t)][t], expected)  # DTD's state is thrown away


# ----------------------------------------------------------------------------- head_init


def _heads_model(sizes):
    model = MaskedMLP(input_dim=8, hidden=(6, 4), head_sizes=sizes, input_dropout=0.0, hidden_dropout=0.0,
                      masked=True)
    with torch.no_grad():
        for n, head in enumerate(model.heads):
            head.weight.fill_(float(n))
            head.bias.fill_(float(-n))
    return model


def _head(model, n):
    return model.heads[n].weight.detach().clone(), model.heads[n].bias.detach().clone()


# new task 4; by cosine: task 2 (wrong size) = task 3 < task 1 < task 0
ROWS = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.1, 0.0], [2.0, 0.0, 0.0]])
SIZES = [10, 10, 2, 10, 10]


@pytest.mark.parametrize("dissimilar, source", [([], 3), ([3], 1), ([1, 3], 0), ([2, 3], 1)])
def test_copy_nearest_head_copies_the_nearest_similar_task_of_the_same_size(dissimilar, source):
    model = _heads_model(SIZES)
    others = {n: _head(model, n) for n in range(4)}
    copy_nearest_head(model, 4, ROWS, dissimilar)
    weight, bias = _head(model, 4)
    assert torch.equal(weight, others[source][0]) and torch.equal(bias, others[source][1])
    assert all(torch.equal(_head(model, n)[0], others[n][0]) for n in range(4))
    with torch.no_grad():  # a copy, not a shared tensor
        model.heads[4].weight.add_(1.0)
    assert torch.equal(_head(model, source)[0], others[source][0])


@pytest.mark.parametrize("dissimilar", [[0, 1, 3], [0, 1, 2, 3]])
def test_copy_nearest_head_leaves_the_head_alone_when_no_task_qualifies(dissimilar):
    model = _heads_model(SIZES)
    before = _head(model, 4)
    copy_nearest_head(model, 4, ROWS, dissimilar)
    after = _head(model, 4)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


def test_head_init_similar_starts_lwprm_from_an_earlier_head(monkeypatch):
    heads = {}
    real_fit = trainer.fit

    def fit(ctx, model, task, data, **kwargs):
        if kwargs["phase"] == "train":
            heads[task] = [h.weight.detach().clone() for h in model.heads]
        return real_fit(ctx, model, task, data, **kwargs)

    monkeypatch.setattr(trainer, "fit", fit)
    # PRM(S): every earlier task is similar, all writer heads have 10 classes, so a head is always copied
    train_sequence(tiny(sequence="digits-writers", method="prm-s", prm=with_prm(head_init="similar")))
    for t in (1, 2):
        assert any(torch.equal(heads[t][t], heads[t][i]) for i in range(t))


# ----------------------------------------------------------------------------- runs with a rule load


@pytest.fixture(scope="module", params=RULES)
def rule_run(request, tmp_path_factory):
    rule = request.param
    cfg = tiny(sequence="digits-mixed", n_tasks=4, prm=with_prm(clustering=rule, threshold=0.5))
    folder = tmp_path_factory.mktemp("runs") / f"digits-mixed-prm-{rule}"
    train_sequence(cfg, emit=RunWriter(folder, config=cfg))
    return rule, cfg, folder


def test_every_rule_and_ablation_is_a_known_dtd_source():
    assert set(PRM_CHOICES["clustering"]) <= set(DTD_SOURCES)
    assert {m.hooks.source for m in REGISTRY.values() if m.hooks.source} <= set(DTD_SOURCES)


def test_a_run_with_a_clustering_rule_records_it_and_loads_without_warnings(rule_run):
    rule, cfg, folder = rule_run
    run = load_run(folder)
    assert run.warnings == () and run.status == "finished"
    assert sorted(run.state.dtd) == [1, 2, 3]
    for t, record in run.state.dtd.items():
        assert isinstance(record, DTDResult) and record.source == rule
        for layer, entry in enumerate(record.layers):
            points = np.asarray(run.dtd_embeddings(t, layer), dtype=np.float64)
            assert entry["dissimilar"] == dissimilar_by_rule(points, t, rule=rule, threshold=0.5)
            labels = entry["xmeans"]["labels"]  # the record keeps X-means' own call beside the rule's
            own = list(range(t)) if entry["undecided"] else [i for i in range(t) if labels[i] != labels[t]]
            assert entry["dissimilar_xmeans"] == own


def test_a_rule_run_shows_in_the_explorer(rule_run):
    from explorer.figures import overview
    from prm.analysis import pair_evidence

    rule, _, folder = rule_run
    run = load_run(folder)
    summary = overview.similarity_summary(run.state)
    assert list(summary["source"]) == ["", rule, rule, rule]  # the first task has nothing to decide
    ev = pair_evidence(run, 3, 0, 0, 3)
    assert np.isfinite(ev["bic_change"])


def test_pair_evidence_is_measured_on_the_features_x_means_clustered(tmp_path):
    from prm.analysis import pair_evidence

    cfg = tiny(sequence="digits-mixed", prm=with_prm(features="binary"))
    train_sequence(cfg, emit=RunWriter(tmp_path / "binary", config=cfg))
    run = load_run(tmp_path / "binary")
    assert run.warnings == ()
    ev = pair_evidence(run, 2, 0, 0, 2)
    points = (np.asarray(run.dtd_embeddings(2, 0)) > 0).astype(float)
    assert ev["distance"] == pytest.approx(float(np.linalg.norm(points[0] - points[2])))


def test_a_joint_run_loads_without_warnings_and_has_a_colour(tmp_path):
    from explorer.figures import common
    from prm import compare as compare_tables

    cfg = tiny(method="joint")
    train_sequence(cfg, emit=RunWriter(tmp_path / "joint", config=cfg))
    run = load_run(tmp_path / "joint")
    assert run.warnings == () and run.status == "finished" and run.state.config["method"] == "joint"
    assert not run.state.dtd and run.state.tasks_done == 3
    assert set(common.METHOD_COLOURS) == set(METHODS)
    assert len(set(common.METHOD_COLOURS.values())) == len(METHODS)
    # one meaning per colour: no method shares a colour with a task or a right/wrong mark
    taken = {c.upper() for c in [*common.TASK_COLOURS, common.RIGHT_COLOUR, common.WRONG_COLOUR]}
    assert not taken & {c.upper() for c in common.METHOD_COLOURS.values()}
    table = compare_tables.per_method(compare_tables.per_run({"joint": (run.state, 0)}))
    assert list(table["method"]) == ["joint"] and table["Acc"].notna().all()


def test_the_clustering_view_names_the_rule_that_decided(rule_run):
    from explorer import state as keys
    from tests.test_app import open_app, texts

    rule, _, folder = rule_run
    for task in ("T2", "T4"):  # T2: X-means is undecided (two tasks), the rule is not
        at = open_app(keys.CLUSTERING, run=str(folder), runs_dir=folder.parent, task=task)
        shown = texts(at)
        assert f"This run decided by the '{rule}' rule" in shown and "0.5" in shown, shown
        assert "X-means alone said dissimilar" in shown and not at.error
        if task == "T2":
            assert "this run did not use it but decided by" in shown
