"""The Tuning view and PS in Compare, on small studies written with Optuna directly into a
temporary storage (no training): the view's table, header, charts and errors, opening a
trial's run, PS beside Compare's metrics, and the pure builders of explorer/figures/tuning.py."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
from streamlit.testing.v1 import AppTest

from explorer import catalog
from explorer import state as keys
from explorer.figures import compare as compare_fig
from explorer.figures import tuning as fig
from explorer.figures.common import md
from explorer.views import tuning as view
from prm import compare as compare_tables
from prm import tune

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "explorer" / "app.py")
SAMPLE = "sample_runs/digits-mixed-prm-s0"
SMALL_RUN = ROOT / "sample_runs" / "digits-classes-stl-s0"
BUNDLED = view.BUNDLED  # as shipped: the fixture only_these_storages hides it from the view
pytestmark = pytest.mark.skipif(not (ROOT / SAMPLE / "run.json").exists() or not (SMALL_RUN / "run.json").exists(),
                                reason="the sample runs are missing (regenerate with scripts/make_sample_runs.py)")

SPACE = {"input_dropout": optuna.distributions.FloatDistribution(0.0, 0.5),
         "hidden_dropout": optuna.distributions.FloatDistribution(0.0, 0.7),
         "lr": optuna.distributions.FloatDistribution(0.01, 0.3, log=True)}
TRIALS = [  # (val Acc, test Acc, drawn values): val and test ranked differently, so "best by val" is checkable
    (0.801, 0.7712, (0.10, 0.30, 0.050)),
    (0.862, 0.8125, (0.20, 0.50, 0.100)),  # the one whose run folder is on this machine
    (0.845, 0.8391, (0.40, 0.10, 0.020)),  # the best test Acc, not the best trial
    (0.877, 0.8013, (0.05, 0.60, 0.250)),  # the best val Acc: the best trial
]
TESTS = [test for _, test, _ in TRIALS]
PS = float(np.std(TESTS))  # the paper's PS, by hand: population std of test Acc over the complete trials


def write_tune_study(url: str, *, name: str = "tune-digits-mixed-prm", sequence: str = "digits-mixed",
                     method: str = "prm", run_dir: Path | None = None) -> None:
    """A tune study as prm.tune records one: four complete trials (the second's run folder is
    ``run_dir``, the others were recorded on another machine), one pruned and one failed."""
    study = optuna.create_study(storage=tune.open_storage(url), study_name=name, direction="maximize")
    for key, value in {"kind": "tune", "sequence": sequence, "method": method, "seed": 0, "tasks": 3}.items():
        study.set_user_attr(key, value)
    for n, (val, test, drawn) in enumerate(TRIALS):
        folder = run_dir if n == 1 and run_dir is not None else Path(f"/elsewhere/{name}/trial-{n:04d}")
        study.add_trial(optuna.trial.create_trial(
            params=dict(zip(SPACE, drawn)), distributions=SPACE, value=val,
            user_attrs={"val_acc": val, "test_acc": test, "bwt": -0.01 * n, "seconds": 10.0 + n,
                        "run_dir": str(folder), "run_dir_relative": None, "host": "other-host" if n != 1 else "here",
                        "test_matrix": [[test, None], [test - 0.01, test]], "families": ["classes"]}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={
        "note": "not trained: the study already had its trials when this one started"}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, distributions=SPACE,
                                              params=dict(zip(SPACE, TRIALS[0][2])),
                                              user_attrs={"note": "failed: RuntimeError: boom"}))


def write_compare_study(url: str, *, name: str = "grid") -> None:
    """A compare study of a 1 x 2 x 2 grid with two cells trained, one pruned duplicate."""
    grid = {"sequence": ["digits-mixed"], "method": ["hat", "prm"], "seed": [0, 1]}
    dists = {k: optuna.distributions.CategoricalDistribution(v) for k, v in grid.items()}
    study = optuna.create_study(storage=tune.open_storage(url), study_name=name, direction="maximize")
    study.set_user_attr("kind", "compare")
    study.set_user_attr("cells", [["digits-mixed", m, s] for m in grid["method"] for s in grid["seed"]])
    for method, seed, val, state in (("hat", 0, 0.81, "COMPLETE"), ("prm", 0, 0.84, "COMPLETE"),
                                     ("prm", 0, None, "PRUNED")):
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState[state], value=val, distributions=dists,
            params={"sequence": "digits-mixed", "method": method, "seed": seed},
            user_attrs={"test_acc": val - 0.02, "bwt": 0.0, "seconds": 5.0} if val else {"note": "same cell"}))


@pytest.fixture
def only_these_storages(tmp_path, monkeypatch):
    """Neither the bundled sample storage nor a default runs folder's optuna.db is offered:
    the tests see only the storages they write."""
    monkeypatch.setattr(view, "BUNDLED", tmp_path / "no-bundled" / "optuna.db")
    monkeypatch.setattr(keys, "DEFAULT_RUNS_DIR", str(tmp_path / "no-default-runs"))


@pytest.fixture
def study_home(tmp_path, only_these_storages):
    """A runs folder holding optuna.db with the tune study and a compare study, and the tune
    study's folder with one real trial run (a copy of a small sample run)."""
    trial = tmp_path / "tune-digits-mixed-prm" / "trial-0001"
    shutil.copytree(SMALL_RUN, trial)
    url = view.file_url(tmp_path / "optuna.db")
    write_tune_study(url, run_dir=trial)
    write_compare_study(url)
    return tmp_path, url, trial


