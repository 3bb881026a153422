"""What-if runs (prm.whatif): exact reproduction with the parent's own decision, a different
decision changing the run, hardened checkpoints, the CLI's refusals, the child's parent link,
and the explorer's child-minus-parent panel."""

from __future__ import annotations

import json
import os
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from explorer import state as keys
from explorer.figures.common import fmt
from prm import checkpoint, whatif
from prm.cli import main
from prm.config import ModelConfig, OptimConfig, PRMConfig, RecordConfig, RunConfig
from prm.engine import train_sequence
from prm.events import TaskCheckpoint
from prm.run import RunFormatError, load_run, RunWriter

PARENT_CONFIG = RunConfig(
    sequence="digits-mixed", n_tasks=4, method="prm", seed=0, model=ModelConfig(hidden=(32, 32)),
    optim=OptimConfig(max_epochs=6, patience=2), prm=PRMConfig(dtd_epochs=4, head_epochs=2),
    record=RecordConfig(trajectory_every=1, projections=("pca",)))


def record(cfg: RunConfig, out: Path) -> Path:
    train_sequence(cfg, emit=RunWriter(out, config=cfg))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A parent and two children: its own decision at T3 (per layer), and a different one."""
    root = tmp_path_factory.mktemp("whatif")
    parent = record(PARENT_CONFIG, root / "parent")
    own = [e["dissimilar"] for e in load_run(parent).state.dtd[2].layers]
    same = root / "same"
    whatif.run(whatif.plan(parent, task=2, dissimilar=own), same)
    flipped = [[0, 1] if d != [0, 1] else [] for d in own]
    other = root / "other"
    whatif.run(whatif.plan(parent, task=2, dissimilar=flipped), other)
    return {"root": root, "parent": parent, "same": same, "other": other, "own": own, "flipped": flipped}


def test_the_parents_own_decision_reproduces_the_parent_exactly(runs):
    parent, child = load_run(runs["parent"]), load_run(runs["same"])
    assert child.status == "finished" and not child.warnings
    for split in ("test", "val"):
        R = parent.state.accuracy_matrix(split)
        assert np.isfinite(np.diag(R)).all()
        assert np.array_equal(R, child.state.accuracy_matrix(split), equal_nan=True)
    for t in (2, 3):  # the resumed tasks' masks are bit-identical too
        assert np.array_equal(parent.mask(t, 1), child.mask(t, 1))


def test_a_different_decision_changes_the_run(runs):
    parent, child = load_run(runs["parent"]), load_run(runs["other"])
    assert [e["dissimilar"] for e in child.state.dtd[2].layers] == runs["flipped"]
    assert child.state.dtd[2].source == "whatif"
    assert [e["dissimilar_xmeans"] for e in child.state.dtd[2].layers] == \
        [e["dissimilar_xmeans"] for e in parent.state.dtd[2].layers]  # DTD still ran and is recorded
    R, C = parent.state.accuracy_matrix("test"), child.state.accuracy_matrix("test")
    assert np.array_equal(R[:2], C[:2], equal_nan=True)  # the replayed tasks
    assert not np.array_equal(R[2:], C[2:], equal_nan=True)
    assert not np.array_equal(parent.protected(2, 0), child.protected(2, 0))


def test_the_child_names_its_parent_and_replays_its_records(runs):
    child = load_run(runs["other"])
    link = child.parent
    assert link.run == str(runs["parent"].resolve()) and link.name == "parent" and link.task == 2
    assert [list(d) for d in link.dissimilar] == runs["flipped"]
    assert link.similar(0) == [i for i in range(2) if i not in runs["flipped"][0]]
    assert load_run(runs["parent"]).parent is None
    parent = load_run(runs["parent"])
    assert child.state.dtd[1] == parent.state.dtd[1]
    assert [e for e in child.state.epochs if e.task < 2] == [e for e in parent.state.epochs if e.task < 2]
    assert np.array_equal(child.embedding(1, 0), parent.embedding(1, 0))
    assert sorted(p.name for p in (runs["other"] / "checkpoints").iterdir()) == \
        ["task_001.safetensors", "task_002.safetensors", "task_003.safetensors"]
    meta = json.loads((runs["other"] / "run.json").read_text())
    meta["parent"]["dissimilar"] = [[5], [0]]  # a task after the what-if: refused, the run still loads
    (runs["root"] / "bad-link").mkdir()
    for name in ("events.jsonl",):
        (runs["root"] / "bad-link" / name).write_bytes((runs["other"] / name).read_bytes())
    (runs["root"] / "bad-link" / "run.json").write_text(json.dumps(meta))
    assert load_run(runs["root"] / "bad-link").parent is None


def _read(folder: Path, task: int) -> checkpoint.Checkpoint:
    run = load_run(folder)
    return checkpoint.read(folder, task, config=run.config, input_dim=run.state.started.input_dim,
                           head_sizes=[t["n_classes"] for t in run.state.tasks])


def test_checkpoint_round_trip(runs):
    point = _read(runs["parent"], 2)
    assert point.task == 2 and len(point.task_masks) == 2
    run = load_run(runs["parent"])
    for i in range(2):
        for l in range(2):
            assert np.array_equal(point.task_masks[i][l].numpy(), run.mask(i, l))
    assert point.model["embedding.weight"].shape == (4, 64)
    event = TaskCheckpoint(task=2, tensors={**{f"model.{k}": v for k, v in point.model.items()},
                                            **{f"mask.{i}.{l}": m for i, ms in enumerate(point.task_masks)
                                               for l, m in enumerate(ms)},
                                            "rng.torch": point.rng_torch, "rng.generator": point.rng_generator},
                           metadata={"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "task": "2",
                                     "config_sha256": checkpoint.config_hash(run.config)})
    from safetensors.torch import load

    again = load(checkpoint.encode(event))
    assert all(torch.equal(again[k], v) for k, v in event.tensors.items())


def _poison(data: bytes, key: str) -> bytes:
    """The checkpoint with the first value of tensor ``key`` replaced by NaN."""
    n = int.from_bytes(data[:8], "little")
    start = 8 + n + json.loads(data[8:8 + n])[key]["data_offsets"][0]
    return data[:start] + np.float32(np.nan).tobytes() + data[start + 4:]


def _damaged(runs, name: str, change) -> Path:
    folder = runs["root"] / name
    if not folder.exists():
        folder.mkdir()
        for f in ("run.json", "events.jsonl"):
            (folder / f).write_bytes((runs["parent"] / f).read_bytes())
        shutil.copytree(runs["parent"] / "arrays", folder / "arrays")
        (folder / "checkpoints").mkdir()
    data = (runs["parent"] / "checkpoints" / "task_002.safetensors").read_bytes()
    target = folder / "checkpoints" / "task_002.safetensors"
    target.unlink(missing_ok=True)
    change(target, data)
    return folder


@pytest.mark.parametrize("name, change, message", [
    ("truncated", lambda p, d: p.write_bytes(d[: len(d) // 2]), "truncated"),
    ("tiny", lambda p, d: p.write_bytes(d[:5]), "truncated"),
    ("garbage", lambda p, d: p.write_bytes(b"\xff" * len(d)), "not a safetensors file"),
    ("other-task", lambda p, d: p.write_bytes(d.replace(b'"task":"2"', b'"task":"1"')), "metadata"),
    ("nan", lambda p, d: p.write_bytes(_poison(d, "model.layers.0.bias")), "non-finite"),
    ("fifo", lambda p, d: __import__("os").mkfifo(p), "not a regular file"),
    ("link-out", lambda p, d: p.symlink_to("/etc/passwd"), "outside the run folder"),
])
def test_a_bad_checkpoint_is_a_clear_error(runs, name, change, message):
    folder = _damaged(runs, name, change)
    with pytest.raises(RunFormatError, match=message):
        _read(folder, 2)


def test_a_checkpoint_of_another_config_is_refused(runs):
    with pytest.raises(RunFormatError, match=r"is not a F32 tensor of shape \(48, 64\)"):  # a wider network
        checkpoint.read(runs["parent"], 2, config=PARENT_CONFIG.replace(model=ModelConfig(hidden=(48, 48))),
                        input_dim=64, head_sizes=[2, 10, 2, 10])
    with pytest.raises(RunFormatError, match="the run's config changed"):  # same shapes, another recipe
        checkpoint.read(runs["parent"], 2, config=PARENT_CONFIG.replace(seed=1), input_dim=64, head_sizes=[2, 10, 2, 10])


def test_a_log_that_sizes_a_huge_checkpoint_never_has_it_read(runs, tmp_path):
    """input_dim 10^7 in the event log (a layout of 1.3 GB) and a 1 GiB task_003 checkpoint:
    a clear error from the log's numbers, and the checkpoint is never read."""
    folder = tmp_path / "huge"
    shutil.copytree(runs["parent"], folder)
    records = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    for r in records:
        if r["type"] == "run_started":
            r["input_dim"] = 10**7
    (folder / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    os.truncate(folder / "checkpoints" / "task_002.safetensors", 2**30)  # sparse: cheap to make
    tracemalloc.start()
    try:
        with pytest.raises(whatif.WhatIfError) as caught:
            whatif.plan(folder, task=2, similar=[0])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(caught.value)
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def one_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prm: error:") and "\n" not in err, err
    return err


def test_cli_refusals(runs, tmp_path, capsys):
    parent = str(runs["parent"])
    out = str(tmp_path / "child")
    assert "from 2 to 4" in one_error(["whatif", parent, "--task", "1", "--similar", "none", "--out", out], capsys)
    assert "from 2 to 4" in one_error(["whatif", parent, "--task", "5", "--similar", "none", "--out", out], capsys)
    assert "only tasks learnt before task 3" in one_error(
        ["whatif", parent, "--task", "3", "--similar", "3", "--out", out], capsys)
    assert "cannot read the parent run" in one_error(
        ["whatif", str(tmp_path / "nothing"), "--task", "2", "--similar", "", "--out", out], capsys)
    taken = tmp_path / "taken"
    (taken / "x").mkdir(parents=True)
    assert "already exists" in one_error(["whatif", parent, "--task", "2", "--similar", "", "--out", str(taken)],
                                         capsys)
    assert "no checkpoint for the start of task 3" in one_error(
        ["whatif", str(_damaged(runs, "missing", lambda p, d: None)), "--task", "3", "--similar", "1", "--out", out],
        capsys)
    assert "the checkpoint is unusable" in one_error(
        ["whatif", str(runs["root"] / "truncated"), "--task", "3", "--similar", "1", "--out", out], capsys)
    earlier = tmp_path / "earlier-damaged"  # a checkpoint the child would replay: refused before anything is written
    shutil.copytree(runs["parent"], earlier)
    (earlier / "checkpoints" / "task_001.safetensors").write_bytes(b"garbage")
    assert "the checkpoint is unusable" in one_error(
        ["whatif", str(earlier), "--task", "3", "--similar", "1", "--out", out], capsys)
    assert not Path(out).exists()


def test_without_checkpoints_or_dtd_whatif_refuses(tmp_path, capsys):
    bare = record(PARENT_CONFIG.replace(n_tasks=2, record=RecordConfig(projections=("pca",), checkpoints=False)),
                  tmp_path / "bare")
    assert not (bare / "checkpoints").exists()
    err = one_error(["whatif", str(bare), "--task", "2", "--similar", "none", "--out", str(tmp_path / "c")], capsys)
    assert "without checkpoints (--no-checkpoints)" in err
    hat = record(PARENT_CONFIG.replace(n_tasks=2, method="hat"), tmp_path / "hat")
    assert (hat / "checkpoints" / "task_001.safetensors").is_file()  # every masked method keeps them
    err = one_error(["whatif", str(hat), "--task", "2", "--similar", "1", "--out", str(tmp_path / "c")], capsys)
    assert "method hat has no dissimilar-task detection" in err


def test_cli_whatif_and_no_checkpoints_option(runs, tmp_path, capsys):
    out = tmp_path / "cli-child"
    assert main(["whatif", str(runs["parent"]), "--task", "4", "--similar", "1,3", "--out", str(out), "--quiet"]) == 0
    child = load_run(out)
    assert child.parent.task == 3 and child.parent.similar(0) == [0, 2] and child.parent.similar(1) == [0, 2]
    assert [e["dissimilar"] for e in child.state.dtd[3].layers] == [[1], [1]]
    assert "(whatif)" in capsys.readouterr().out
    plain = tmp_path / "plain"
    assert main(["run", "--sequence", "digits-classes", "--n-tasks", "2", "--width", "16", "--epochs", "2",
                 "--dtd-epochs", "1", "--head-epochs", "1", "--no-umap", "--quiet", "--no-checkpoints",
                 "--out", str(plain)]) == 0
    assert not (plain / "checkpoints").exists() and load_run(plain).config.record.checkpoints is False


def test_ctrl_c_leaves_a_loadable_stopped_child(runs, tmp_path):
    calls = []

    def stop() -> bool:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return False

    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        whatif.run(whatif.plan(runs["parent"], task=2, similar=[0]), out, should_stop=stop)
    child = load_run(out)
    assert child.status == "stopped" and child.parent.task == 2 and child.state.tasks_done == 2


def _panel(child: str, root: str, step: int) -> None:
    from pathlib import Path

    from explorer.views import whatif as view
    from explorer.views.common import Context, entries, load

    found = entries([Path(root)])
    run = load(Path(child))
    entry = next(e for e in found if e.path == Path(child))
    view.render(Context(run=run, entry=entry, task=step, layer=0, entries=tuple(found)), step=step, layer=0)


def test_explorer_shows_child_minus_parent(runs):
    at = AppTest.from_function(_panel, kwargs={"child": str(runs["other"]), "root": str(runs["root"]), "step": 2},
                               default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    text = "\n".join(str(x.value) for kind in ("markdown", "caption", "info") for x in getattr(at, kind))
    assert "This run is a what-if of **parent**" in text
    figs = at.get("plotly_chart")
    assert figs
    cells = json.loads(figs[0].proto.spec)["data"][0]["text"]  # the values written in, 2 decimals, signed
    expected = load_run(runs["other"]).state.accuracy_matrix("test") - load_run(runs["parent"]).state.accuracy_matrix("test")
    assert np.nanmax(np.abs(expected)) > 0.005
    assert cells == [[fmt(v, 2, signed=True) if np.isfinite(v) else "" for v in row] for row in expected]
    df = at.dataframe[0].value
    assert df["Acc change"].iloc[0] != "n/a" and "similar" in df["forced decision"].iloc[0]
    # opening the parent lists its children (same, other, and any made since) with their differences
    at = AppTest.from_function(_panel, kwargs={"child": str(runs["parent"]), "root": str(runs["root"]), "step": 2},
                               default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    names = set(at.dataframe[0].value["what-if run"])
    assert {"same", "other"} <= names
    assert any(b.label == "Train this what-if" for b in at.button)


def _open(folder: Path, root: Path, view: str) -> AppTest:
    """The whole app, as a user opens the child from the run picker (runs folder = ``root``)."""
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "explorer" / "app.py"), default_timeout=90)
    at.session_state[keys.RUNS_DIR] = str(root)
    at.query_params[keys.RUN] = str(folder.resolve())
    at.query_params[keys.VIEW] = view
    at.query_params[keys.TASK] = "T3"
    return at.run()


@pytest.mark.parametrize("view", [keys.STORY, keys.CLUSTERING])
def test_a_whatif_child_opens_in_the_app(runs, view):
    """A what-if child is an ordinary run: the Story view tells it like any other, and its
    Clustering view shows the forced decision and child minus parent."""
    at = _open(runs["other"], runs["root"], view)
    assert not at.exception, [e.value for e in at.exception]
    assert at.markdown[0].value.startswith("### other")  # the child is open, not a fallback run
    if view == keys.STORY:
        from explorer.views.story import STEPS

        assert [h.value for h in at.subheader] == list(STEPS)
        return
    text = "\n".join(str(x.value) for kind in ("markdown", "caption", "info") for x in getattr(at, kind))
    assert "This run is a what-if of **parent**" in text
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any(t.startswith("other: child − parent test accuracy") for t in titles), titles


def test_a_whatif_run_is_its_own_experiment(runs):
    """Compare never averages a what-if with its parent's seed, nor picks it by default, and
    the Story never takes it for a sibling: its decision was forced."""
    from explorer import catalog
    from prm import analysis
    from prm import compare as compare_tables

    parent, child = catalog.describe(runs["parent"]), catalog.describe(runs["other"])
    assert parent.parent is None and child.parent is not None and child.parent.task == 2
    assert child.config != parent.config and child.setup == parent.setup
    assert catalog.whatif_tag(child.parent) == "what-if T3: similar " + (
        ", ".join(f"T{i + 1}" for i in child.parent.similar(0)) or "none")
    states = {"parent": (load_run(runs["parent"]).state, 0), "other": (load_run(runs["other"]).state, 0)}
    table = compare_tables.per_run(states, variants={"other": catalog.whatif_tag(child.parent)})
    groups = compare_tables.per_method(table)
    assert len(groups) == 2 and list(groups["seeds"]) == [1, 1]
    assert analysis.siblings(parent, [parent, child]) == {"prm": parent}
    at = _open(runs["parent"], runs["root"], keys.COMPARE)
    assert not at.exception, [e.value for e in at.exception]
    picked = at.multiselect(key=keys.COMPARE_RUNS).value
    assert picked[0] == str(runs["parent"].resolve())
    assert not [k for k in picked if catalog.describe(catalog.resolve(k)).parent is not None], picked
