"""Property-based fuzzing of the run loader with Hypothesis, on real sample-run files.

Each example copies a bundled run and applies one to three mutations: truncate a file at any
byte; replace any JSON value (in run.json, summary.json or any event line) by another type,
a deep nesting, an out-of-range number (integers beyond float range, one of 5000 digits, past
Python's int-string limit) or a string carrying bidi and other format characters; drop a file;
change an array's shape or dtype; give an array a crafted ``.npy`` header (a zero dimension
beside a huge one); point an array record or a file outside the folder. The properties: ``load_run`` returns a run or
raises ``RunFormatError`` and nothing else; the catalogue row never raises; every accessor a
view uses answers; and, for a sample of cases, every view of the app renders (AppTest) or
says what is missing, and shows no bidi or other format character (display spoofing).

CI runs a bounded, derandomised number of examples (``PRM_FUZZ_EXAMPLES``, default 300 for
the loader and a fortieth of that, 7, for the app; about 40 s in all). A longer run:

    PRM_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/test_fuzz_runs.py
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explorer import catalog
from prm.run import RunFormatError, embedding_points, load_run

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_runs" / "digits-classes-prm-s0"
EXAMPLES = int(os.environ.get("PRM_FUZZ_EXAMPLES", "300"))
pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason=f"{SAMPLE} is missing")
FILES = sorted(p.relative_to(SAMPLE).as_posix() for p in SAMPLE.rglob("*") if p.is_file())
NPZ = [f for f in FILES if f.endswith(".npz")]
DEEP = "__deep_nesting__"
HUGE_INT = "__huge_int__"
"""Replaced by an integer of 5000 digits: valid JSON, beyond Python's default int-string limit."""
BIDI = "\u202e\u202d\u200f\u200e\u2066\u2067\u2068\u2069\u061c\u200b\u200d\ufeff\u2028\u2029"
"""Bidi controls, zero-width and other format characters (category Cf) and line separators."""
HEADER_SHAPES = [(0, 10**30), (0, 2**62), (2**62, 0), (0, 2**31, 2**31), (2**40,), (10**6, 10**6), (0,), (3, -1)]
OUTSIDE = ["/etc/passwd", "/dev/zero", "/dev/stdin", "../run.json", "arrays/../../x.npz", "arrays/task_000.npz\n",
           "arrays/task_999.npz", ""]

json_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**30, -1, 0, 2**31, 2**63, 1e308, -1e-300]),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False), st.text(max_size=40),
    st.sampled_from(["![](http://127.0.0.1:8765/x)", "<img src=x onerror=alert(1)>", ":red[x]", "\n", DEEP]),
    st.integers(min_value=2**1024, max_value=10**400), st.integers(max_value=-(2**1024), min_value=-(10**400)),
    st.just(HUGE_INT), st.text(alphabet=st.sampled_from(BIDI + "ab1."), min_size=1, max_size=12),
    st.lists(st.integers(-3, 30), max_size=6), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)

mutation = st.one_of(
    st.tuples(st.just("truncate"), st.sampled_from(FILES), st.floats(0, 1, allow_subnormal=False)),
    st.tuples(st.just("json"), st.sampled_from(["run.json", "summary.json", "events.jsonl"]),
              st.integers(0, 10**6), st.integers(0, 10**6), json_values),
    st.tuples(st.just("drop"), st.sampled_from(FILES)),
    st.tuples(st.just("array"), st.sampled_from(NPZ), st.integers(0, 100),
              st.lists(st.integers(0, 6), max_size=3).map(tuple),
              st.sampled_from(["float32", "float16", "int64", "bool", "uint8", "complex64", "float64"]),
              st.sampled_from([0.0, 0.5, 2.0, np.nan, np.inf])),
    st.tuples(st.just("header"), st.sampled_from(NPZ), st.integers(0, 100), st.sampled_from(HEADER_SHAPES)),
    st.tuples(st.just("path"), st.integers(0, 10**6), st.sampled_from(OUTSIDE)),
    st.tuples(st.just("link"), st.sampled_from(FILES), st.sampled_from(["/dev/zero", "/etc/passwd", "../outside"])),
)


