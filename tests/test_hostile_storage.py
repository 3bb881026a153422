"""Optuna storages nobody vouches for: a path typed in the Tuning view, a ``runs/optuna.db``
copied from elsewhere, a journal someone else wrote.

A look (``prm.tune``'s reading functions, which the Tuning and Compare views call) never
writes: not into the file, not beside it, whatever the file is. A file that is not a storage,
not a regular file, or (a journal) too large is one clear error, never a hang. A trial whose
attributes, parameters or values are not what ``prm tune`` writes is shown as unreadable with
the reason, and every other trial is read.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import stat
import threading
from pathlib import Path

import numpy as np
import optuna
import pytest

from explorer import state as keys
from explorer.figures import tuning as fig
from prm import storages, tune
from prm.config import RunConfig
from prm.engine import RunResult
from tests.test_tuning_view import PS, TESTS, only_these_storages, open_app, texts, write_tune_study  # noqa: F401

READERS = {
    "study_names": lambda url: tune.study_names(url),
    "load_study": lambda url: tune.load_study(url, "s"),
    "importances": lambda url: tune.importances(url, "s"),
    "tuned_studies": lambda url: tune.tuned_studies(url),
}
SPACE = {"lr": optuna.distributions.FloatDistribution(0.01, 0.3, log=True)}


def fingerprint(folder: Path) -> dict[str, tuple]:
    """Every entry of ``folder``: its kind, size, modification time, and the digest of its
    bytes (a link's target; nothing is read from a FIFO)."""
    out = {}
    for path in sorted(folder.iterdir()):
        info = path.lstat()
        if stat.S_ISREG(info.st_mode):
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = os.readlink(path) if stat.S_ISLNK(info.st_mode) else None
        out[path.name] = (stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns, content)
    return out


def settle(call, *fifos: Path):
    """``call()``'s result, or the exception it raised, from a thread: a reader that blocks
    fails the test instead of hanging it. A blocked reader is released (bytes written into
    the FIFOs) before the test fails, so no thread stays stuck."""
    box: dict = {}

    def work():
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout=60)
    if thread.is_alive():
        for fifo in fifos:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                os.write(fd, b"\0" * 4096)
                os.close(fd)
            except OSError:
                pass
        thread.join(timeout=60)
        pytest.fail("the reader blocked")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def write_storage(url: str, *, name: str = "s", trials: int = 3) -> None:
    """A tune study written with Optuna directly (not through prm.tune): ``trials`` complete
    trials, so that importances have something to explain."""
    storage = (optuna.storages.RDBStorage(url) if url.startswith("sqlite") else optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tune.file_of(url)))))
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    for key, value in {"kind": "tune", "sequence": "digits-mixed", "method": "hat"}.items():
        study.set_user_attr(key, value)
    for n in range(trials):
        study.add_trial(optuna.trial.create_trial(params={"lr": 0.01 + 0.05 * n}, distributions=SPACE,
                                                  value=0.5 + 0.1 * n, user_attrs={"test_acc": 0.4 + 0.1 * n}))
    if hasattr(storage, "engine"):
        storage.engine.dispose()  # no connection left open: the folder is what a copied storage looks like


# ----------------------------------------------------------------------------- a look never writes


@pytest.fixture(params=["sqlite", "sqlite-wal", "journal"])
def storage(request, tmp_path) -> str:
    """A real storage in a folder of its own: SQLite, SQLite in WAL mode (not Optuna's
    default, but a copy may be in it: a reader would make its -wal and -shm files), journal."""
    folder = tmp_path / "home"
    folder.mkdir()
    kind = request.param
    url = f"journal:///{folder / 'o.log'}" if kind == "journal" else f"sqlite:///{folder / 'o.db'}"
    write_storage(url)
    if kind == "sqlite-wal":
        with sqlite3.connect(folder / "o.db") as conn:
            assert conn.execute("PRAGMA journal_mode=wal").fetchone() == ("wal",)
        conn.close()
        assert sorted(p.name for p in folder.iterdir()) == ["o.db"]  # checkpointed on close
    return url


@pytest.mark.parametrize("reader", READERS)
def test_a_look_at_a_storage_changes_nothing(storage, reader):
    folder = tune.file_of(storage).parent
    before = fingerprint(folder)
    result = READERS[reader](storage)
    assert fingerprint(folder) == before
    expected = {"study_names": ["s"], "importances": {"lr": 1.0}}
    if reader in expected:
        assert result == pytest.approx(expected[reader]) if reader == "importances" else result == expected[reader]
    elif reader == "load_study":
        assert len(result.complete) == 3 and result.ps is not None
    else:
        assert list(result) == [("digits-mixed", "hat")]


