"""The training engine: HAT invariants, PRM's phases, every method, stop and failure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prm import masks as M
from prm.config import ConfigError, RunConfig
from prm.data import make_sequence
from prm.dtd import detect
from prm.engine import train_sequence
from prm.events import DTDResult, EpochEnd, RunEnd, TaskArrays, TaskEnd
from prm.model import MaskedMLP
from prm.trainer import Context, fit, run_alone, to_device
from tests.conftest import tiny_config


def record(cfg: RunConfig, **kwargs):
    events = []
    result = train_sequence(cfg, emit=events.append, **kwargs)
    return result, events


def arrays_of(events, kind="task"):
    return {e.task: e.arrays for e in events if isinstance(e, TaskArrays) and e.kind == kind}


@pytest.fixture(scope="module")
def hat_run():
    return record(tiny_config(method="hat"))


@pytest.fixture(scope="module")
def prm_run():
    return record(tiny_config(method="prm"))


def test_masks_stay_in_unit_interval_and_accumulated_mask_never_shrinks(hat_run):
    _, events = hat_run
    arrays = arrays_of(events)
    assert sorted(arrays) == [0, 1, 2]
    for layer in range(2):
        previous = np.zeros(32)
        for t in range(3):
            mask, acc = arrays[t][f"mask_l{layer}"], arrays[t][f"accumulated_l{layer}"]
            assert mask.min() >= 0 and mask.max() <= 1
            assert np.all(acc >= previous)
            assert np.allclose(acc, np.maximum(previous, mask))
            previous = acc


def test_hat_never_forgets(hat_run):
    # Every weight a task used is frozen afterwards, and its mask is binary at smax:
    # each column of R must stay exactly where it was when the task was learnt.
    result, _ = hat_run
    R = result.test_acc
    for i in range(3):
        assert np.all(R[i:, i] == R[i, i])


def _context(cfg: RunConfig) -> Context:
    return Context(cfg=cfg, device=torch.device("cpu"),
                   generator=torch.Generator().manual_seed(0), emit=lambda e: None, should_stop=lambda: False)


def _trained_first_task(cfg: RunConfig):
    torch.manual_seed(0)
    seq = make_sequence(cfg.sequence, seed=0, n_tasks=2)
    model = MaskedMLP(input_dim=seq.input_dim, hidden=cfg.model.hidden, head_sizes=[2, 2],
                      input_dropout=0.2, hidden_dropout=0.5, masked=True)
    ctx = _context(cfg)
    data = [to_device(t, ctx.device) for t in seq.tasks]
    run_alone(ctx, model, fit(ctx, model, 0, data[0], phase="train", max_epochs=4))
    with torch.no_grad():
        mask = [m.detach().clone() for m in model.masks(0, cfg.hat.smax)]
    return ctx, model, data, mask


@pytest.mark.parametrize("protected, moves", [("hat", False), ("prm-s", True)])
def test_weight_protected_by_every_previous_task(protected, moves):
    """Under HAT a weight whose two units the first task holds (min mask = 1) cannot move;
    under PRM(S) (every earlier task similar, relaxed mask p = 0) the same weight does."""
    cfg = tiny_config(method="hat")
    ctx, model, data, mask = _trained_first_task(cfg)
    frozen = M.weight_keep(mask[1], mask[0]) == 0
    assert frozen.sum() > 0, "the first task should hold some units fully"
    before = model.layers[1].weight.detach().clone()
    protect = mask if protected == "hat" else [torch.zeros_like(m) for m in mask]
    run_alone(ctx, model, fit(ctx, model, 1, data[1], phase="train", max_epochs=3, protect=protect, reg_used=mask))
    after = model.layers[1].weight.detach()
    changed = (after != before)[frozen]
    assert bool(changed.any()) is moves
    if not moves:
        assert torch.equal(after[frozen], before[frozen])
    assert bool((after != before)[~frozen].any())  # free weights do learn


def test_dtd_restores_the_saved_state_and_clusters_every_layer():
    cfg = tiny_config(method="prm")
    ctx, model, data, mask = _trained_first_task(cfg)
    emitted = []
    ctx.emit = emitted.append
    before = {k: v.clone() for k, v in model.state_dict().items()}
    decision = run_alone(ctx, model, detect(ctx, model, 1, data[1], mask, choose=lambda t, called: called,
                                            source="xmeans"))
    dissimilar, epochs = decision.dissimilar, decision.epochs
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(dissimilar) == 2 and set(epochs) == {"dtd-head", "dtd"}
    (dtd,) = [e for e in emitted if isinstance(e, DTDResult)]
    assert len(dtd.layers) == 2 and all(layer["xmeans"]["k"] >= 1 for layer in dtd.layers)
    (arrays,) = [e for e in emitted if isinstance(e, TaskArrays)]
    assert arrays.arrays["embeddings_l0"].shape == (2, 32)


def test_prm_emits_dtd_for_every_task_but_the_first(prm_run):
    result, events = prm_run
    dtd = [e for e in events if isinstance(e, DTDResult)]
    assert [d.task for d in dtd] == [1, 2]
    phases = {e.phase for e in events if isinstance(e, EpochEnd)}
    assert phases == {"dtd-head", "dtd", "train"}
    ends = [e for e in events if isinstance(e, TaskEnd)]
    assert all("dtd" in e.seconds for e in ends[1:]) and "dtd" not in ends[0].seconds
    assert isinstance(events[-1], RunEnd) and events[-1].status == "finished"
    for t, arrays in arrays_of(events).items():
        if t > 0:  # the relaxed mask is the max over the dissimilar tasks' masks
            d = next(x for x in dtd if x.task == t).layers[0]["dissimilar"]
            expected = np.zeros(32)
            for i in d:
                expected = np.maximum(expected, arrays_of(events)[i]["mask_l0"])
            assert np.allclose(arrays["protected_l0"], expected)


@pytest.mark.parametrize("method, expected", [
    ("prm-s", lambda t, tasks: []),
    ("prm-d", lambda t, tasks: list(range(t))),
    ("prm-t", lambda t, tasks: [i for i in range(t) if tasks[i]["family"] == "classes"
                                or tasks[t]["family"] == "classes"]),
])
def test_ablations_use_their_fixed_dissimilar_sets(method, expected):
    cfg = tiny_config(method=method, sequence="digits-mixed", n_tasks=4)
    _, events = record(cfg)
    for dtd in (e for e in events if isinstance(e, DTDResult)):
        for layer in dtd.layers:
            assert layer["dissimilar"] == expected(dtd.task, events[0].tasks)


def test_w_o_2so_skips_the_head_only_phase():
    cfg = tiny_config(method="prm")
    cfg = cfg.replace(prm=cfg.prm.__class__(two_stage=False, dtd_epochs=3))
    _, events = record(cfg)
    assert "dtd-head" not in {e.phase for e in events if isinstance(e, EpochEnd)}


@pytest.mark.parametrize("method", ["ncl", "ewc", "stl"])
def test_unmasked_methods_train_and_record_no_masks(method):
    result, events = record(tiny_config(method=method))
    assert result.status == "finished"
    assert not arrays_of(events)
    R = result.test_acc
    assert np.all(np.isnan(R[np.triu_indices(3, 1)])) and not np.isnan(R[np.tril_indices(3)]).any()
    if method == "stl":  # one network per task, never touched again
        for i in range(3):
            assert np.all(R[i:, i] == R[i, i])


def test_same_config_and_seed_give_the_same_run():
    cfg = tiny_config(method="prm", n_tasks=3)
    (a, ea), (b, eb) = record(cfg), record(cfg)
    assert np.array_equal(a.test_acc, b.test_acc, equal_nan=True)
    for t, arrays in arrays_of(ea).items():
        for name, value in arrays.items():
            assert np.array_equal(value, arrays_of(eb)[t][name]), name
    dtd_a = [e.layers for e in ea if isinstance(e, DTDResult)]
    assert dtd_a == [e.layers for e in eb if isinstance(e, DTDResult)]
    c, _ = record(cfg.replace(seed=1))
    assert not np.array_equal(a.test_acc, c.test_acc, equal_nan=True)


def test_should_stop_ends_the_run_as_stopped():
    calls = {"n": 0}

    def stop_after_five() -> bool:
        calls["n"] += 1
        return calls["n"] >= 5

    result, events = record(tiny_config(method="hat"), should_stop=stop_after_five)
    assert result.status == "stopped"
    assert isinstance(events[-1], RunEnd) and events[-1].status == "stopped"
    assert sum(isinstance(e, EpochEnd) for e in events) == 5


def test_a_crash_is_recorded_then_raised():
    events = []

    def broken_emit(event):
        events.append(event)
        if isinstance(event, TaskEnd):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        train_sequence(tiny_config(method="ncl"), emit=broken_emit)
    assert isinstance(events[-1], RunEnd) and events[-1].status == "failed"
    assert "disk full" in events[-1].error


@pytest.mark.parametrize("change, field", [
    (dict(method="bogus"), "method"),
    (dict(seed=-1), "seed"),
    (dict(n_tasks=0), "n_tasks"),
])
def test_impossible_configs_are_rejected_with_the_field_named(change, field):
    with pytest.raises(ConfigError, match=field):
        tiny_config(**change)


def test_config_round_trips_through_json_and_rejects_unknown_keys():
    import json

    cfg = tiny_config(method="prm-t")
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ConfigError, match="unknown"):
        RunConfig.from_dict({**cfg.to_dict(), "colour": "red"})
    with pytest.raises(ConfigError, match="lr"):
        RunConfig.from_dict({**cfg.to_dict(), "optim": {**cfg.to_dict()["optim"], "lr": -1}})


def test_true_groups_share_a_family_and_a_label_set():
    from prm.analysis import true_groups

    tasks = [{"family": "classes", "classes": [0, 1]}, {"family": "writers", "classes": list(range(10))},
             {"family": "classes", "classes": [2, 3]}, {"family": "writers", "classes": list(range(10))},
             {"family": "permuted", "classes": [1, 0, 2, 3, 4, 5, 6, 7, 8, 9]}]
    assert true_groups(tasks) == [0, 1, 2, 1, 3]