def _paths(value, prefix=()):
    """Every path into a JSON value (keys and indices), the root included."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _replace(document, path, new):
    if not path:
        return new
    target = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return document


def _dumps(value) -> str:
    return (json.dumps(value).replace(json.dumps(DEEP), "[" * 50_000 + "]" * 50_000)
            .replace(json.dumps(HUGE_INT), "1" + "0" * 4999))


def _npy_with_header(shape: tuple) -> bytes:
    """A version-1.0 ``.npy`` whose header claims ``shape`` (numpy itself refuses to write it),
    followed by a few bytes of data."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1") + b"\0" * 16


def _craft_header(path: Path, key_pick: int, shape: tuple) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            members = {info.filename: zf.read(info) for info in zf.infolist()}
    except Exception:  # an earlier mutation damaged it
        return
    names = sorted(members)
    if names:
        members[names[key_pick % len(names)]] = _npy_with_header(shape)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def mutate(folder: Path, op: tuple) -> None:
    kind = op[0]
    if kind == "truncate":
        path = folder / op[1]
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            path.write_bytes(data[: int(len(data) * op[2])])
    elif kind == "drop":
        (folder / op[1]).unlink(missing_ok=True)
    elif kind == "json":
        _, name, line_pick, path_pick, value = op
        path = folder / name
        if not path.is_file() or path.is_symlink():
            return
        lines = path.read_text(errors="replace").split("\n") if name.endswith("jsonl") else [path.read_text(errors="replace")]
        n = line_pick % max(len(lines), 1)
        try:
            document = json.loads(lines[n])
        except (ValueError, RecursionError):  # an earlier mutation made it unreadable already
            return
        paths = list(_paths(document))
        lines[n] = _dumps(_replace(document, paths[path_pick % len(paths)], value))
        path.write_text("\n".join(lines))
    elif kind == "array":
        _, name, key_pick, shape, dtype, fill = op
        path = folder / name
        try:
            with np.load(path, allow_pickle=False) as data:  # the test's own copy, known to be clean
                arrays = dict(data)
        except Exception:
            return
        keys = sorted(arrays) + ["unexpected_l0"]
        with np.errstate(invalid="ignore"):
            arrays[keys[key_pick % len(keys)]] = np.full(shape, fill).astype(dtype)
        np.savez(path, **arrays)
    elif kind == "header":
        _, name, key_pick, shape = op
        if (folder / name).is_file() and not (folder / name).is_symlink():
            _craft_header(folder / name, key_pick, shape)
    elif kind == "path":
        _, line_pick, target = op
        log = folder / "events.jsonl"
        if not log.is_file() or log.is_symlink():
            return
        lines = log.read_text(errors="replace").split("\n")
        arrays = [n for n, line in enumerate(lines) if '"type": "arrays"' in line]
        if arrays:
            n = arrays[line_pick % len(arrays)]
            try:
                record = json.loads(lines[n])
            except (ValueError, RecursionError):
                return
            record["file"] = target
            lines[n] = json.dumps(record)
            log.write_text("\n".join(lines))
    elif kind == "link":
        _, name, target = op
        path = folder / name
        if target == "../outside":
            (folder.parent / "outside").write_bytes(b"{}")
            target = str(folder.parent / "outside")
        path.unlink(missing_ok=True)
        path.symlink_to(target)


def mutated_copy(tmp: Path, ops: list[tuple]) -> Path:
    folder = tmp / "run"
    shutil.copytree(SAMPLE, folder)
    for op in ops:
        mutate(folder, op)
    return folder