def _unrelated(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.close()


NOT_STORAGES = {
    "an unrelated SQLite database": (_unrelated, "not an Optuna storage"),
    "an empty file": (lambda p: p.write_bytes(b""), "not an Optuna storage"),
    "a text file": (lambda p: p.write_text("not a database"), "not an Optuna storage"),
    "a FIFO": (os.mkfifo, "not a regular file"),
    "a link to /dev/null": (lambda p: p.symlink_to("/dev/null"), "not a regular file"),
    "a link to /dev/zero": (lambda p: p.symlink_to("/dev/zero"), "not a regular file"),
    "a folder": (lambda p: p.mkdir(), "is a folder"),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("case", NOT_STORAGES)
def test_a_look_at_a_file_that_is_no_storage_is_refused_and_writes_nothing(tmp_path, case, reader):
    """Optuna's RDB storage creates its tables in whatever SQLite file it opens (11 of them
    in an unrelated database, an empty file turned into a storage, a journal beside
    /dev/null); a look refuses the file instead and leaves it and its folder as they were."""
    make, message = NOT_STORAGES[case]
    path = tmp_path / "o.db"
    make(path)
    before = fingerprint(tmp_path)
    with pytest.raises(tune.StorageError, match=message) as info:
        settle(lambda: READERS[reader](f"sqlite:///{path}"), path)
    assert "\n" not in str(info.value)
    assert fingerprint(tmp_path) == before
    for device in ("/dev/null", "/dev/zero"):
        assert not os.path.exists(f"{device}-journal")


JOURNAL_NOT_FILES = {
    "a FIFO": os.mkfifo,
    "a link to /dev/zero": lambda p: p.symlink_to("/dev/zero"),
    "a link to /dev/null": lambda p: p.symlink_to("/dev/null"),
}


@pytest.mark.parametrize("case", JOURNAL_NOT_FILES)
@pytest.mark.parametrize("open_", ["read", "write"])
def test_a_journal_that_is_no_regular_file_is_refused_at_once(tmp_path, case, open_):
    """/dev/zero read as a journal grew without bound; a FIFO blocked Optuna's constructor
    for ever. Both the explorer's look and ``prm tune`` refuse them from the open descriptor."""
    path = tmp_path / "o.log"
    JOURNAL_NOT_FILES[case](path)
    url = f"journal:///{path}"
    call = (lambda: tune.study_names(url)) if open_ == "read" else (lambda: tune.open_storage(url))
    with pytest.raises(tune.StorageError, match="not a regular file"):
        settle(call, path)


def test_a_journal_over_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    url = f"journal:///{tmp_path / 'o.log'}"
    write_storage(url)
    size = (tmp_path / "o.log").stat().st_size
    monkeypatch.setattr(storages, "MAX_JOURNAL_BYTES", size - 1)
    for call in (lambda: tune.study_names(url), lambda: tune.open_storage(url)):
        with pytest.raises(tune.StorageError, match=f"{size} bytes, more than the {size - 1} allowed"):
            call()
    monkeypatch.setattr(storages, "MAX_JOURNAL_BYTES", size)
    assert tune.study_names(url) == ["s"]


def test_the_journal_limit_is_far_above_a_real_study(tmp_path):
    """Two trials of a 50-task study recorded by ``tune`` (the 50 x 50 accuracy matrix is most
    of a trial's journal): a study of 1000 such trials fits the limit three times over."""
    tasks = 50

    def train(config: RunConfig, run_dir: Path, number: int) -> RunResult:
        accs = [[0.5 + 0.4 * math.sin(number + i * tasks + j) ** 2 if j <= i else math.nan for j in range(tasks)]
                for i in range(tasks)]
        return RunResult(status="finished", test_acc=np.array(accs), val_acc=np.array(accs), seconds=123.456)

    url = f"journal:///{tmp_path / 'o.log'}"
    tune.tune(config=RunConfig(sequence="digits-mixed", method="prm"), url=url, study_name="s", trials=2,
              runs_dir=tmp_path / "runs", train=train, families=["writer"] * tasks)
    per_trial = (tmp_path / "o.log").stat().st_size / 2
    assert 3 * 1000 * per_trial <= storages.MAX_JOURNAL_BYTES


def test_a_journal_line_being_written_is_left_for_later_and_a_bad_one_is_an_error(tmp_path):
    path = tmp_path / "o.log"
    url = f"journal:///{path}"
    write_storage(url, trials=2)
    with open(path, "a") as log:
        log.write('{"op_code": 0, "worker_id": "w", "study_name": "half-wr')  # a writer mid-append
    assert tune.study_names(url) == ["s"] and len(tune.load_study(url, "s").complete) == 2
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2] + ["{not json\n"] + lines[2:]))
    with pytest.raises(tune.StorageError, match="line 3 is not a journal record"):
        tune.study_names(url)


