"""prm.tune: the search space, storages, PS, and the study loops (resume, parallel workers,
interrupts) with a stand-in for training; the CLI end to end on tiny runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from prm import storages, tune
from prm.config import CATConfig, RunConfig
from prm.engine import RunResult

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n-tasks", "3", "--epochs", "2", "--width", "16", "--dtd-epochs", "2", "--head-epochs", "1", "--compile", "off"]


def _fake_train(*, fail_at: int | None = None, delay: float = 0.0, log: list | None = None):
    """A stand-in for training: the run folder, and an accuracy that is a known function of
    the trial's config (val = 1 - |lr - 0.05|, test = val - 0.01)."""
    import time

    def train(config: RunConfig, run_dir: Path, number: int) -> RunResult:
        if number == fail_at:
            raise KeyboardInterrupt
        run_dir.mkdir(parents=True)
        time.sleep(delay)
        if log is not None:
            log.append((number, threading.get_ident()))
        val = 1.0 - abs(config.optim.lr - 0.05)
        R = np.full((2, 2), np.nan)
        R[0, 0], R[1] = val, [val, val]
        return RunResult(status="finished", test_acc=R - 0.01, val_acc=R, seconds=1.0)
    return train


def _run_tune(url: str, tmp: Path, trials: int, *, seed: int = 0, **kw) -> tune.Study:
    cfg = RunConfig(sequence="digits-mixed", method="hat", seed=seed)
    return tune.tune(config=cfg, url=url, study_name="s", trials=trials, runs_dir=tmp / "runs",
                     train=kw.pop("train", _fake_train()), families=["writer", "writer"], **kw)


def test_search_space_follows_the_method():
    names = lambda m: [r.name for r in tune.search_space(m)]  # noqa: E731
    assert names("prm") == names("hat") == ["input_dropout", "hidden_dropout", "lr", "lamb"]
    assert names("ewc") == ["input_dropout", "hidden_dropout", "lr", "ewc_lambda"]
    assert names("ncl") == ["input_dropout", "hidden_dropout", "lr"]
    defaults = RunConfig()
    for r in tune.search_space("prm") + tune.search_space("ewc"):  # the defaults lie inside every range
        section = getattr(defaults, r.section) if r.section else defaults
        assert r.low <= getattr(section, r.field) <= r.high, r.name


def test_apply_params_sets_fields_and_lr_min_follows():
    cfg = tune.apply_params(RunConfig(method="ewc"), {"input_dropout": 0.1, "hidden_dropout": 0.3, "lr": 0.00005,
                                                      "ewc_lambda": 42.0})
    assert (cfg.model.input_dropout, cfg.model.hidden_dropout, cfg.ewc_lambda) == (0.1, 0.3, 42.0)
    assert cfg.optim.lr == cfg.optim.lr_min == 0.00005
    with pytest.raises(tune.StorageError, match="lamb is not tuned for ncl"):
        tune.apply_params(RunConfig(method="ncl"), {"lamb": 1.0})


def test_setup_key_ignores_seed_and_tuned_values_only():
    a = RunConfig(method="hat", seed=0)
    assert tune.study_key(a) == tune.study_key(tune.apply_params(a.replace(seed=5), {"lr": 0.02, "lamb": 2.0}))
    assert tune.study_key(a) != tune.study_key(a.replace(n_tasks=3))
    assert tune.study_key(a) == tune.study_key(a.replace(record=a.record.__class__(checkpoints=False)))


def test_the_bundled_studies_still_match_their_own_trials_set_up():
    """A config section added later (CAT's) must not change what older studies were made for:
    each bundled study's ``setup`` equals the key of its best trial's recorded config."""
    import optuna

    from prm.run import load_run

    url = f"sqlite:///{ROOT / 'sample_runs' / 'tuning' / 'optuna.db'}"
    checked = 0
    for summary in optuna.get_all_study_summaries(url):
        study = optuna.load_study(study_name=summary.study_name, storage=url)
        folder = ROOT / "sample_runs" / "tuning" / summary.study_name
        for trial in sorted(folder.iterdir()):
            assert study.user_attrs["setup"] == tune.study_key(load_run(trial).config), summary.study_name
            checked += 1
    assert checked >= 4
    cat = RunConfig(method="cat")
    assert tune.study_key(cat) != tune.study_key(cat.replace(cat=CATConfig(kta_weight=0.5)))