def exercise(run) -> None:
    """What the views ask of a run: the accuracy matrix, masks, embeddings, DTD steps."""
    R = run.state.accuracy_matrix("test")
    assert R.shape == (run.state.n_tasks, run.state.n_tasks)
    known = R[~np.isnan(R)]
    assert ((known >= 0) & (known <= 1)).all()
    for layer in range(run.n_layers):
        for task in run.learnt(layer):
            mask = run.mask(task, layer)
            assert mask.ndim == 1 and ((mask >= 0) & (mask <= 1)).all()
        for step in run.dtd_steps():
            assert run.dtd_embeddings(step, layer).shape[0] == step + 1
            assert len(run.state.dtd[step].layers[layer]["xmeans"]["labels"]) == step + 1
        points, tasks, _ = embedding_points(run, layer)
        assert len(points) == len(tasks) and np.isfinite(points).all()


def fuzz(examples: int):
    """A fixed, derandomised Hypothesis run of ``examples`` damaged copies (one to three mutations)."""
    ran = settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    return lambda test: ran(given(st.lists(mutation, min_size=1, max_size=3))(test))


@fuzz(EXAMPLES)
def test_any_damaged_run_loads_partially_or_raises_run_format_error(ops):
    with tempfile.TemporaryDirectory() as tmp:
        folder = mutated_copy(Path(tmp), ops)
        try:
            run = load_run(folder)
        except RunFormatError as exc:
            assert str(exc)
            run = None
        row = catalog.describe(folder)
        assert row.status in ("finished", "running", "stopped", "failed", "unreadable")
        assert (row.status == "unreadable") == (run is None)
        if run is not None:
            exercise(run)


