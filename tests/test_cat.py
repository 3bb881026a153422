"""CAT (prm.cat, prm.masks' CAT rules, the engine's transfer tests): hand-built cases first.

The similarity rule is tested on a network built by hand, where one earlier task's frozen
features hold the new task's answer (its transfer network must beat a network trained from
scratch on a few examples) and another's are constant (it must lose). The relaxed backward
mask is tested against values worked out by hand, on a case where it differs from PRM's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prm import masks as M
from prm import step as S
from prm.analysis import judged_right, true_groups
from prm.cat import KTAPhase, TransferAttention, choose_head, transfer_test
from prm.config import CATConfig, ConfigError, HATConfig, ModelConfig, PRMConfig, OptimConfig, RecordConfig, RunConfig
from prm.datasets.core import Task, TaskSequence
from prm.engine import train_sequence
from prm.events import TaskEnd, TransferTest
from prm.model import MaskedMLP
from prm.records import BadRecord, parse_record, parse_started
from prm.run import RunWriter, load_run
from prm.stack import Request, Stack, make_phase
from prm.trainer import Context

# ----------------------------------------------------------------------------- mask rules


def test_first_claimed_gives_each_unit_to_the_task_that_took_it_first():
    a0 = torch.tensor([1.0, 0.0, 0.0, 0.0])
    a1 = torch.tensor([1.0, 1.0, 0.0, 0.0])  # uses unit 0 too, but task 0 took it first
    a2 = torch.tensor([0.0, 1.0, 0.4, 0.9])  # 0.4 never rounds to a claim
    claimed = M.first_claimed([a0, a1, a2])
    assert [c.tolist() for c in claimed] == [[True, False, False, False], [False, True, False, False],
                                             [False, False, False, True]]


def _two_earlier_tasks():
    """Layer widths (3, 3). Task 0 (similar to the new one) claims unit 0 of both layers;
    task 1 (dissimilar) uses units 0 and 1 of both layers, so it claims unit 1 alone."""
    t0 = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0])]
    t1 = [torch.tensor([1.0, 1.0, 0.0]), torch.tensor([1.0, 1.0, 0.0])]
    return t0, t1


def test_cat_keeps_by_hand_and_where_they_differ_from_prm():
    t0, t1 = _two_earlier_tasks()
    acc = [M.accumulate(a, b) for a, b in zip(t0, t1)]
    free = [M.cat_free([t0[l], t1[l]], dissimilar=[1]) for l in range(2)]
    assert [f.tolist() for f in free] == [[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]
    (w1, b1), (w2, b2) = M.cat_keeps(acc, free)
    # layer 1 (inputs unmasked): max(1 - a_out, T_out) per output unit
    assert w1.squeeze(1).tolist() == [1.0, 0.0, 1.0] and b1.tolist() == [1.0, 0.0, 1.0]
    # layer 2: max(1 - min(a_out, a_in), min(T_out, T_in)), worked out cell by cell
    assert w2.tolist() == [[1.0, 0.0, 1.0],   # 0<-0: both ends first claimed by the similar task: free
                           [0.0, 0.0, 1.0],   # into the dissimilar task's unit: protected
                           [1.0, 1.0, 1.0]]   # an unused unit: free, as in HAT
    assert b2.tolist() == [1.0, 0.0, 1.0]
    # PRM's relaxed mask is task 1's mask: the weight 0<-0 is protected there, free in CAT
    prm = M.layer_keeps([M.relaxed_mask([t0[l], t1[l]], [1], 3) for l in range(2)])
    assert prm[1][0][0, 0] == 0.0 and w2[0, 0] == 1.0
    # and with every earlier task dissimilar, CAT's keeps are HAT's
    hat = M.layer_keeps(acc)
    for (cw, cb), (hw, hb) in zip(M.cat_keeps(acc, [M.cat_free([t0[l], t1[l]], [0, 1]) for l in range(2)]), hat):
        assert torch.equal(cw, hw.expand_as(cw)) and torch.equal(cb, hb)


def _masked_model(widths=(3, 3), tasks=3, inputs=4) -> MaskedMLP:
    torch.manual_seed(0)
    return MaskedMLP(input_dim=inputs, hidden=widths, head_sizes=[2] * tasks, input_dropout=0.0, hidden_dropout=0.0,
                     masked=True)


@pytest.mark.parametrize("path", ["stacked step", "attention step"])
def test_weights_cat_protects_do_not_move_and_relaxed_ones_do(path):
    """The hand case above, trained: every weight with keep 0 stays, every one with keep 1
    moves, in both of CAT's training paths (the hand-written step, and the step with the
    knowledge-transfer attention)."""
    t0, t1 = _two_earlier_tasks()
    acc = [M.accumulate(a, b) for a, b in zip(t0, t1)]
    keeps = M.cat_keeps(acc, [M.cat_free([t0[l], t1[l]], [1]) for l in range(2)])
    model = _masked_model()
    with torch.no_grad():
        model.embedding.weight[2] = 6.0  # the new task uses every unit, and every unit is active:
        for layer in model.layers:        # every gradient is non-zero
            layer.bias.fill_(3.0)
    before = [(l.weight.detach().clone(), l.bias.detach().clone()) for l in model.layers]
    cfg = RunConfig(method="cat", model=ModelConfig(hidden=(3, 3), input_dropout=0.0, hidden_dropout=0.0),
                    hat=HATConfig(lamb=0.0))
    x, y = torch.randn(8, 4), torch.tensor([0, 1] * 4)
    for _ in range(3):
        if path == "stacked step":
            stack = Stack(models=[model], configs=[cfg], stepper=S.sgd_step)
            ph = make_phase(model=model, task=2, head_only=False, protect=acc, reg_used=acc, keeps=keeps)
            stack.step({0: Request(phase=ph, x=x, y=y, n=8, noise=torch.ones(8, 4 + 6), s=400.0, lr=0.5)})
        else:
            kta = TransferAttention(width=3, head_sizes=[2] * 3, heads=1, dropout=0.0)
            step = KTAPhase(model=model, kta=kta, task=2, gates=[t0], keeps=keeps, reg=M.regulariser_weights(acc, (3, 3)),
                            cfg=cfg, rng=lambda: torch.random.fork_rng())
            step.step(Request(phase=None, x=x, y=y, n=8, noise=torch.ones(8, 10), s=400.0, lr=0.5))
    for (w0, b0), layer, (kw, kb) in zip(before, model.layers, keeps):
        moved_w = (layer.weight.detach() != w0)
        assert not moved_w[kw.expand_as(w0) == 0].any(), "a protected weight moved"
        assert moved_w[kw.expand_as(w0) == 1].all(), "a free weight did not move"
        moved_b = layer.bias.detach() != b0
        assert not moved_b[kb == 0].any() and moved_b[kb == 1].all()


# ----------------------------------------------------------------------------- the similarity rule


def _task(name: str, x: torch.Tensor, y: torch.Tensor, n_train: int, n_val: int) -> Task:
    return Task(name=name, family=name, n_classes=2, classes=(0, 1), x_train=x[:n_train], y_train=y[:n_train],
                x_val=x[n_train:n_train + n_val], y_val=y[n_train:n_train + n_val],
                x_test=x[n_train + n_val:], y_test=y[n_train + n_val:])


def test_transfer_test_calls_an_informative_task_similar_and_a_useless_one_dissimilar():
    """New task: the sign of input 0, from 16 training images in 8 dimensions. Task A's mask
    selects two units computing relu(+-3 x0) (its frozen features hold the answer); task B's
    selects units whose features are constant (they hold nothing). A fresh network trained on
    16 images lies in between (measured: 0.955, 0.52 and 0.72), so A must be called similar and B dissimilar."""
    d, width, n = 8, 8, 16
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n + 200 + 200, d, generator=gen)
    y = (x[:, 0] > 0).long()
    val = y[n:n + 200]
    assert 0.4 < val.float().mean() < 0.6
    seq = TaskSequence(name="hand", tasks=(_task("A", x, y, n, 200), _task("B", x, y, n, 200),
                                           _task("new", x, y, n, 200)), input_dim=d, description="hand-built")
    cfg = RunConfig(method="cat", model=ModelConfig(hidden=(width, width), input_dropout=0.0, hidden_dropout=0.0),
                    optim=OptimConfig(max_epochs=60), cat=CATConfig(detect_epochs=60))
    model = MaskedMLP(input_dim=d, hidden=(width, width), head_sizes=[2] * 3, input_dropout=0.0, hidden_dropout=0.0,
                      masked=True)
    with torch.no_grad():
        (l1, l2) = model.layers
        l1.weight[0], l1.weight[1] = 0.0, 0.0
        l1.weight[0, 0], l1.weight[1, 0], l1.bias[:2] = 3.0, -3.0, 0.0
        l2.weight[:2], l2.bias[:2] = 0.0, 0.0
        l2.weight[0, 0], l2.weight[1, 1] = 1.0, 1.0
        l1.weight[4:], l1.bias[4:], l2.weight[4:], l2.bias[4:] = 0.0, 1.0, 0.0, 1.0
        model.embedding.weight[:] = -6.0
        model.embedding.weight[0, [0, 1, width, width + 1]] = 6.0                       # A: units 0-1
        model.embedding.weight[1, [4, 5, 6, 7, width + 4, width + 5, width + 6, width + 7]] = 6.0  # B: units 4-7
    ctx = Context(cfg=cfg, device=torch.device("cpu"),
                   generator=torch.Generator().manual_seed(0), emit=lambda event: None, should_stop=lambda: False,
                   torch_state=torch.Generator().manual_seed(0).get_state(),
                   stack=Stack(models=[model], configs=[cfg], stepper=S.sgd_step))
    data = {n: getattr(seq.tasks[2], n) for n in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
    test = transfer_test(ctx, seq, model, 2, data)
    a, b = test.transfer_acc
    assert a > test.reference_acc + 0.1, (a, test.reference_acc)   # transfer clearly better: similar
    assert b < test.reference_acc - 0.1, (b, test.reference_acc)   # transfer clearly worse: dissimilar
    assert test.similar == [0] and test.dissimilar == [1]
    assert len(test.epochs) == 2 and all(1 <= e <= 60 for e in test.epochs) and 1 <= test.reference_epochs <= 60
    assert set(test.seconds) == {"transfer", "reference"}
    # the network itself is untouched: the transfer networks were copies
    assert float(model.layers[0].weight.detach()[0, 0]) == 3.0 and float(model.embedding.weight.detach()[2].abs().max()) == 6.0


def test_choose_head_takes_the_attention_head_only_when_strictly_better(monkeypatch):
    import prm.cat as C

    scores = {"val": ((0.5, 0.8), (0.4, 0.8)), "test": ((0.5, 0.7), (0.4, 0.9))}
    calls = iter(["val", "test", "val", "test"])
    monkeypatch.setattr(C, "head_scores", lambda *a, **k: scores[next(calls)])
    assert choose_head(None, None, 1, [], {n: None for n in ("x_val", "y_val", "x_test", "y_test")}, 400.0) \
        == (False, 0.8, 0.7)  # a tie keeps the main head
    scores["val"] = ((0.5, 0.8), (0.4, 0.85))
    assert choose_head(None, None, 1, [], {n: None for n in ("x_val", "y_val", "x_test", "y_test")}, 400.0) \
        == (True, 0.85, 0.9)


# ----------------------------------------------------------------------------- whole runs


def cat_config(**changes) -> RunConfig:
    return RunConfig(sequence="digits-mixed", n_tasks=4, method="cat", seed=2, model=ModelConfig(hidden=(24, 24)),
                     optim=OptimConfig(max_epochs=6, patience=2), cat=CATConfig(detect_epochs=5),
                     record=RecordConfig(trajectory_every=1, projections=("pca",))).replace(**changes)


def test_a_cat_run_records_its_tests_times_and_head_choices(tmp_path):
    events: list = []
    writer = RunWriter(tmp_path / "run", config=cat_config())
    result = train_sequence(cat_config(), emit=lambda e: (events.append(e), writer(e)), compile="off")
    writer.close()
    assert result.status == "finished"
    tests = [e for e in events if isinstance(e, TransferTest)]
    ends = [e for e in events if isinstance(e, TaskEnd)]
    assert [t.task for t in tests] == [1, 2, 3] and [len(t.transfer_acc) for t in tests] == [1, 2, 3]
    for t in tests:
        assert t.similar == [j for j, a in enumerate(t.transfer_acc) if a > t.reference_acc]
    assert all({"transfer", "reference", "train", "eval"} <= set(e.seconds) for e in ends[1:])
    assert [len(e.kta) for e in ends] == [1, 2, 3, 4]
    for e in ends:  # the attention head exists only for tasks with similar earlier tasks
        for i, used in enumerate(e.kta):
            assert not used or (i > 0 and tests[i - 1].similar)
    run = load_run(tmp_path / "run")
    assert run.status == "finished" and sorted(run.state.transfer) == [1, 2, 3]
    calls = run.state.calls()
    assert calls == {t.task: ("cat", t.dissimilar) for t in tests}
    groups = true_groups(run.state.tasks)
    assert all(isinstance(v, bool) for t in tests for v in judged_right(groups=groups, task=t.task,
                                                                        dissimilar=t.dissimilar).values())
    seconds = run.state.task_seconds()
    assert seconds["transfer"][0] == 0.0 and (seconds["transfer"][1:] > 0).all()
    assert not (tmp_path / "run" / "checkpoints").exists()  # CAT keeps none: no what-if
    # protected units are the accumulated mask minus what CAT relaxed: never more than HAT's
    for t in range(1, 4):
        for layer in range(2):
            assert (run.protected(t, layer) <= run.accumulated(t - 1, layer) + 1e-6).all()


def test_a_cat_run_is_deterministic():
    def once():
        events: list = []
        train_sequence(cat_config(n_tasks=3), emit=events.append, compile="off")
        return ([(e.transfer_acc, e.reference_acc, e.similar) for e in events if isinstance(e, TransferTest)],
                [e.test_acc for e in events if isinstance(e, TaskEnd)])

    assert once() == once()


def force_similar(monkeypatch) -> None:
    """Every earlier task called similar (the reference always loses), so that the attention
    phase runs whatever the data say."""
    import prm.cat as C

    real = C.transfer_test

    def always_similar(*args, **kwargs):
        test = real(*args, **kwargs)
        return TransferTest(task=test.task, transfer_acc=test.transfer_acc, reference_acc=0.0,
                            similar=list(range(test.task)), epochs=test.epochs,
                            reference_epochs=test.reference_epochs, seconds=test.seconds)

    monkeypatch.setattr(C, "transfer_test", always_similar)


def test_the_attention_phase_trains_when_a_task_is_called_similar(monkeypatch):
    """Force every earlier task similar (a reference that always loses), on a network wide
    enough to learn: the kept training then runs CAT's attention step, the attention head
    is chosen where it scores higher on validation (and the accuracy recorded is the chosen
    head's), and the run, dropout inside the attention included, is deterministic."""
    import prm.cat as C

    force_similar(monkeypatch)
    real_choose = C.choose_head
    steps: list[int] = []
    monkeypatch.setattr(KTAPhase, "step", (lambda original: lambda self, r: (steps.append(self.task), original(self, r))[1])(
        KTAPhase.step))
    choices: list[tuple] = []  # per evaluation of a task with an attention head: both heads' scores, the choice

    def recorded(model, kta, task, gates, data, smax):
        val = C.head_scores(model, kta, task, gates, data["x_val"], data["y_val"], smax)
        test = C.head_scores(model, kta, task, gates, data["x_test"], data["y_test"], smax)
        out = real_choose(model, kta, task, gates, data, smax)
        choices.append((val, test, out))
        return out

    monkeypatch.setattr(C, "choose_head", recorded)
    config = cat_config(n_tasks=3, model=ModelConfig(hidden=(64, 64)), optim=OptimConfig(max_epochs=30, patience=3))

    def once():
        events: list = []
        train_sequence(config, emit=events.append, compile="off")
        return [e for e in events if isinstance(e, TaskEnd)]

    ends = once()
    choices_first = len(choices)
    assert set(steps) == {1, 2}  # the attention step trained tasks 2 and 3, and only those
    assert ends[-1].kta[0] is False  # the first task never has an attention head
    assert any(any(e.kta) for e in ends), "the attention head was never chosen"
    # the attention head is chosen exactly when its validation accuracy is higher, and the
    # recorded accuracies are the chosen head's
    seen = iter(choices)
    for e in ends[1:]:
        for i in range(1, e.task + 1):
            ((main_val, kta_val), (main_test, kta_test), out) = next(seen)
            assert e.kta[i] == out[0] == (kta_val[1] > main_val[1])
            assert e.test_acc[i] == pytest.approx((kta_test if e.kta[i] else main_test)[1])
            assert e.val_acc[i] == pytest.approx(max(kta_val[1], main_val[1]))
    assert max(e.test_acc[-1] or 0 for e in ends) > 0.5  # it learns: not chance on 10-way and 2-way tasks
    assert [(e.test_acc, e.kta) for e in once()] == [(e.test_acc, e.kta) for e in ends]
    assert len(choices) == 2 * choices_first


def test_stacked_cat_runs_with_the_attention_phase_equal_runs_alone(monkeypatch):
    """The attention step writes into parameters that are views of the stack's tensors: each
    run of a stack must still learn exactly what it learns alone (every task forced similar,
    so the step runs)."""
    from prm.engine import Job, train_together

    force_similar(monkeypatch)
    configs = [cat_config(n_tasks=3, seed=s) for s in (0, 1)]
    alone = [train_sequence(c, compile="off") for c in configs]
    together = train_together([Job(config=c) for c in configs], compile="off")
    for a, b in zip(alone, together):
        np.testing.assert_allclose(b.test_acc, a.test_acc, atol=1e-6, equal_nan=True)
        np.testing.assert_allclose(b.val_acc, a.val_acc, atol=1e-6, equal_nan=True)


def test_compare_trains_cat_seeds_one_at_a_time(tmp_path, monkeypatch):
    """CAT's transfer tests and attention steps run outside the shared step: stacked, each
    seed would wait for the others and count their time as its own, so compare never stacks
    CAT (other methods still are)."""
    import prm.cli.compare as cli
    from prm.cli import main

    sizes: dict[str, list[int]] = {}
    real = cli._compare_stack
    monkeypatch.setattr(cli, "_compare_stack", lambda batch: (sizes.setdefault(batch[0][0].method, []).append(
        len(batch[0])), real(batch))[1])
    assert main(["compare", "--sequence", "digits-mixed", "--n-tasks", "2", "--width", "16", "--epochs", "2",
                     "--detect-epochs", "2", "--methods", "cat,hat", "--seeds", "0,1", "--no-umap", "--quiet"]) == 0
    assert sizes["cat"] == [1, 1] and sizes["hat"] == [2]


def test_a_transfer_test_belongs_to_cat_runs_only(tmp_path):
    """A transfer_test line in a PRM run, or a DTD line in a CAT run, is skipped with a reason:
    otherwise the views would show another method's calls as this run's."""
    from prm.events import to_record
    from prm.run import apply_events, RunState

    def log(method: str) -> list[dict]:
        events: list = []
        train_sequence(cat_config(n_tasks=2, method=method, prm=PRMConfig(dtd_epochs=2, head_epochs=1)),
                       emit=events.append, compile="off")
        return [to_record(e) for e in events if not hasattr(e, "arrays")]

    cat, prm = log("cat"), log("prm")
    at = next(n for n, r in enumerate(cat) if r["type"] == "transfer_test")
    assert sorted(apply_events(RunState(), cat).transfer) == [1]
    state = apply_events(RunState(), [*prm[:at], cat[at]])  # task 1 of PRM done, then CAT's test for task 2
    assert not state.transfer and "only CAT makes them" in state.skipped[-1]
    dtd = next(r for r in prm if r["type"] == "dtd")
    assert sorted(apply_events(RunState(), prm).dtd) == [1]
    state = apply_events(RunState(), [*cat[:at], dtd])
    assert not state.dtd and "CAT makes transfer tests, not DTD" in state.skipped[-1]


def test_cat_settings_are_validated():
    with pytest.raises(ConfigError, match="cat.heads"):
        RunConfig(method="cat", model=ModelConfig(hidden=(24, 24)), cat=CATConfig(heads=5))
    with pytest.raises(ConfigError, match="cat.detect_epochs"):
        RunConfig(cat=CATConfig(detect_epochs=0))
    with pytest.raises(ConfigError, match="cat.kta_weight"):
        RunConfig(cat=CATConfig(kta_weight=-1.0))
    assert RunConfig.from_dict({**RunConfig().to_dict(), "cat": {"heads": 4}}).cat.heads == 4


# ----------------------------------------------------------------------------- hostile records


def _started():
    events: list = []
    train_sequence(cat_config(n_tasks=2), emit=events.append, compile="off")
    from prm.events import to_record

    started = parse_started(to_record(events[0]))
    test = next(to_record(e) for e in events if isinstance(e, TransferTest))
    end = next(to_record(e) for e in events if isinstance(e, TaskEnd) and e.task == 1)
    return started, test, end


@pytest.fixture(scope="module")
def recorded():
    return _started()


@pytest.mark.parametrize("change, message", [
    ({"similar": [1]}, "similar"),                    # names the task itself, not an earlier one
    ({"transfer_acc": [1.5]}, "transfer_acc"),
    ({"transfer_acc": [0.5, 0.5]}, "transfer_acc must be a list of at most 1"),
    ({"transfer_acc": []}, "one entry per earlier task"),
    ({"reference_acc": float("nan")}, "reference_acc"),
    ({"seconds": {"dtd": 1.0}}, "seconds key"),
    ({"task": 0}, "task"),
])
def test_a_damaged_transfer_test_record_is_refused(recorded, change, message):
    started, test, _ = recorded
    assert parse_record(test, started=started).task == 1
    with pytest.raises(BadRecord, match=message):
        parse_record({**test, **change}, started=started)


def test_a_damaged_head_choice_is_refused(recorded):
    started, _, end = recorded
    assert parse_record(end, started=started).kta == end["kta"]
    for bad in ([True], [0, 1], "yes"):
        with pytest.raises(BadRecord, match="kta"):
            parse_record({**end, "kta": bad}, started=started)


def test_transfer_attention_reads_each_similar_tasks_features():
    """The KTA head's output depends on the input only through the similar tasks' features:
    with one similar task whose mask is all zero, every input gives the same logits."""
    model = _masked_model(widths=(4, 4))
    kta = TransferAttention(width=4, head_sizes=[2] * 3, heads=2, dropout=0.0).eval()
    zero = [torch.zeros(4), torch.zeros(4)]
    ones = [torch.ones(4), torch.ones(4)]
    from prm.cat import similar_features

    x = torch.randn(5, 4)
    with torch.no_grad():
        flat = kta(2, similar_features(model.eval(), x, [zero]))
        varied = kta(2, similar_features(model, x, [ones, zero]))
    assert torch.allclose(flat, flat[:1].expand_as(flat))
    assert not torch.allclose(varied, varied[:1].expand_as(varied))
    assert np.isfinite(varied.numpy()).all()