def test_a_worker_waits_for_the_study_attributes_another_is_writing(tmp_path):
    """The first worker creates the study, then writes what it was made for one attribute at a
    time; a second worker opening it in between must wait, not refuse the study."""
    import optuna

    url = f"sqlite:///{tmp_path / 'o.db'}"
    attrs = {"kind": "tune", "setup": "abc", "space": "xyz"}
    optuna.create_study(storage=url, study_name="s").set_user_attr("kind", "tune")
    writer = threading.Timer(0.3, lambda: [optuna.load_study(study_name="s", storage=url).set_user_attr(k, v)
                                           for k, v in attrs.items() if k != "kind"])
    writer.start()
    study = tune._open(url, "s", sampler=None, attrs=attrs)
    writer.join()
    assert study.user_attrs == attrs
    with pytest.raises(tune.StorageError, match="was made for"):
        tune._open(url, "s", sampler=None, attrs={**attrs, "space": "other"})


def test_parameter_sensitivity_by_hand():
    assert tune.parameter_sensitivity([0.9, 0.8, 0.7]) == pytest.approx(np.sqrt(((0.1**2) * 2) / 3))
    assert tune.parameter_sensitivity([0.9]) is None
    assert tune.parameter_sensitivity([0.5, float("nan"), 0.7]) == pytest.approx(0.1)


@pytest.mark.parametrize("url, message", [
    ("runs/optuna.db", "is not a URL"),
    ("redis://localhost/0", "unknown kind 'redis'"),
])
def test_bad_storage_urls_are_one_clear_error(url, message):
    with pytest.raises(tune.StorageError, match=message):
        tune.open_storage(url)


def test_reading_never_creates_a_storage(tmp_path):
    for url in (f"sqlite:///{tmp_path}/none.db", f"journal:///{tmp_path}/none.log"):
        with pytest.raises(tune.StorageError, match="does not exist"):
            tune.study_names(url)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "folder.db").mkdir()
    with pytest.raises(tune.StorageError, match="is a folder"):
        tune.open_storage(f"sqlite:///{tmp_path}/folder.db")


def _recorded(run_dir: str | None, relative: str | None = None) -> tune.Trial:
    """A complete trial whose folder is recorded as ``run_dir`` (and ``run_dir_relative``)."""
    return tune.Trial(number=0, state="complete", params={}, val_acc=0.9, test_acc=0.9, bwt=0.0, seconds=1.0,
                      run_dir=run_dir, run_dir_relative=relative, host="h", note=None, test_matrix=None, families=())


def test_a_file_storage_records_run_folders_relative_to_itself(tmp_path, monkeypatch):
    """Relative to the storage file's folder where the folder lies below it (a study copied
    with its folders opens anywhere); absolute only for a server or a runs folder elsewhere."""
    url = f"sqlite:///{tmp_path / 'studies' / 'o.db'}"
    assert tune.recorded_folder(tmp_path / "studies" / "s" / "trial-0001", url) == "s/trial-0001"
    assert tune.recorded_folder(tmp_path / "elsewhere" / "trial-0001", url) == str(tmp_path / "elsewhere" / "trial-0001")
    assert tune.recorded_folder(tmp_path / "t", f"journal:///{tmp_path / 'j.log'}") == "t"
    assert tune.recorded_folder(tmp_path / "t", "postgresql://u@h/db") == str(tmp_path / "t")
    monkeypatch.chdir(tmp_path)  # a relative URL and folder, as the CLI's default runs/optuna.db
    assert tune.recorded_folder(Path("runs/tune-x/trial-0000"), "sqlite:///runs/optuna.db") == "tune-x/trial-0000"


