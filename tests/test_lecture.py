"""Lecture mode (the Story one step per screen, ``?mode=lecture&slide=k``) through AppTest and
in a real browser at 1024x768, a common projector resolution; the Story's figures at lecture
size; and the Story's "Train <method>" buttons filling the whole Train-live form from the open
run's recorded configuration (a 4-task run trained here), so the new run is a sibling."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer import state as keys
from explorer.browser import CHROMIUM, browser_page, serve
from explorer.figures import consequence, story
from explorer.views.story import STEPS
from prm.config import ModelConfig, OptimConfig, PRMConfig
from prm.engine import train_sequence
from prm.run import RunWriter, load_run
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "explorer" / "app.py")
DEFAULT = "sample_runs/digits-writers-binary-prm-s2"
"""The run the app opens on: PRM with every sibling the five steps need (HAT, STL)."""
pytestmark = pytest.mark.skipif(not (ROOT / DEFAULT / "run.json").exists(), reason=f"{DEFAULT} missing")


def lecture(**params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params.update({keys.RUN: DEFAULT, **params})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def titles(at: AppTest) -> list[str]:
    """The slide's step title(s): the ``##`` headings the lecture draws (Markdown-escaped)."""
    return [m.value[3:].replace("\\", "") for m in at.markdown if m.value.startswith("## ")]


def test_a_lecture_link_shows_one_step_and_the_buttons_move_it_and_the_url():
    at = lecture(mode="lecture")
    assert titles(at) == [STEPS[0]] and not at.tabs and len(at.get("plotly_chart")) == 1
    assert not at.expander or all(e.label != "How to read this" for e in at.expander)  # no details on a slide
    assert at.query_params[keys.SLIDE] == "1" and at.button(key="lecture-previous").disabled
    for k in range(2, 6):
        at.button(key="lecture-next").click().run()
        assert titles(at) == [STEPS[k - 1]] and at.query_params[keys.SLIDE] == str(k)
        assert any(m.value.startswith(f"step {k} of 5") for m in at.markdown)
    assert at.button(key="lecture-next").disabled
    at.button(key="lecture-previous").click().run()
    assert titles(at) == [STEPS[3]] and at.query_params[keys.SLIDE] == "4"


def test_a_lecture_resumes_at_the_linked_step_and_warns_of_one_it_lacks():
    assert titles(lecture(mode="lecture", slide="3")) == [STEPS[2]]
    at = lecture(mode="lecture", slide="9")
    assert "The link asks for the step '9', which the Story does not have (1\\, 2\\, 3\\, 4\\, 5); showing 1" in (
        at.warning[0].value)
    assert titles(at) == [STEPS[0]] and at.query_params[keys.SLIDE] == "1"
    odd = lecture(mode="slides")
    assert "The link asks for the mode 'slides'" in odd.warning[0].value and len(odd.tabs) == len(keys.VIEWS)


def test_the_toggle_and_the_end_button_round_trip_through_the_url():
    at = lecture(view=keys.STORY)
    assert keys.MODE not in at.query_params and len(at.tabs) == len(keys.VIEWS)
    at.toggle(key=keys.LECTURE).set_value(True).run()
    assert at.query_params[keys.MODE] == "lecture" and titles(at) == [STEPS[0]] and not at.tabs
    at.button(key="lecture-next").click().run()
    at.button(key="lecture-end").click().run()
    assert keys.MODE not in at.query_params and keys.SLIDE not in at.query_params
    assert not at.toggle(key=keys.LECTURE).value and len(at.tabs) == len(keys.VIEWS)


def test_lecture_figures_take_one_height_and_larger_type():
    run = load_run(ROOT / DEFAULT)
    hat = load_run(ROOT / DEFAULT.replace("-prm-", "-hat-"))
    table = story.calls_table(run.state, layer=0)
    figures = [story.sequence_figure(run.state, size=story.LECTURE),
               story.protection_figure(story.protection_table(hat.state, layer=0), layer=0, size=story.LECTURE),
               story.calls_figure(table, n_tasks=10, layer=0, method="prm", size=story.LECTURE),
               story.relaxed_figure(run, task=9, layer=0, size=story.LECTURE),
               consequence.difference_figure(run.state, hat.state, a_name="PRM", b_name="HAT", size=story.LECTURE)]
    for fig in figures:
        assert fig.layout.height == story.LECTURE.height
        assert fig.layout.font.size == story.LECTURE.font() > story.PAGE.font()
        assert fig.layout.legend.orientation in (None, "v") or fig is figures[0]  # at the side: a screen is wide
    page = story.calls_figure(table, n_tasks=10, layer=0, method="prm")
    assert page.layout.legend.orientation == "h" and page.layout.height == 140 + 34 * 9
    long = story.PAGE.wrap("Accuracy of PRM minus HAT (red: HAT better, blue: PRM better)")
    assert long == "Accuracy of PRM minus HAT (red: HAT better,<br>blue: PRM better)"  # fits a 420 px column
    assert story.PAGE.wrap("a <b> & c") == "a &lt;b&gt; &amp; c"  # names from run files stay literal


