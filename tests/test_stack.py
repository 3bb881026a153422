"""Runs trained together (prm.engine.train_together, prm.stack) record what they record alone.

Seeds of digits-mixed order its 10-class writer tasks and 2-class digit pairs differently, so
a stack of seeds holds heads of different sizes at one task position, tasks of different
sizes (and so batches per epoch) side by side, and runs that stop early at different epochs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from prm.config import CATConfig, ModelConfig, OptimConfig, PRMConfig, RecordConfig, RunConfig
from prm.engine import Job, train_sequence, train_together
from prm.run import RunWriter

SKIP = {"seconds", "error"}  # wall-clock fields: a stacked run's time is the stack's


def config(method: str, seed: int, **changes) -> RunConfig:
    return RunConfig(sequence="digits-mixed", n_tasks=3, method=method, seed=seed,
                     model=ModelConfig(hidden=(24, 24)), optim=OptimConfig(max_epochs=5, patience=2),
                     prm=PRMConfig(dtd_epochs=3, head_epochs=2), cat=CATConfig(detect_epochs=4),
                     record=RecordConfig(trajectory_every=1, projections=("pca",))).replace(**changes)


def close(a, b, path="") -> None:
    """Equal JSON values, numbers to float rounding."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            if k not in SKIP:
                close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-4), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def same_folder(alone: Path, together: Path) -> None:
    lines = [[json.loads(x) for x in (f / "events.jsonl").read_text().splitlines()] for f in (alone, together)]
    assert len(lines[0]) == len(lines[1])
    for a, b in zip(*lines):
        close(a, b)
    for name in sorted(p.relative_to(alone).as_posix() for p in (alone / "arrays").iterdir()):
        with np.load(alone / name) as a, np.load(together / name) as b:
            assert a.files == b.files
            for key in a.files:
                # Float rounding differs between one and several runs per matrix product and
                # grows over a few hundred steps (HAT's compensation scales embedding steps by
                # up to smax / s); float16 trajectories add a step of their own rounding.
                tol = 3e-3
                np.testing.assert_allclose(b[key].astype(np.float64), a[key].astype(np.float64), rtol=tol,
                                           atol=tol, err_msg=f"{name}:{key}")
    checkpoints = sorted((alone / "checkpoints").glob("*.safetensors")) if (alone / "checkpoints").exists() else []
    if checkpoints:
        from safetensors.torch import load_file

        for file in checkpoints:
            a, b = load_file(file), load_file(together / "checkpoints" / file.name)
            assert a.keys() == b.keys()
            for key in a:
                if a[key].dtype == torch.uint8:  # generator states: the very same draws
                    assert torch.equal(a[key], b[key]), key
                else:
                    torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["prm", "hat", "stl", "ncl", "cat"])
def test_a_stack_of_seeds_records_what_each_seed_records_alone(tmp_path, method):
    seeds = (0, 1, 2)
    for seed in seeds:
        writer = RunWriter(tmp_path / f"alone-{seed}", config=config(method, seed))
        train_sequence(config(method, seed), emit=writer, compile="off")
    jobs = [Job(config=config(method, seed), emit=RunWriter(tmp_path / f"together-{seed}", config=config(method, seed)))
            for seed in seeds]
    results = train_together(jobs, compile="off")
    assert [r.status for r in results] == ["finished"] * 3
    for seed in seeds:
        same_folder(tmp_path / f"alone-{seed}", tmp_path / f"together-{seed}")


@pytest.mark.parametrize("method", ["ewc", "joint"])
def test_a_stack_of_one_seed_thrice_is_bit_for_bit_a_solo_run(method):
    """Where runs' shapes agree (no padded heads), a slot computes exactly what a run alone
    does. EWC (lambda 5000) amplifies any rounding difference, so it is checked this way."""
    alone: list = []
    train_sequence(config(method, 0), emit=alone.append, compile="off")
    together: list[list] = [[], [], []]
    train_together([Job(config=config(method, 0), emit=together[k].append) for k in range(3)], compile="off")
    for events in together:
        assert len(events) == len(alone)
        for a, b in zip(alone, events):
            if type(a).__name__ == "TaskArrays":
                assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
            elif hasattr(a, "train_loss"):
                assert (a.train_loss, a.val_loss, a.val_acc) == (b.train_loss, b.val_loss, b.val_acc)
            elif hasattr(a, "test_acc"):
                assert a.test_acc == b.test_acc