APP_EXAMPLES = max(1, EXAMPLES // 40)


@pytest.mark.slow
@fuzz(APP_EXAMPLES)
def test_every_view_renders_a_damaged_run_or_says_what_is_missing(ops):
    from streamlit.testing.v1 import AppTest

    from explorer import state as keys

    with tempfile.TemporaryDirectory() as tmp:
        folder = mutated_copy(Path(tmp), ops)
        for view in (keys.OVERVIEW, keys.ACCURACY, keys.EMBEDDINGS, keys.CLUSTERING, keys.MASKS, keys.COMPARE):
            at = AppTest.from_file(str(ROOT / "explorer" / "app.py"), default_timeout=60)
            at.session_state[keys.RUNS_DIR] = str(Path(tmp))
            at.session_state[keys.PROJECTION] = "pca"
            at.query_params[keys.VIEW] = view
            at.query_params[keys.RUN] = str(folder)
            at.run()
            assert not at.exception, (view, ops, [e.value for e in at.exception])
            said = " ".join(str(e.value) for kind in ("error", "warning", "info") for e in getattr(at, kind))
            assert at.get("plotly_chart") or said, (view, ops)
            spoofing = {c for c in _shown_text(at) if unicodedata.category(c) in ("Cf", "Zl", "Zp")}
            assert not spoofing, (view, ops, sorted(map(hex, map(ord, spoofing))))


def _shown_text(at) -> str:
    """Every text an AppTest page shows: each element's message as UTF-8 text (values, labels,
    options, table cells) and every string inside a Plotly figure's JSON, escapes decoded."""
    from google.protobuf import text_format

    parts = []
    for root in (at.main, at.sidebar):
        for node in _walk(root):
            proto = getattr(node, "proto", None)
            if proto is None:
                continue
            parts.append(text_format.MessageToString(proto, as_utf8=True))
            spec = getattr(proto, "spec", "")
            if spec:
                parts.extend(_strings(json.loads(spec)))
            if type(node).__name__ == "Dataframe":
                frame = node.value
                parts.extend(map(str, [*frame.columns, *frame.index, *frame.to_numpy().ravel()]))
    return "".join(parts)


def _walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# ----------------------------------------------------------------------------- Optuna storages

TRIAL_ATTRS = ["val_acc", "test_acc", "bwt", "seconds", "test_matrix", "families", "run_dir", "run_dir_relative",
               "host", "note"]
STUDY_ATTRS = ["kind", "sequence", "method", "setup", "seed", "tasks", "cells"]
STORAGE_EXAMPLES = max(1, EXAMPLES // 10)
_storages = {"n": 0}


def _hostile_study(url: str, path: Path, name: str, trial_attrs: dict, study_attrs: dict) -> None:
    """A tune study of three complete trials, the middle one carrying ``trial_attrs`` and the
    study ``study_attrs``; the markers become a 5000-digit integer or a deep nesting in the
    database itself (Optuna's own JSON writer refuses both)."""
    import sqlite3

    import optuna

    from prm import tune

    study = optuna.create_study(storage=tune.open_storage(url), study_name=name, direction="maximize")
    for key, value in {"kind": "tune", "sequence": "digits-mixed", "method": "prm", "tasks": 2, **study_attrs}.items():
        study.set_user_attr(key, value)
    space = {"lr": optuna.distributions.FloatDistribution(0.01, 0.3, log=True)}
    good = {"test_acc": 0.8, "val_acc": 0.8, "bwt": 0.0, "seconds": 1.0, "families": ["a", "b"],
            "test_matrix": [[0.9, None], [0.8, 0.7]]}
    for n in range(3):
        attrs = {**good, **(trial_attrs if n == 1 else {})}
        study.add_trial(optuna.trial.create_trial(params={"lr": 0.02 * (n + 1)}, distributions=space,
                                                  value=0.8, user_attrs=attrs))
    with sqlite3.connect(path) as conn:
        for table in ("trial_user_attributes", "study_user_attributes"):
            conn.execute(f"UPDATE {table} SET value_json = ? WHERE value_json = ?", ("1" + "0" * 4999, json.dumps(HUGE_INT)))
            conn.execute(f"UPDATE {table} SET value_json = ? WHERE value_json = ?", ("[" * 50_000 + "]" * 50_000, json.dumps(DEEP)))
    conn.close()


@pytest.fixture(scope="module")
def storage_folder(tmp_path_factory):
    """One SQLite storage for all examples (a new study each): creating Optuna's tables once."""
    return tmp_path_factory.mktemp("storage")


@settings(max_examples=STORAGE_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.dictionaries(st.sampled_from(TRIAL_ATTRS), json_values, min_size=1, max_size=4),
       st.dictionaries(st.sampled_from(STUDY_ATTRS), json_values, max_size=2))
def test_a_study_with_hostile_attributes_is_read_and_shown(storage_folder, trial_attrs, study_attrs):
    """Any attribute values: ``load_study`` reads the study, the two sound trials stay complete,
    the hostile one is complete or unreadable with a reason, and what the Tuning view builds
    from it builds. A study attribute Optuna itself cannot decode (5000 digits, deep nesting)
    fails the whole study as one ``StorageError`` line, since Optuna reads a study's
    attributes together (docs/reliability.md)."""
    from explorer.figures import tuning as fig
    from prm import tune

    _storages["n"] += 1
    path = storage_folder / "o.db"
    url, name = f"sqlite:///{path}", f"s{_storages['n']}"
    _hostile_study(url, path, name, trial_attrs, study_attrs)
    try:
        study = tune.load_study(url, name)
    except tune.StorageError as exc:
        assert {HUGE_INT, DEEP} & {v for v in study_attrs.values() if isinstance(v, str)}, exc
        assert "\n" not in str(exc)
        return
    states = [t.state for t in study.trials]
    assert states[0] == states[2] == "complete" and states[1] in ("complete", "unreadable"), states
    assert (states[1] == "unreadable") == bool(study.trials[1].problem)
    assert all(isinstance(line, str) and line for line in study.problems)
    fig.trials_table(study, {t.number: tune.run_folder(url, t) for t in study.trials})
    fig.headline(study)
    fig.acc_figure(study)
    fig.cells_table(study)
    fig.problems_line(study)
