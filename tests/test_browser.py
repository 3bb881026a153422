"""Real-browser tests: the app served by `streamlit run`, opened in headless chromium.

Skips (with the reason) where /usr/bin/chromium or Playwright is missing; CI installs both
(Debian's chromium package; Playwright's own browser download is never used) and sets
PRM_REQUIRE_BROWSER=1, which turns a would-be skip into a failure.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from explorer.browser import CHROMIUM, browser_page, exceptions, open_view, serve
from prm.run import load_run

SAMPLE = "sample_runs/digits-mixed-prm-s0"
DEFAULT = "sample_runs/digits-writers-binary-prm-s2"  # the run the app opens on: its Story is the README's picture

_REQUIRED = os.environ.get("PRM_REQUIRE_BROWSER") == "1"
pytestmark = [] if _REQUIRED else [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright is not installed"),
    pytest.mark.skipif(not (Path(__file__).resolve().parents[1] / SAMPLE).exists(), reason=f"{SAMPLE} missing"),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server for the module; its runs folder starts empty."""
    runs = tmp_path_factory.mktemp("browser") / "runs"
    with serve(timeout=90, env={"PRM_EXPLORER_RUNS": str(runs)}) as url:
        yield url, runs


def test_app_renders_in_a_real_browser(served, tmp_path):
    url, _ = served
    with browser_page() as page:
        open_view(page, url, run=SAMPLE, view="Accuracy matrix")
        assert exceptions(page) == []
        assert page.locator(".js-plotly-plot").count() >= 2
        assert page.get_by_text("R[j, i] after T10").count() >= 1  # the accuracy heatmap's title
        page.get_by_role("tab", name="Task embeddings").click()
        page.get_by_text("X-means when T10 arrived").first.wait_for()
        assert page.locator(".js-plotly-plot").count() >= 2
        assert exceptions(page) == []
        assert "view=Task+embeddings" in page.url or "view=Task%20embeddings" in page.url
        page.wait_for_timeout(500)
        shot = tmp_path / "embeddings.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000


def test_open_in_train_live_switches_header_and_url(served):
    """Open lives in a fragment that reruns alone; it must still switch the whole page."""
    url, runs = served
    with browser_page() as page:
        page.goto(f"{url}/?{urlencode({'run': SAMPLE, 'view': 'Train live'})}")  # no chart to wait for
        header = page.locator("h3").first
        header.wait_for()
        assert header.inner_text().strip() == Path(SAMPLE).name
        for label, value in [("tasks (0 = the sequence's default)", "2"), ("layer width", "32"),
                             ("max epochs per task", "3"), ("DTD epochs", "3")]:
            page.get_by_label(label, exact=True).fill(value)
        page.get_by_text("store UMAP at the end").click()
        page.get_by_role("button", name="Start").click()
        open_button = page.locator('[class*="st-key-open-"]').get_by_role("button", name="Open")  # keyed "open-…"
        open_button.wait_for(timeout=60_000)  # the tiny run has finished
        (folder,) = [p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")]
        assert f"run={quote(SAMPLE, safe='')}" in page.url
        open_button.click()
        page.wait_for_function("name => decodeURIComponent(location.search.replace(/\\+/g, ' ')).includes(name)",
                               arg=f"run={folder}")
        page.locator("h3", has_text=folder.name).wait_for()
        assert header.inner_text().strip() == folder.name
        assert exceptions(page) == []


def test_story_on_a_projector_and_its_links(served, tmp_path):
    """The first view at 1280x720: all five steps drawn, no exception; a step's button opens
    its detailed tab at the same task and layer, and the URL follows."""
    from explorer.views.story import STEPS

    url, _ = served
    with browser_page(width=1280, height=720) as page:
        open_view(page, url, run=DEFAULT, task="T7", layer="1")
        assert exceptions(page) == []
        for step in STEPS:
            page.get_by_role("heading", name=step).wait_for(state="attached")
        page.wait_for_function("n => document.querySelectorAll('.js-plotly-plot').length >= n", arg=5)
        shot = tmp_path / "story.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
        page.locator('[class*="st-key-story-go-3"]').get_by_role("button").click()
        seventh = load_run(Path(__file__).resolve().parents[1] / DEFAULT).state.tasks[6]["name"]
        page.get_by_text(f"T7 {seventh} arrives · layer 1").wait_for()
        assert "view=Clustering" in page.url and "task=T7" in page.url and "layer=1" in page.url
        assert exceptions(page) == []