def open_app(view_name: str, *, runs_dir: Path, run: str = SAMPLE, state: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state[keys.RUNS_DIR] = str(runs_dir)
    for key, value in (state or {}).items():
        at.session_state[key] = value
    at.query_params[keys.VIEW] = view_name
    at.query_params[keys.RUN] = run
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    return "\n".join(str(x.value) for kind in ("markdown", "caption", "info", "warning", "error")
                     for x in getattr(at, kind))


# ----------------------------------------------------------------------------- the view


def test_tuning_view_shows_the_study_of_the_runs_folder(study_home):
    runs_dir, url, trial = study_home
    at = open_app(keys.TUNING, runs_dir=runs_dir)
    assert at.selectbox(key=keys.TUNING_STORAGE).value == url  # the runs folder's optuna.db, offered and picked
    assert at.selectbox(key=keys.TUNING_STUDY).value == "tune-digits-mixed-prm"
    shown = texts(at)
    assert f"PS **{PS:.3f}**" in shown and f"{PS:.3f}" != f"{np.std(TESTS, ddof=1):.3f}"  # population std
    assert "best trial **3** (by validation Acc)" in shown and "test Acc **0.801**" in shown  # not by test Acc
    scores, drawn, folders = (at.dataframe[i].value for i in range(3))  # the tabs of one trials table
    assert [list(df["trial"]) for df in (scores, drawn, folders)] == [[0, 1, 2, 3, 4, 5]] * 3
    assert list(scores["state"]) == ["complete"] * 4 + ["pruned", "fail"]
    assert list(scores["test Acc"][:4]) == TESTS and list(drawn.columns[1:]) == list(SPACE)
    assert folders["run folder"][1] == catalog.key_of(trial) and "not on this machine" in folders["run folder"][0]
    assert "failed: RuntimeError: boom" in folders["note"][5]
    assert at.selectbox(key=keys.TUNING_OPEN_TRIAL).options == ["trial 1 · val Acc 0.862 · complete"]  # only one here
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(specs) == 2
    assert [d["name"] for d in specs[0]["data"]][:3] == ["val Acc (objective)", "test Acc (reported, not optimised)",
                                                         "best val Acc so far"]
    assert sorted(specs[1]["data"][0]["y"]) == sorted(SPACE)  # one importance bar per parameter
    assert [e.label for e in at.expander if e.label == "How to read this"]
    assert not at.error


def test_a_compare_study_shows_its_cells_instead_of_importances(study_home):
    runs_dir, _, _ = study_home
    at = open_app(keys.TUNING, runs_dir=runs_dir)
    at.selectbox(key=keys.TUNING_STUDY).set_value("grid").run()
    assert not at.exception
    cells = at.dataframe[3].value  # after the trials table's three tabs
    assert list(cells["state"]) == ["complete", "not started", "complete", "not started"]
    assert "2 of 4 cells trained" in texts(at)
    assert len(at.get("plotly_chart")) == 1  # Acc over trials only: no importances for a grid


@pytest.mark.parametrize("typed, message", [
    ("sqlite:///{tmp}/missing/optuna.db", "does not exist"),
    ("journal:///{tmp}/missing.log", "does not exist"),
    ("{tmp}/optuna.db", "is not a URL"),
    ("redis://localhost/0", "unknown kind"),
])
def test_a_bad_url_says_why_and_creates_nothing(tmp_path, only_these_storages, typed, message):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    at = open_app(keys.TUNING, runs_dir=runs_dir, state={keys.TUNING_STORAGE: keys.OTHER_STORAGE})
    assert "Type a storage URL" in texts(at)
    at.text_input(key=keys.TUNING_URL).input(typed.format(tmp=tmp_path)).run()
    assert not at.exception
    assert at.error and message in at.error[0].value.replace("\\", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"] and not any(runs_dir.iterdir())


def test_a_typed_journal_url_is_read_and_kept_across_tabs(tmp_path, only_these_storages):
    url = f"journal:///{tmp_path / 'studies.log'}"
    tune.open_storage(url)
    write_tune_study(url, name="journal-study")
    at = open_app(keys.TUNING, runs_dir=tmp_path / "runs", state={keys.TUNING_STORAGE: keys.OTHER_STORAGE})
    at.text_input(key=keys.TUNING_URL).input(url).run()
    assert not at.exception and f"PS **{PS:.3f}**" in texts(at)
    at.query_params[keys.VIEW] = keys.OVERVIEW
    at.run()
    at.query_params[keys.VIEW] = keys.TUNING
    at.run()  # back again: the same storage and study, though their widgets were not drawn in between
    assert at.text_input(key=keys.TUNING_URL).value == url and f"PS **{PS:.3f}**" in texts(at)


def test_opening_a_trial_selects_its_run_in_the_sidebar(study_home):
    runs_dir, _, trial = study_home
    at = open_app(keys.TUNING, runs_dir=runs_dir, state={})
    at.query_params[keys.TASK] = "T9"  # a task the 3-task trial run does not have: not carried over
    at.button(key="tune-open").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.text_input(key=keys.RUNS_DIR).value == catalog.key_of(trial.parent)
    assert at.sidebar.selectbox(key=keys.RUN).value == catalog.key_of(trial)
    assert at.query_params[keys.RUN] == catalog.key_of(trial) and at.query_params[keys.VIEW] == keys.OVERVIEW
    assert md(trial.name) in at.markdown[0].value
    assert not any("The link asks for" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) >= 2  # Overview drew the trial's run


def test_compare_shows_ps_of_the_groups_tune_study(study_home):
    runs_dir, _, _ = study_home
    at = open_app(keys.COMPARE, runs_dir=runs_dir)
    groups = next(df.value for df in at.dataframe if "PS" in df.value.columns)
    ps = dict(zip(groups["method"], groups["PS"]))
    assert ps["prm"] == f"{PS:.3f}" and ps["hat"] == "–"
    assert "study tune\\-digits\\-mixed\\-prm, 4 complete of 6 trials" in texts(at)


def test_compare_survives_an_unreadable_storage(tmp_path, only_these_storages):
    (tmp_path / "optuna.db").write_text("not a database")
    at = open_app(keys.COMPARE, runs_dir=tmp_path)
    groups = next(df.value for df in at.dataframe if "PS" in df.value.columns)
    assert set(groups["PS"]) == {"–"}
    assert "Could not read storage" in texts(at)
    assert (tmp_path / "optuna.db").read_text() == "not a database"


def test_compare_never_shows_a_servers_password(tmp_path, only_these_storages):
    """The storage chosen in Tuning is a server that cannot be reached: Compare says so in a
    caption, with the password masked, and still shows its tables."""
    chosen = ("postgresql://someone:s3cret@127.0.0.1:1/studies", "tune-x")
    at = open_app(keys.COMPARE, runs_dir=tmp_path, state={keys.TUNING_CHOSEN: chosen})
    problem = next(c.value for c in at.caption if "Could not read storage" in c.value)
    assert "s3cret" not in texts(at) and md("postgresql://someone:***@127.0.0.1:1/studies") in problem
    assert next(df.value for df in at.dataframe if "PS" in df.value.columns)["PS"].eq("–").all()


@pytest.mark.skipif(not view.BUNDLED.is_file(), reason="no bundled study (sample_runs/tuning/optuna.db)")
def test_the_bundled_study_is_offered_and_its_trials_open(tmp_path):
    """With no storage of one's own, the bundled sample study is shown; its PS is the std of
    its trials' test Acc as Optuna holds them, and its trials open from their folders next to
    the storage file, wherever the study was recorded."""
    at = open_app(keys.TUNING, runs_dir=tmp_path)
    url = view.file_url(view.BUNDLED)
    assert "bundled sample: sample_runs/tuning/optuna.db" in at.selectbox(key=keys.TUNING_STORAGE).options
    at.selectbox(key=keys.TUNING_STORAGE).set_value(url).run()
    name = at.selectbox(key=keys.TUNING_STUDY).value
    held = optuna.load_study(study_name=name, storage=url).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert f"PS **{np.std([t.user_attrs['test_acc'] for t in held]):.3f}**" in texts(at)
    at.button(key="tune-open").click().run()
    assert not at.exception, [e.value for e in at.exception]
    opened = catalog.resolve(at.sidebar.selectbox(key=keys.RUN).value)
    assert opened.parent.name == name and (opened / "run.json").is_file()
    assert at.query_params[keys.VIEW] == keys.OVERVIEW


@pytest.mark.skipif(not view.BUNDLED.is_file(), reason="no bundled study (sample_runs/tuning/optuna.db)")
def test_a_copy_of_the_bundled_study_shows_and_opens_its_own_folders(tmp_path, only_these_storages):
    """Bug 3 of issue 23: the bundled storage with its folders, copied as into another clone
    (the original checkout still there): every study's table names the copy's folders or paths
    relative to the storage, never an absolute path outside the copy, and Open opens the copy's run."""
    copy = tmp_path / "clone" / "tuning"
    shutil.copytree(BUNDLED.parent, copy)
    url = view.file_url(copy / "optuna.db")
    for name in tune.study_names(url):
        study = tune.load_study(url, name)
        cells = list(fig.trials_table(study, {t.number: tune.run_folder(url, t) for t in study.trials})["run folder"])
        assert all(cells) and not any(str(ROOT) in c for c in cells), name
        assert all(not c.startswith("/") or c.startswith(f"{copy}/{name}/") for c in cells), name
        assert sum(c.startswith(f"{copy}/{name}/") for c in cells) == 1, name  # the kept best trial, the copy's
    at = open_app(keys.TUNING, runs_dir=copy)  # the view: the same table, and Open
    assert at.selectbox(key=keys.TUNING_STORAGE).value == url
    name = at.selectbox(key=keys.TUNING_STUDY).value
    shown = at.dataframe[2].value["run folder"]
    assert not any(str(ROOT) in c for c in shown) and sum(c.startswith(f"{copy}/{name}/") for c in shown) == 1
    at.button(key="tune-open").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert catalog.resolve(at.sidebar.selectbox(key=keys.RUN).value).parent == copy / name


@pytest.mark.skipif(not view.BUNDLED.is_file(), reason="no bundled study (sample_runs/tuning/optuna.db)")
def test_the_bundled_storage_records_no_absolute_path():
    """Each trial's folder relative to the storage file (one record of it), no attribute an
    absolute path, and no page of the file keeps the checkout's path it was made in."""
    assert b"sample_runs/tuning" not in view.BUNDLED.read_bytes()
    url = view.file_url(view.BUNDLED)
    for name in tune.study_names(url):
        study = optuna.load_study(study_name=name, storage=url)
        values = [*study.user_attrs.values(), *(v for t in study.trials for v in t.user_attrs.values())]
        assert not [v for v in values if isinstance(v, str) and v.startswith(("/", "~"))], name
        for t in tune.load_study(url, name).trials:
            assert t.run_dir_relative is None and tune.inside(t.run_dir) == t.run_dir.strip("/"), (name, t.number)
            assert t.run_dir.startswith(f"{name}/trial-"), (name, t.number)


def test_a_storage_naming_a_folder_outside_its_own_shows_it_and_never_opens_it(tmp_path, only_these_storages):
    """A hostile storage records ``../outside/run``, where a real run lies: the path is shown
    for what it is, and Open does not offer it."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(SMALL_RUN, tmp_path / "outside" / "run")
    write_tune_study(view.file_url(home / "optuna.db"), run_dir=Path("../outside/run"))
    at = open_app(keys.TUNING, runs_dir=home)
    assert at.dataframe[2].value["run folder"][1] == \
        "../outside/run (outside the storage file's folder: not opened; not on this machine)"
    assert not [s for s in at.selectbox if s.key == keys.TUNING_OPEN_TRIAL]
    assert "No trial's run folder is on this machine" in texts(at)


# ----------------------------------------------------------------------------- pure builders


def _study(url: str, name: str) -> tune.Study:
    return tune.load_study(url, name)


def test_trials_table_has_no_missing_cell_where_a_trial_has_a_value(tmp_path):
    url = view.file_url(tmp_path / "s.db")
    write_tune_study(url)
    study = _study(url, "tune-digits-mixed-prm")
    table = fig.trials_table(study, {t.number: None for t in study.trials})
    complete = table[table["state"] == "complete"]
    assert not complete.isna().any().any()
    assert table["note"].map(type).eq(str).all() and table["run folder"].map(type).eq(str).all()
    assert table.loc[table["state"] == "pruned", list(fig.METRICS)].isna().all().all()  # intended: never trained
    assert table.loc[4, "run folder"] == ""  # and never had a folder


def test_the_trials_table_splits_into_narrow_parts_that_keep_every_column(tmp_path):
    """Scores, drawn values and run folders apart, each numbered by trial, none lost: 14
    columns side by side scroll sideways in an 800 px window."""
    url = view.file_url(tmp_path / "s.db")
    write_tune_study(url)
    whole = fig.trials_table(_study(url, "tune-digits-mixed-prm"), {})
    parts = fig.trials_parts(whole)
    assert list(parts) == list(fig.TRIAL_PARTS) and all(list(p.columns[:1]) == ["trial"] for p in parts.values())
    assert {c for p in parts.values() for c in p.columns} == set(whole.columns)
    assert max(len(p.columns) for p in parts.values()) <= 6


def test_the_acc_legend_sits_below_the_plot(tmp_path):
    url = view.file_url(tmp_path / "s.db")
    write_tune_study(url)
    legend = fig.acc_figure(_study(url, "tune-digits-mixed-prm")).layout.legend
    assert legend.orientation == "h" and legend.yref == "container" and legend.yanchor == "bottom" and legend.y == 0


def test_best_so_far_never_falls_and_ends_at_the_best_trial(tmp_path):
    url = view.file_url(tmp_path / "s.db")
    write_tune_study(url)
    study = _study(url, "tune-digits-mixed-prm")
    line = fig.best_so_far(study)
    assert list(line["trial"]) == [0, 1, 2, 3]
    assert list(line["best val Acc"]) == [0.801, 0.862, 0.862, 0.877]
    assert (np.diff(line["best val Acc"]) >= 0).all() and line["best val Acc"].iloc[-1] == study.best.val_acc
    assert fig.headline(study).count(f"{PS:.3f}") == 1


def test_importance_bars_rank_the_most_important_on_top():
    bars = fig.importance_figure({"lr": 0.6, "input_dropout": 0.1, "hidden_dropout": 0.3}).data[0]
    assert list(bars.y) == ["input_dropout", "hidden_dropout", "lr"]  # plotly draws the first at the bottom
    assert "Too few" in fig.importance_figure({}).layout.annotations[0].text


def test_cells_table_lists_the_whole_grid(tmp_path):
    url = view.file_url(tmp_path / "s.db")
    write_compare_study(url)
    cells = fig.cells_table(_study(url, "grid"))
    assert [tuple(r) for r in cells[["method", "seed", "state"]].to_numpy()] == [
        ("hat", 0, "complete"), ("hat", 1, "not started"), ("prm", 0, "complete"), ("prm", 1, "not started")]
    assert cells.loc[2, "test Acc"] == pytest.approx(0.82) and cells.loc[2, "trial"] == "1"  # not the pruned copy
    assert math.isnan(cells.loc[1, "val Acc"]) and cells["trial"][1] == ""


def test_with_ps_places_ps_per_group_and_shows_a_dash_without_a_study():
    summary = compare_tables.per_method(compare_tables.per_run({}))
    summary = summary.reindex(range(2)).assign(sequence=["s", "s"], method=["prm", "hat"], tasks="3/3", config="c")
    shown = compare_fig.shown(compare_tables.with_ps(summary, {("s", "prm"): 0.01234}))
    assert list(shown["PS"]) == ["0.012", "–"]


def test_relative_storage_paths_are_read_from_the_repository_root():
    assert view.absolute(" sqlite:///runs/optuna.db ") == f"sqlite:///{ROOT / 'runs/optuna.db'}"
    assert view.absolute("journal:///x.log") == f"journal:///{ROOT / 'x.log'}"
    assert view.absolute("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert view.absolute("postgresql://u@h/db") == "postgresql://u@h/db"
