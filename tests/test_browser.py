"""One real-browser test: the app served by `streamlit run`, opened in headless chromium.

Skips (with the reason) where /usr/bin/chromium or Playwright is missing; CI installs both
(Debian's chromium package; Playwright's own browser download is never used) and sets
PRM_REQUIRE_BROWSER=1, which turns a would-be skip into a failure.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from explorer.browser import CHROMIUM, browser_page, exceptions, open_view, serve

SAMPLE = "sample_runs/digits-mixed-prm-s0"

_REQUIRED = os.environ.get("PRM_REQUIRE_BROWSER") == "1"
pytestmark = [] if _REQUIRED else [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright is not installed"),
    pytest.mark.skipif(not (Path(__file__).resolve().parents[1] / SAMPLE).exists(), reason=f"{SAMPLE} missing"),
]


def test_app_renders_in_a_real_browser(tmp_path):
    with serve(timeout=90, env={"PRM_EXPLORER_RUNS": str(tmp_path / "runs")}) as url, browser_page() as page:
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