def test_run_folder_prefers_the_copy_beside_the_storage(tmp_path):
    """A storage copied (with its folders) from a checkout that still exists: the copy's own
    folder is the trial's, not the original's, whether the record is this version's (relative
    run_dir) or an earlier one's (absolute run_dir and run_dir_relative)."""
    original, copy = tmp_path / "original", tmp_path / "clone"
    for home in (original, copy):
        (home / "s" / "trial-0001").mkdir(parents=True)
    url = f"sqlite:///{copy / 'o.db'}"
    assert tune.run_folder(url, _recorded("s/trial-0001")) == copy / "s" / "trial-0001"
    earlier = _recorded(str(original / "s" / "trial-0001"), "s/trial-0001")
    assert tune.run_folder(url, earlier) == copy / "s" / "trial-0001"
    assert tune.run_folder(url, _recorded(str(original / "s" / "trial-0001"))) == original / "s" / "trial-0001"
    assert tune.run_folder(url, _recorded("s/trial-0002")) is None  # not copied
    assert tune.run_folder("postgresql://u@h/db", _recorded("s/trial-0001")) is None  # nothing to resolve against


@pytest.mark.parametrize("hostile", ["../outside/run", "s/../../outside/run", "./..", "..", ".", "/etc",
                                     "a" * 300, "s/" + "b" * 300])
def test_a_recorded_relative_path_never_leaves_the_storage_folder(tmp_path, hostile):
    """A hostile storage names a folder beside or above its own: never resolved there, even
    where a folder exists, and a name too long for the file system is no folder (no error)."""
    (tmp_path / "outside" / "run").mkdir(parents=True)
    (tmp_path / "home" / "s").mkdir(parents=True)
    url = f"sqlite:///{tmp_path / 'home' / 'o.db'}"
    trials = [_recorded(None, hostile), _recorded("/nowhere/x", hostile)]
    if not hostile.startswith("/"):  # an absolute run_dir names a folder as recorded (Open lists only runs)
        trials.append(_recorded(hostile))
    for trial in trials:
        assert tune.run_folder(url, trial) is None
    assert tune.inside("s/../s/./trial-0001") == "s/trial-0001"  # climbs, but stays inside


def test_file_of_reads_paths_as_sqlalchemy():
    assert tune.file_of("sqlite:///runs/x.db") == Path("runs/x.db")
    assert tune.file_of("sqlite:////abs/x.db") == Path("/abs/x.db")
    assert tune.file_of("journal:////abs/x.log") == Path("/abs/x.log")
    assert tune.file_of("postgresql://u@h/db") is None


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_tune_resumes_and_records_each_trial(tmp_path, kind):
    url = f"sqlite:///{tmp_path}/o.db" if kind == "sqlite" else f"journal:///{tmp_path}/o.log"
    first = _run_tune(url, tmp_path, 3)
    assert [t.number for t in first.complete] == [0, 1, 2]
    again = _run_tune(url, tmp_path, 5)  # the same command with more trials adds two
    assert [t.number for t in again.complete] == [0, 1, 2, 3, 4]
    assert [t.params for t in again.complete[:3]] == [t.params for t in first.complete]
    done = _run_tune(url, tmp_path, 5)  # nothing left to do
    assert len(done.trials) == 5
    t = again.complete[3]
    assert t.val_acc == pytest.approx(1.0 - abs(t.params["lr"] - 0.05))
    assert t.test_acc == pytest.approx(t.val_acc - 0.01)
    assert t.test_matrix.shape == (2, 2) and np.isnan(t.test_matrix[0, 1])
    assert t.run_dir == "runs/trial-0003" and t.run_dir_relative is None  # relative to the storage file's folder
    assert tune.run_folder(url, t) == tmp_path / "runs" / "trial-0003"
    best = again.best
    assert best.val_acc == max(x.val_acc for x in again.complete)
    assert again.ps == pytest.approx(np.std([x.test_acc for x in again.complete]))
    assert set(tune.importances(url, "s")) == {"input_dropout", "hidden_dropout", "lr", "lamb"}


def test_same_seed_same_study_other_seed_other(tmp_path):
    def params(name: str, seed: int) -> list[dict]:
        return [t.params for t in _run_tune(f"sqlite:///{tmp_path}/{name}.db", tmp_path / name, 12, seed=seed).complete]

    a = params("a", 0)
    assert a == params("b", 0)  # past the 10 random start-up trials too
    assert a[0] != params("c", 1)[0]
    assert len({round(v, 9) for v in a[0].values()}) == 4  # each parameter its own draw


