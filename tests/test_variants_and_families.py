"""The PRM+ variant, DTD with all layers together, the minimum of batches per epoch, and the
per-family metrics of ``compare`` (hand-written matrices)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prm import metrics
from prm.cli import build_parser
from prm.cli.options import run_config
from prm.cli.reports import family_table
from prm import methods
from prm.config import ConfigError, ModelConfig, OptimConfig, PRMConfig, RecordConfig, RunConfig, preset
from prm.engine import train_sequence
from prm.stack import Stack
from prm.events import DTDResult

nan = np.nan
R = np.array([[0.9, nan, nan, nan],
              [0.8, 0.7, nan, nan],
              [0.7, 0.6, 0.95, nan],
              [0.6, 0.5, 0.90, 0.80]])
STL = np.array([1.0, 0.8, 0.9, 0.7])


def test_metrics_over_a_subset_of_tasks_by_hand():
    assert metrics.average_accuracy(R, [0, 2]) == pytest.approx((0.6 + 0.9) / 2)
    assert metrics.just_learnt(R, [0, 2]) == pytest.approx((0.9 + 0.95) / 2)
    assert metrics.backward_transfer(R, [0, 2]) == pytest.approx(((0.6 - 0.9) + (0.9 - 0.95)) / 2)
    assert metrics.forward_transfer(R, STL, [1, 3]) == pytest.approx(((0.7 - 0.8) + (0.8 - 0.7)) / 2)
    assert metrics.just_learnt(R) == pytest.approx((0.9 + 0.7 + 0.95 + 0.8) / 4)
    # Acc = just learnt + BWT, on any subset
    assert metrics.average_accuracy(R, [1, 3]) == pytest.approx(metrics.just_learnt(R, [1, 3])
                                                                + metrics.backward_transfer(R, [1, 3]))


def test_a_subset_uses_only_learnt_tasks_and_refuses_an_empty_one():
    partial = R.copy()
    partial[3] = nan
    assert metrics.average_accuracy(partial, [0, 3]) == pytest.approx(0.7)  # task 3 not learnt yet
    with pytest.raises(ValueError, match="none of the selected tasks"):
        metrics.backward_transfer(partial, [3])


def test_family_table_splits_by_family_and_measures_fwt_against_stl_of_the_same_seed():
    fams = ["writers", "classes", "writers", "classes"]
    results = {("seq", "prm", 0): (R, 1.0, fams), ("seq", "stl", 0): (np.diag(STL) + np.tril(np.ones((4, 4)), -1) * 0.5,
                                                                    1.0, fams)}
    rows = {(r["method"], r["family"]): r for r in family_table(results)}
    writers = rows[("prm", "writers")]
    assert writers["tasks"] == "2"
    assert writers["acc"][0] == pytest.approx((0.6 + 0.9) / 2)
    assert writers["diag"][0] == pytest.approx((0.9 + 0.95) / 2)
    assert writers["bwt"][0] == pytest.approx(((0.6 - 0.9) + (0.9 - 0.95)) / 2)
    assert writers["fwt"][0] == pytest.approx(((0.9 - 1.0) + (0.95 - 0.9)) / 2)
    assert rows[("prm", "classes")]["fwt"][0] == pytest.approx(((0.7 - 0.8) + (0.8 - 0.7)) / 2)
    assert rows[("stl", "classes")]["fwt"][0] == pytest.approx(0.0)


def test_preset_and_the_cli_give_prm_plus_its_levers_and_explicit_options_win():
    cfg = preset("default", method="prm+")
    for name, value in methods.get("prm+").levers.items():
        assert getattr(cfg.prm, name) == value
    assert preset("default", method="prm").prm == PRMConfig()  # the paper's recipe stays the default
    args = build_parser().parse_args(["run", "--method", "prm+", "--threshold", "0.45", "--relax", "1"])
    cli = run_config(args, sequence="digits-mixed", method="prm+", seed=0)
    assert cli.method == "prm+" and cli.prm.threshold == 0.45 and cli.prm.relax == 1.0
    assert cli.prm.clustering == methods.get("prm+").levers["clustering"]


def test_layers_is_validated():
    with pytest.raises(ConfigError, match="prm.layers"):
        RunConfig(prm=PRMConfig(layers="both"))


def tiny(**prm) -> RunConfig:
    return RunConfig(sequence="digits-mixed", n_tasks=4, method="prm", seed=3, model=ModelConfig(hidden=(16, 8)),
                     optim=OptimConfig(max_epochs=2, patience=1), record=RecordConfig(projections=("pca",)),
                     prm=PRMConfig(dtd_epochs=2, head_epochs=1, **prm))


@pytest.mark.parametrize("rule", ["xmeans", "cut", "linkage"])
def test_dtd_with_layers_together_makes_one_call_for_every_layer(rule):
    events = []
    train_sequence(tiny(layers="together", clustering=rule, threshold=0.5), emit=events.append)
    dtds = [e for e in events if isinstance(e, DTDResult)]
    assert len(dtds) == 3
    for dtd in dtds:
        assert dtd.source == rule
        first = dtd.layers[0]["dissimilar"]
        assert all(layer["dissimilar"] == first for layer in dtd.layers)


def test_a_tiny_task_gets_at_least_min_batches_batches_per_epoch(monkeypatch):
    sizes = []
    original = Stack.step

    def spy(self, requests):  # n: the real rows of a padded last batch
        sizes.extend(q.n for q in requests.values())
        return original(self, requests)

    monkeypatch.setattr(Stack, "step", spy)
    cfg = RunConfig(sequence="digits-writers-few", shots=2, n_tasks=1, method="hat", seed=0,
                    model=ModelConfig(hidden=(16, 16)), optim=OptimConfig(max_epochs=1, batch_size=16, min_batches=5),
                    record=RecordConfig(projections=("pca",)))
    train_sequence(cfg)
    assert sum(sizes) == 20 and len(sizes) == 5 and max(sizes) == 4  # 20 images: batch 4, not 2 batches of 16
    sizes.clear()
    train_sequence(cfg.replace(optim=OptimConfig(max_epochs=1, batch_size=16, min_batches=1)))
    assert sizes == [16, 4]
    sizes.clear()
    big = cfg.replace(sequence="digits-writers", shots=None)  # 77-81 training images: already 5 batches of 16
    train_sequence(big)
    assert max(sizes) == 16 and len(sizes) == math.ceil(sum(sizes) / 16)


def test_table_from_recorded_runs_matches_compare(tmp_path, capsys):
    from prm.cli import main

    out = tmp_path / "runs"
    common = ["--sequence", "digits-writers-few", "--n-tasks", "2", "--seeds", "0", "--epochs", "2", "--width", "16",
              "--quiet", "--no-umap"]
    assert main(["compare", "--methods", "hat,joint", "--out-dir", str(out), "--families", *common]) == 0
    compared = capsys.readouterr().out
    folders = sorted(str(p) for p in out.iterdir())
    assert len(folders) == 3  # hat, joint and the STL reference
    assert main(["table", *folders, "--families"]) == 0
    tabled = capsys.readouterr().out

    def without_ct(text: str) -> list[list[str]]:  # CT differs: compare times training, the run its whole log
        main_table = text.split("per task family")[0]
        return [line.split()[:-3] for line in main_table.splitlines() if line.startswith("digits-writers-few")]

    assert [r for r in without_ct(tabled) if r[1] != "stl"] == without_ct(compared)
    assert "per task family" in tabled and "writers" in tabled
    (out / "broken").mkdir()
    assert main(["table", *folders, str(out / "broken")]) == 0
    assert "skipped" in capsys.readouterr().err


def test_show_names_the_rule_that_decided_instead_of_calling_it_undecided(capsys):
    from prm.cli import main

    assert main(["show", "sample_runs/digits-mixed-binary-prm+-s4"]) == 0
    printed = capsys.readouterr().out
    assert "T2   layer 0: k=1 dissimilar=[T1] (linkage)" in printed and "(undecided)" not in printed
