"""Run strings carrying bidi controls and other invisible format characters (a right-to-left
override that makes 'gpj.exe' read 'exe.jpg', marks, isolates, zero-width joiners, line and
paragraph separators) reach no element of the page: every view renders them as visible escapes
(``\\u202e``) in Markdown, captions, alerts, widget options, table cells and plotly figures."""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
from google.protobuf.json_format import MessageToDict
from streamlit.testing.v1 import AppTest

from explorer import catalog
from explorer import state as keys
from explorer.figures.common import md, plain, task_label, visible
from prm.run import load_run

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_runs"
METHODS = ("prm", "cat", "hat", "stl")
"""Siblings of one sequence and seed: the Story, FWT, 'compare with' and Compare paths show
them all; PRM and CAT each open as the current run (DTD, and CAT's transfer tests)."""
pytestmark = pytest.mark.skipif(not all((SAMPLES / f"digits-mixed-{m}-s0" / "run.json").exists() for m in METHODS),
                                reason="the digits-mixed samples are missing")

HIDDEN = "\u202e\u200f\u2066\u061c\u200d\u200b\ufeff\u2028\u2029\U000e0041"
"""RLO, RLM, LRI, ALM, ZWJ, ZWSP, BOM, line and paragraph separators, a tag character."""
FOLDER = "\u202egpj.exe\u200f\u2066-x"


def spoof(text: str, n: int) -> str:
    """``text`` wrapped in two of the hidden characters, a different pair for each ``n``."""
    return f"{HIDDEN[n % len(HIDDEN)]}{text}\u202e{HIDDEN[(n + 3) % len(HIDDEN)]}\u200d"


def spoofed_copy(method: str, root: Path) -> Path:
    """A copy of the method's digits-mixed sample whose folder name, sequence name, task names
    and families carry the hidden characters, with one record whose warning quotes them."""
    folder = Path(shutil.copytree(SAMPLES / f"digits-mixed-{method}-s0", root / f"{method}{FOLDER}"))
    records = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    first = records[0]
    first["sequence"] = spoof("digits-mixed", 0)
    for n, task in enumerate(first["tasks"]):
        task["name"] = spoof(task["name"], n)
        task["family"] = spoof(task["family"], n + 1)
    records.insert(1, {"type": "bo\u202egus\u2028\u061c"})  # skipped with a warning naming its type
    (folder / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "summary.json").unlink()
    run = load_run(folder)
    assert "\u202e" in run.state.tasks[0]["name"] and any("\u202e" in w for w in run.warnings)
    return folder


@pytest.fixture(scope="module")
def bidi_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bidi")
    return {method: spoofed_copy(method, root) for method in METHODS}


def hidden_in(text: str) -> set[str]:
    return {c for c in text if unicodedata.category(c) in ("Cf", "Zl", "Zp")}


def shown_strings(at: AppTest) -> list[str]:
    """Every string of every element and block the page holds: their protos' fields, each
    dataframe's cells, columns and index, and each plotly figure's spec and config (the PNG's
    file name), parsed."""
    found: list[str] = []

    def walk(value):
        if isinstance(value, dict):
            found.extend(str(k) for k in value)
            for k, v in value.items():
                if k != "id":  # an element's id holds its widget key, never shown
                    walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            found.append(value)

    for node in at._tree:
        proto = getattr(node, "proto", None)
        if proto is None or not hasattr(proto, "DESCRIPTOR"):
            continue
        if getattr(node, "type", "") == "plotly_chart":  # JSON, where a character may hide as \u202e
            walk([json.loads(proto.spec), json.loads(proto.config)])
        elif getattr(node, "type", "") == "arrow_data_frame":
            frame = node.value
            walk([*map(str, frame.columns), *map(str, frame.index), *map(str, frame.to_numpy().ravel())])
        walk(MessageToDict(proto))
    return found


@pytest.mark.parametrize("method", ["prm", "cat"])
@pytest.mark.parametrize("view", keys.VIEWS)
def test_no_hidden_character_reaches_any_element(bidi_runs, view, method):
    """Every view of a spoofing run, with a link asking for a spoofed task too, renders, and
    not one element's text holds a format character; the names are still there, escaped."""
    folder = bidi_runs[method]
    at = AppTest.from_file(str(ROOT / "explorer" / "app.py"), default_timeout=60)
    at.session_state[keys.RUNS_DIR] = str(folder.parent)
    at.session_state[keys.PROJECTION] = "pca"
    at.session_state[keys.LIVE_STARTED] = [str(folder)]  # the Train-live panel lists it too
    at.query_params[keys.VIEW] = view
    at.query_params[keys.RUN] = catalog.key_of(folder)
    at.query_params[keys.TASK] = "T2\u202e\u2066"  # not an option: the page warns, quoting it
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    found = shown_strings(at)
    leaks = [s for s in found if hidden_in(s)]
    assert not leaks, leaks
    assert any(visible("\u202e") in s for s in found)  # shown as an escape, not dropped
    assert any("The link asks for task" in w.value for w in at.warning)


def test_visible_escapes_every_format_character_and_keeps_the_rest():
    for text in ["plain ASCII", "écrit 東京 ١٢٣ 👍🏽", "a\u00adb"]:
        assert not hidden_in(visible(text))
    assert visible("écrit 東京 ١٢٣ 👍🏽") == "écrit 東京 ١٢٣ 👍🏽"
    assert visible("exe.\u202egpj") == "exe.\\u202egpj"
    assert visible("tag\U000e0041") == "tag\\U000e0041"
    assert visible(visible(HIDDEN)) == visible(HIDDEN)  # idempotent: applying it twice is safe
    assert not hidden_in(visible(HIDDEN)) and visible(HIDDEN).count("\\u") + visible(HIDDEN).count("\\U") == len(HIDDEN)
    for shown in (md(HIDDEN), plain(HIDDEN), task_label([{"name": HIDDEN}], 0)):
        assert not hidden_in(shown)


def test_table_cells_are_neutralised_in_the_csv_too():
    """What a table shows and what its CSV download holds are the same neutralised strings."""
    from explorer.views.common import shown_frame

    frame = pd.DataFrame({f"col{HIDDEN}": [f"a{HIDDEN}", 1.5], "n": [1, 2]})
    shown = shown_frame(frame)
    assert not any(hidden_in(str(v)) for v in [*shown.columns, *shown.to_numpy().ravel()])
    assert shown["n"].tolist() == [1, 2] and shown.iloc[1, 0] == 1.5  # numbers stay numbers