def test_an_interrupted_trial_fails_and_the_same_command_completes_the_study(tmp_path):
    url = f"sqlite:///{tmp_path}/o.db"
    with pytest.raises(KeyboardInterrupt):
        _run_tune(url, tmp_path, 4, train=_fake_train(fail_at=2))
    study = tune.load_study(url, "s")
    assert [t.state for t in study.trials] == ["complete", "complete", "fail"]
    assert "interrupted" in study.trials[2].note
    study = _run_tune(url, tmp_path, 4)
    assert [t.number for t in study.complete] == [0, 1, 3, 4] and len(study.trials) == 5


def test_a_study_made_for_another_setup_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/o.db"
    _run_tune(url, tmp_path, 1)
    cfg = RunConfig(sequence="digits-mixed", method="hat", seed=0, n_tasks=3)
    with pytest.raises(tune.StorageError, match="was made for .*other training options"):
        tune.tune(config=cfg, url=url, study_name="s", trials=2, runs_dir=tmp_path / "r", train=_fake_train(),
                  families=[])


def test_parallel_workers_never_overshoot(tmp_path):
    """Two workers (threads here; processes on PostgreSQL in test_tune_postgres) on one study:
    exactly the trials asked for complete, numbers never repeat, and a trial that started
    after the study was full is closed untrained with the reason."""
    url = f"sqlite:///{tmp_path}/o.db"
    _run_tune(url, tmp_path, 1)  # create the study (and its tables) once
    log: list = []
    errors: list = []

    def worker():
        try:
            _run_tune(url, tmp_path, 7, train=_fake_train(delay=0.05, log=log))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    study = tune.load_study(url, "s")
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert len(study.complete) == 7
    assert len(log) == 6 and len({n for n, _ in log}) == 6  # each trained once
    assert all(t.state == "pruned" and "already had its trials" in t.note for t in study.trials
               if t.state != "complete")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "prm", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_cli_tune_resume_and_compare_tuned(tmp_path):
    url = f"sqlite:///{tmp_path}/o.db"
    common = ["--sequence", "digits-mixed", "--storage", url, "--seed", "1", *TINY]
    out = _cli("tune", "--method", "hat", "--trials", "2", "--quiet", *common, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    out = _cli("tune", "--method", "hat", "--trials", "3", "--quiet", *common, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    study = tune.load_study(url, "tune-digits-mixed-hat")
    assert len(study.complete) == 3 and len(study.trials) == 3
    assert "3 of 3 trials complete" in out.stdout
    assert f"PS (std of test Acc over the 3 complete trials): {study.ps:.4f}" in out.stdout
    best = study.best
    assert f"best trial {best.number} (chosen by validation Acc)" in out.stdout
    for t in study.complete:  # every trial a recorded, finished run with the trial's values
        folder = tune.run_folder(url, t)
        assert not os.path.isabs(t.run_dir) and folder == tmp_path / "runs" / "tune" / "tune-digits-mixed-hat" / \
            f"trial-{t.number:04d}"  # recorded relative to the storage file's folder, tmp_path
        run = json.loads((folder / "run.json").read_text())
        assert run["config"]["hat"]["lamb"] == pytest.approx(t.params["lamb"])
        assert json.loads((folder / "summary.json").read_text())["status"] == "finished"
    assert f"run folder: {tune.run_folder(url, best)}" in out.stdout

    refused = _cli("tune", "--method", "hat", "--trials", "4", "--quiet", *common[:-len(TINY)], *TINY[:-2],
                   "--width", "24", "--compile", "off", cwd=tmp_path)
    assert refused.returncode == 2 and "other training options" in refused.stderr

    out = _cli("compare", "--tuned", "--methods", "hat", "--seeds", "1", "--storage", url, "--sequence",
               "digits-mixed", "--out-dir", "cmp", "--quiet", *TINY, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"best of study tune-digits-mixed-hat (trial {best.number} of 3" in out.stderr
    assert "stl: no study" not in out.stderr  # STL was not asked for: it is only FWT's reference
    head, hat_row = out.stdout.splitlines()[:2]
    assert head.split()[-1] == "PS" and hat_row.split()[-1] == f"{study.ps:.3f}"
    run = json.loads((tmp_path / "cmp" / "digits-mixed-hat-s1" / "run.json").read_text())
    assert run["config"]["optim"]["lr"] == pytest.approx(best.params["lr"])


def test_cli_compare_shared_trains_each_cell_once(tmp_path):
    url = f"sqlite:///{tmp_path}/o.db"
    args = ["compare", "--methods", "ncl", "--seeds", "0,1", "--storage", url, "--study", "cmp", "--sequence",
            "digits-mixed", "--quiet", *TINY]
    alone = _cli("compare", "--methods", "ncl", "--storage", url, "--quiet", cwd=tmp_path)
    assert alone.returncode == 2 and "--storage is for --study" in alone.stderr
    first = _cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = _cli(*args, cwd=tmp_path)  # the same command again: nothing left to train, the same table
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    study = tune.load_study(url, "cmp")
    cells = [(t.params["sequence"], t.params["method"], t.params["seed"]) for t in study.trials]
    assert sorted(cells) == sorted({(s, m, seed) for s in ["digits-mixed"] for m in ["ncl", "stl"] for seed in [0, 1]})
    assert all(t.state == "complete" for t in study.trials)
    runs = sorted(p.name for p in (tmp_path / "runs" / "compare" / "cmp").iterdir())
    assert len(runs) == 4
    # the table comes from the storage: recompute it from the recorded run folders
    table = _cli("table", *[str(p) for p in (tmp_path / "runs" / "compare" / "cmp").iterdir()], cwd=tmp_path)
    ncl = [line.split()[:5] for line in table.stdout.splitlines() if line.split()[1:2] == ["ncl"]]
    assert ncl == [first.stdout.splitlines()[1].split()[:5]]


def test_setup_keys_ignore_what_differs_between_machines():
    a = RunConfig(sequence="digits-mixed-few", method="hat")
    for other in (a.replace(data_dir="/mnt/data"), a.replace(n_tasks=10), a.replace(shots=2),
                  a.replace(record=a.record.__class__(projections=("pca",)))):
        assert tune.study_key(other) == tune.study_key(a) and tune.grid_key(other) == tune.grid_key(a)
    assert tune.study_key(a.replace(n_tasks=4)) != tune.study_key(a)
    lr = tune.apply_params(a, {"lr": 0.02})  # a tuned value: the same tune set-up, another grid cell
    assert tune.study_key(lr) == tune.study_key(a) and tune.grid_key(lr) != tune.grid_key(a)


@pytest.mark.parametrize("url, shown", [
    ("postgresql://me:p@ss@db.lab/prm", "postgresql://me:***@db.lab/prm"),
    ("postgresql://me@db.lab/prm?password=secret&port=5", "postgresql://me@db.lab/prm?password=***&port=5"),
    ("journal:///runs/o.log", "journal:///runs/o.log"),
])
def test_safe_url_never_shows_a_password(url, shown):
    assert tune.safe_url(url) == shown


@pytest.mark.parametrize("url, engine", [
    ("postgresql://me@db.lab/prm", "postgresql+psycopg2://me@db.lab/prm"),
    (" postgresql://me:pw@db.lab/prm?sslmode=require", "postgresql+psycopg2://me:pw@db.lab/prm?sslmode=require"),
    ("postgresql+psycopg://me@db.lab/prm", "postgresql+psycopg://me@db.lab/prm"),
    ("postgresql+psycopg2://me@db.lab/prm", "postgresql+psycopg2://me@db.lab/prm"),
    ("mysql://me@db.lab/prm", "mysql://me@db.lab/prm"),
    ("sqlite:///runs/postgresql://x.db", "sqlite:///runs/postgresql://x.db"),
])
def test_the_plain_postgresql_form_uses_the_installed_driver(url, engine):
    """SQLAlchemy 2.1 reads a plain ``postgresql://`` as psycopg 3, which is not installed;
    the project installs psycopg2-binary. An explicit ``+driver`` is left alone."""
    assert tune.engine_url(url) == engine


@pytest.mark.parametrize("open_", ["write", "read"])
def test_a_plain_postgresql_url_reaches_the_server(open_):
    """The README's form, to a port where no server listens: the error is the connection's,
    not a driver said missing, and the password is masked."""
    url = "postgresql://me:s3cret@127.0.0.1:1/prm"
    with pytest.raises(tune.StorageError) as info:
        tune.open_storage(url) if open_ == "write" else tune.study_names(url)
    message = str(info.value)
    assert "driver is missing" not in message and "OperationalError" in message
    assert "s3cret" not in message and "postgresql://me:***@127.0.0.1:1/prm" in message


def test_a_killed_workers_trial_is_failed_when_its_heartbeat_is_stale(tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(storages, "GRACE_SECONDS", 1)  # read when a storage is opened
    url = f"sqlite:///{tmp_path}/o.db"
    _run_tune(url, tmp_path, 1)
    storage = tune.open_storage(url)
    import optuna

    study = optuna.load_study(study_name="s", storage=storage)
    orphan = study.ask()  # a worker that was killed while training: running, its heartbeat stops
    storage.record_heartbeat(orphan._trial_id)
    time.sleep(2.5)
    study = _run_tune(url, tmp_path, 2)
    assert [t.state for t in study.trials] == ["complete", "fail", "complete"]


def test_a_pruned_trial_does_not_turn_tpe_univariate(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path}/o.db"
    study = _run_tune(url, tmp_path, 11)  # past the 10 random start-up trials
    live = optuna.load_study(study_name="s", storage=tune.open_storage(url))
    t = live.ask()
    live.tell(t, state=optuna.trial.TrialState.PRUNED)  # as a trial closed untrained
    sampler = tune._StartupBySeed(seed=0, space=tune.search_space("hat"))
    assert set(sampler.infer_relative_search_space(live, live.ask())) == {"input_dropout", "hidden_dropout", "lr",
                                                                          "lamb"}
    assert len(study.complete) == 11


def test_foreign_trial_folders_are_refused_before_any_trial(tmp_path):
    url = f"sqlite:///{tmp_path}/o.db"
    (tmp_path / "runs" / "trial-0000").mkdir(parents=True)
    with pytest.raises(tune.StorageError, match="holds trial folders this study did not make"):
        _run_tune(url, tmp_path, 2)
    assert all(t.state != "fail" for t in tune.load_study(url, "s").trials)


def test_an_interrupted_grid_cell_is_trained_again_without_wasted_trials(tmp_path):
    url = f"sqlite:///{tmp_path}/o.db"
    configs = {("digits-mixed", m, seed): RunConfig(sequence="digits-mixed", method=m, seed=seed)
               for m in ("hat", "ncl") for seed in range(4)}
    calls = {"n": 0}

    def train(config, run_dir, number):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return _fake_train()(config, run_dir, number)

    grid = dict(configs=configs, url=url, study_name="g", out_dir=tmp_path / "cmp", families=lambda c: ["w", "w"])
    with pytest.raises(KeyboardInterrupt):
        tune.compare_grid(train=train, **grid)
    study = tune.compare_grid(train=train, **grid)
    assert len(study.complete) == 8 and len(study.trials) == 9  # the failed cell once more, nothing wasted
    assert sorted(tune.cell_of(t.params) for t in study.complete) == sorted(configs)


def test_fail_running_clears_a_journal_studys_orphans(tmp_path):
    import optuna

    url = f"journal:///{tmp_path}/o.log"
    _run_tune(url, tmp_path, 1)
    live = optuna.load_study(study_name="s", storage=tune.open_storage(url))
    live.ask()  # a worker killed mid-trial: a journal keeps no heartbeat, so it stays running
    assert tune.fail_running(url, "s") == 1
    study = tune.load_study(url, "s")
    assert [t.state for t in study.trials] == ["complete", "fail"] and "--fail-running" in study.trials[1].note
