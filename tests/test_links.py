"""Links that ask for something the app does not have: each is named in a warning that says
what is shown instead, worded for what is missing (a run the list lacks is not 'a run's')."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from explorer import state as keys

APP = str(Path(__file__).resolve().parents[1] / "explorer" / "app.py")


def _open(**params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception
    return at


def test_a_run_the_list_lacks_is_named_as_such():
    at = _open(**{keys.RUN: "sample_runs/does-not-exist", keys.VIEW: keys.OVERVIEW})
    (warning,) = [w.value for w in at.warning if "The link asks for" in w.value]
    assert "does\\-not\\-exist" in warning  # the name, escaped for Markdown
    assert "which the run list does not have" in warning
    assert "this run" not in warning


def test_an_unknown_view_is_named_and_story_shown():
    at = _open(**{keys.VIEW: "Nope"})
    (warning,) = [w.value for w in at.warning if "The link asks for" in w.value]
    assert "the view 'Nope'" in warning and f"showing {keys.STORY} instead" in warning