def test_configurations_that_differ_in_numbers_share_a_stack(tmp_path):
    """A sweep's runs: other learning rate, lambda and dropout, one stack."""
    configs = [config("hat", 0), config("hat", 0, optim=OptimConfig(max_epochs=5, patience=2, lr=0.05)),
               config("hat", 1, hat=config("hat", 1).hat.__class__(lamb=0.25),
                      model=ModelConfig(hidden=(24, 24), hidden_dropout=0.2))]
    for i, cfg in enumerate(configs):
        train_sequence(cfg, emit=RunWriter(tmp_path / f"alone-{i}", config=cfg), compile="off")
    train_together([Job(config=c, emit=RunWriter(tmp_path / f"together-{i}", config=c)) for i, c in enumerate(configs)],
                   compile="off")
    for i in range(len(configs)):
        same_folder(tmp_path / f"alone-{i}", tmp_path / f"together-{i}")


def test_runs_of_other_shapes_are_refused():
    with pytest.raises(ValueError, match="separate stacks"):
        train_together([Job(config=config("hat", 0)), Job(config=config("hat", 0, model=ModelConfig(hidden=(16, 16))))],
                       compile="off")


def test_a_stopped_run_ends_alone_and_the_others_finish(tmp_path):
    calls = {"n": 0}

    def stop_soon() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    events = {0: [], 1: []}
    results = train_together([Job(config=config("prm", 0), emit=events[0].append, should_stop=stop_soon),
                              Job(config=config("prm", 1), emit=events[1].append)], compile="off")
    assert [r.status for r in results] == ["stopped", "finished"]
    assert events[0][-1].status == "stopped" and events[1][-1].status == "finished"


def test_a_head_only_step_gates_the_units_by_the_masks():
    """DTD's first stage trains the head on the masked features, as ``model(x, t, s)`` computes them."""
    from prm import step as S
    from prm.model import MaskedMLP
    from prm.stack import Request, Stack, make_phase

    torch.manual_seed(0)
    model = MaskedMLP(input_dim=5, hidden=(6, 4), head_sizes=[3, 2], input_dropout=0.0, hidden_dropout=0.0, masked=True)
    cfg = config("prm", 0, model=ModelConfig(hidden=(6, 4), input_dropout=0.0, hidden_dropout=0.0))
    stack = Stack(models=[model], configs=[cfg], stepper=S.sgd_step)
    x, s = torch.rand(7, 5), 3.0
    with torch.no_grad():
        expected, _ = model(x, 1, s)
    request = Request(phase=make_phase(model=model, task=1, head_only=True, protect=None, reg_used=None), x=x,
                      y=torch.zeros(7, dtype=torch.long), n=7, noise=torch.rand(7, 15), s=s, lr=0.0)
    _, logits = stack.step({0: request})[0]
    torch.testing.assert_close(logits, expected)


def test_the_compiled_stack_agrees_with_the_eager_one():
    from prm import step as S

    if not S.compiler_available():
        pytest.skip("no C++ compiler for torch.compile")
    runs = {}
    for mode in ("off", "on"):
        events: list[list] = [[], []]
        results = train_together([Job(config=config("hat", s), emit=events[s].append) for s in (0, 1)], compile=mode)
        assert [r.status for r in results] == ["finished", "finished"]
        runs[mode] = events
    for eager, compiled in zip(runs["off"], runs["on"]):
        first = [next(e for e in events if type(e).__name__ == "EpochEnd") for events in (eager, compiled)]
        assert first[1].train_loss == pytest.approx(first[0].train_loss, rel=1e-4)
        assert first[1].val_loss == pytest.approx(first[0].val_loss, rel=1e-4)
        started = [next(e for e in events if type(e).__name__ == "RunStarted") for events in (eager, compiled)]
        assert (started[0].compiled, started[1].compiled) == (False, True)


def test_a_failed_step_fails_every_run_and_ctrl_c_stops_every_run(monkeypatch):
    from prm.stack import Stack

    original, calls = Stack.step, {"n": 0}

    def failing(self, requests):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("out of memory, say")
        return original(self, requests)

    monkeypatch.setattr(Stack, "step", failing)
    events: list[list] = [[], []]
    with pytest.raises(RuntimeError, match="out of memory"):
        train_together([Job(config=config("prm", s), emit=events[s].append) for s in (0, 1)], compile="off")
    assert [e[-1].status for e in events] == ["failed", "failed"]
    assert "out of memory" in events[1][-1].error

    monkeypatch.setattr(Stack, "step", original)

    def interrupt():
        raise KeyboardInterrupt

    events = [[], []]
    with pytest.raises(KeyboardInterrupt):
        train_together([Job(config=config("prm", 0), emit=events[0].append, should_stop=interrupt),
                        Job(config=config("prm", 1), emit=events[1].append)], compile="off")
    assert [e[-1].status for e in events] == ["stopped", "stopped"]