# ----------------------------------------------------------------------------- bug 1: the Train buttons

@pytest.fixture(scope="module")
def four_tasks(tmp_path_factory) -> Path:
    """A 4-task PRM run of digits-writers-binary at settings far from the form's defaults."""
    root = tmp_path_factory.mktemp("lecture-runs")
    cfg = tiny_config(sequence="digits-writers-binary", n_tasks=4, method="prm", model=ModelConfig(hidden=(48, 48)),
                      optim=OptimConfig(max_epochs=3, patience=2), prm=PRMConfig(dtd_epochs=3, head_epochs=2))
    train_sequence(cfg, emit=RunWriter(root / "digits-writers-binary-prm-s0", config=cfg))
    return root


def test_train_hat_fills_every_field_a_sibling_needs_from_the_open_run(four_tasks):
    """Before the fix the button set only sequence, method and seed: the form kept 0 tasks (the
    sequence's 10), 200 epochs and 40 DTD epochs, and the new run was no sibling."""
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params.update({keys.RUN: str(four_tasks / "digits-writers-binary-prm-s0"), keys.VIEW: keys.STORY})
    at.session_state[keys.RUNS_DIR] = str(four_tasks)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.button(key="story-train-hat").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state[keys.VIEW] == keys.LIVE
    config = load_run(four_tasks / "digits-writers-binary-prm-s0").state.config
    form = {key: at.number_input(key=key).value for key in
            ("live-n-tasks", "live-epochs", "live-dtd", "live-width", "live-layers", "live-patience")}
    assert config["n_tasks"] == 4
    assert form == {"live-n-tasks": 4, "live-epochs": config["optim"]["max_epochs"],
                    "live-dtd": config["prm"]["dtd_epochs"], "live-width": config["model"]["hidden"][0],
                    "live-layers": len(config["model"]["hidden"]), "live-patience": config["optim"]["patience"]}
    assert (at.selectbox(key=keys.LIVE_SEQUENCE).value, at.selectbox(key=keys.LIVE_METHOD).value,
            at.number_input(key=keys.LIVE_SEED).value) == ("digits-writers-binary", "hat", 0)


# ----------------------------------------------------------------------------- a real browser at 1024x768

_REQUIRED = os.environ.get("PRM_REQUIRE_BROWSER") == "1"  # CI: a missing browser fails rather than skips
SCROLL = """() => { const d = document.scrollingElement, m = document.querySelector('[data-testid="stMain"]');
  return {tall: Math.max(d.scrollHeight, m ? m.scrollHeight : 0), wide: Math.max(d.scrollWidth, m ? m.scrollWidth : 0),
          h: innerHeight, w: innerWidth}; }"""
"""How tall and wide the page and its main column are, against the window."""


@pytest.mark.skipif(not _REQUIRED and not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed")
@pytest.mark.skipif(not _REQUIRED and importlib.util.find_spec("playwright") is None, reason="no playwright")
def test_a_lecture_fits_a_projector_and_the_arrow_keys_move_it():
    """Each of the five steps at 1024x768: no scrolling either way; → moves on, ← back."""
    size = (1024, 768)
    width, height = size
    with serve(timeout=90) as url, browser_page(width=width, height=height) as page:
        page.set_default_timeout(90_000)
        page.goto(f"{url}/?run={DEFAULT}&mode=lecture&slide=1")
        for k in range(1, 6):
            page.get_by_text(f"step {k} of 5").wait_for()
            page.wait_for_selector('[data-test-script-state="notRunning"]', state="attached")
            page.wait_for_function("() => document.querySelector('.js-plotly-plot .main-svg')")
            page.wait_for_timeout(500)  # plotly lays out its text after the first paint
            box = page.evaluate(SCROLL)
            assert box["tall"] <= box["h"] + 4, f"step {k} scrolls: {box}"
            assert box["wide"] <= box["w"] + 1, f"step {k} scrolls sideways: {box}"
            assert page.get_by_role("heading", name=STEPS[k - 1]).count() == 1
            if k < 5:
                page.keyboard.press("ArrowRight")
        assert "slide=5" in page.url
        page.keyboard.press("ArrowLeft")
        page.get_by_text("step 4 of 5").wait_for()