# ----------------------------------------------------------------------------- hostile attributes

GOOD = {"val_acc": 0.8, "test_acc": 0.75, "bwt": -0.01, "seconds": 12.0, "run_dir": "/elsewhere/trial-0000",
        "run_dir_relative": None, "host": "h", "test_matrix": [[0.75, None], [0.7, 0.8]], "families": ["writer"]}
HOSTILE_ATTRS = {  # field: the value a hostile storage holds there
    "test_acc": "x",
    "run_dir": 5,
    "host": 7,
    "run_dir_relative": "a\x00b",
    "bwt": [1],
    "seconds": -1.0,
    "note": {"a": 1},
    "test_matrix": [[0.5, 2.0], [0.1]],
    "families": 3,
}


def write_hostile_study(url: str, field: str, value, *, name: str = "s") -> None:
    """A tune study of three complete trials whose second holds ``value`` in ``field``."""
    study = optuna.create_study(storage=tune.open_storage(url), study_name=name, direction="maximize")
    for key, attr in {"kind": "tune", "sequence": "digits-mixed", "method": "prm", "tasks": 2}.items():
        study.set_user_attr(key, attr)
    for n, test in enumerate(TESTS[:3]):
        attrs = {**GOOD, "test_acc": test, **({field: value} if n == 1 else {})}
        study.add_trial(optuna.trial.create_trial(params={"lr": 0.02 * (n + 1)}, distributions=SPACE,
                                                  value=0.8 + 0.01 * n, user_attrs=attrs))


def _shown_everywhere(url: str, study: tune.Study) -> None:
    """What the Tuning view and the CLI do with a study: none of it raises."""
    local = {t.number: tune.run_folder(url, t) for t in study.trials}
    fig.trials_table(study, local)
    fig.headline(study)
    fig.acc_figure(study)
    fig.cells_table(study)
    fig.ps_caption({("digits-mixed", "prm"): (study, "here")})


@pytest.mark.parametrize("field", HOSTILE_ATTRS)
def test_a_trial_with_a_hostile_attribute_is_unreadable_and_the_others_are_read(tmp_path, field):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    write_hostile_study(url, field, HOSTILE_ATTRS[field])
    study = tune.load_study(url, "s")
    bad = study.trials[1]
    assert bad.state == "unreadable" and field in bad.problem
    assert [t.state for t in study.trials] == ["complete", "unreadable", "complete"]
    assert len(study.problems) == 1 and study.problems[0].startswith(f"trial 1: {field}")
    assert study.ps == pytest.approx(tune.parameter_sensitivity([TESTS[0], TESTS[2]]))
    assert study.best.number == 2
    _shown_everywhere(url, study)


def test_a_trial_optuna_itself_cannot_read_is_unreadable_and_the_others_are_read(tmp_path):
    """An attribute that is not JSON (written into the database by hand) makes Optuna's
    reading of the whole study fail; each trial is then read on its own."""
    path = tmp_path / "o.db"
    write_hostile_study(f"sqlite:///{path}", "note", "fine")
    with sqlite3.connect(path) as conn:
        changed = conn.execute("UPDATE trial_user_attributes SET value_json = '{' WHERE key = 'note'").rowcount
    conn.close()
    assert changed == 1
    study = tune.load_study(f"sqlite:///{path}", "s")
    assert [t.state for t in study.trials] == ["complete", "unreadable", "complete"]
    assert "JSONDecodeError" in study.trials[1].problem and study.problems[0].startswith("trial 1:")


@pytest.mark.parametrize("params, distributions, value, field", [
    ({"lamb": "x"}, {"lamb": optuna.distributions.CategoricalDistribution(["x"])}, 0.8, "lamb"),
    ({"lr": 0.02}, SPACE, 5.0, "value"),
    ({"lr": 0.02}, SPACE, float("inf"), "value"),
])
def test_a_trial_with_a_hostile_parameter_or_value_is_unreadable(tmp_path, params, distributions, value, field):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    write_hostile_study(url, "note", "fine")
    study = optuna.load_study(study_name="s", storage=tune.open_storage(url))
    study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value,
                                              user_attrs=GOOD))
    read = tune.load_study(url, "s")
    assert read.trials[3].state == "unreadable" and field in read.trials[3].problem
    assert len(read.complete) == 3
    _shown_everywhere(url, read)


def test_a_compare_trial_whose_seed_is_no_integer_is_unreadable(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(storage=tune.open_storage(url), study_name="g", direction="maximize")
    study.set_user_attr("kind", "compare")
    study.set_user_attr("cells", [["digits-mixed", "hat", 0]])
    grid = {"sequence": ["digits-mixed"], "method": ["hat"], "seed": ["x"]}
    study.add_trial(optuna.trial.create_trial(
        params={k: v[0] for k, v in grid.items()}, value=0.8, user_attrs=GOOD,
        distributions={k: optuna.distributions.CategoricalDistribution(v) for k, v in grid.items()}))
    read = tune.load_study(url, "g")
    assert read.trials[0].state == "unreadable" and "seed" in read.trials[0].problem
    assert list(fig.cells_table(read)["state"]) == ["not started"]
    assert tune.cell_of({"sequence": "s", "method": "m", "seed": "x"}) is None


@pytest.mark.parametrize("key, value", [("cells", 5), ("kind", ["tune"]), ("sequence", 5), ("tasks", "x"),
                                        ("cells", [["s", "m", "x"]]), ("setup", {"a": 1})])
def test_a_hostile_study_attribute_is_dropped_with_a_warning(tmp_path, key, value):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    write_hostile_study(url, "note", "fine")
    optuna.load_study(study_name="s", storage=tune.open_storage(url)).set_user_attr(key, value)
    study = tune.load_study(url, "s")
    assert key not in study.attrs and len(study.problems) == 1
    assert study.problems[0].startswith(f"study attribute {key}")
    assert len(study.complete) == 3
    _shown_everywhere(url, study)


def test_the_tuning_view_shows_a_hostile_trial_as_unreadable(tmp_path, only_these_storages):
    write_tune_study(f"sqlite:///{tmp_path / 'optuna.db'}")
    storage = tune.open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.load_study(study_name="tune-digits-mixed-prm", storage=storage)
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.05}, distributions=SPACE, value=0.9,
                                              user_attrs={**GOOD, "test_acc": "x", "host": 7}))
    study.set_user_attr("cells", 5)
    at = open_app(keys.TUNING, runs_dir=tmp_path)
    assert not at.exception
    warning = "\n".join(w.value for w in at.warning)
    assert "trial 6" in warning and "test\\_acc" in warning and "study attribute cells" in warning
    scores, folders = at.dataframe[0].value, at.dataframe[2].value  # the trials table's Scores and Run folders tabs
    assert scores["state"][6] == "unreadable" and "test_acc" in folders["note"][6]
    assert f"PS **{PS:.3f}**" in texts(at)  # over the readable trials only


def test_compare_survives_a_hostile_trial_in_the_runs_folders_storage(tmp_path, only_these_storages):
    write_tune_study(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.load_study(study_name="tune-digits-mixed-prm",
                              storage=tune.open_storage(f"sqlite:///{tmp_path / 'optuna.db'}"))
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.05}, distributions=SPACE, value=0.9,
                                              user_attrs={**GOOD, "run_dir": 5, "test_acc": "x"}))
    study.set_user_attr("tasks", "x")
    at = open_app(keys.COMPARE, runs_dir=tmp_path)
    assert not at.exception
    groups = next(df.value for df in at.dataframe if "PS" in df.value.columns)
    assert dict(zip(groups["method"], groups["PS"]))["prm"] == f"{PS:.3f}"
    shown = texts(at)
    assert "trial 6" in shown and "run\\_dir" in shown and "study attribute tasks" in shown


def test_a_number_beyond_float_range_is_named_as_the_trials_fault(tmp_path):
    """10**400 is valid JSON that Optuna reads; the field reader refuses it by name (it used to
    overflow, so the study was read a second time and the trial blamed on Optuna)."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    write_hostile_study(url, "test_acc", 10**400)
    study = tune.load_study(url, "s")
    assert [t.state for t in study.trials] == ["complete", "unreadable", "complete"]
    assert study.trials[1].problem.startswith("test_acc") and "Optuna cannot read" not in study.trials[1].problem
