"""Train live in a real browser: a new run listed above the running ones never shows another
run's charts in its card (bug: "a third live run's card briefly shows another run's faded
charts"). Skips like tests/test_browser.py where chromium or Playwright is missing."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from explorer.browser import CHROMIUM, browser_page, serve
from prm.run.meta import _process_start

SAMPLES = Path(__file__).resolve().parents[1] / "sample_runs"
pytestmark = [] if os.environ.get("PRM_REQUIRE_BROWSER") == "1" else [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright is not installed"),
    pytest.mark.skipif(not (SAMPLES / "digits-mixed-prm-s0").exists(), reason="sample runs missing"),
]

WATCH = """name => { window.stale = 0; const tick = () => {
  for (const head of document.querySelectorAll('strong')) {
    if (!head.innerText.startsWith(name)) continue;
    const row = head.closest('[data-testid="stHorizontalBlock"]');
    const card = row && row.parentElement.closest('[data-testid="stVerticalBlock"]');
    if (card && card.querySelector('.js-plotly-plot')) window.stale += 1;
  }
  requestAnimationFrame(tick); }; tick(); }"""
"""Counts, every frame, the frames in which the card headed ``name`` holds a chart."""


def running_copy(root: Path, name: str, sample: str, *, writer: int, age: int, records: int | None = None) -> None:
    """A copy of a sample run that reads as running: no closing record, no summary, run.json
    naming a live process (``writer``); ``records`` keeps only the first lines of its log."""
    folder = root / name
    shutil.copytree(SAMPLES / sample, folder)
    (folder / "summary.json").unlink(missing_ok=True)
    lines = [line for line in (folder / "events.jsonl").read_text().splitlines(True) if '"run_end"' not in line]
    (folder / "events.jsonl").write_text("".join(lines[:records]))
    meta = json.loads((folder / "run.json").read_text())
    meta.update(pid=writer, pid_start=_process_start(writer), host=socket.gethostname())
    (folder / "run.json").write_text(json.dumps(meta))
    stamp = 2_000_000_000 - age  # run.json's time orders the runs: the smallest age is listed first
    os.utime(folder / "run.json", (stamp, stamp))


def test_a_new_run_card_never_shows_another_runs_charts(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    writer = subprocess.Popen(["sleep", "900"])
    try:
        running_copy(root, "first-run", "digits-mixed-prm-s0", writer=writer.pid, age=200)
        running_copy(root, "second-run", "digits-mixed-hat-s0", writer=writer.pid, age=100)
        with serve(timeout=180, env={"PRM_EXPLORER_RUNS": str(root), "PRM_EXPLORER_WARM": "0"}) as url, \
                browser_page(width=1280, height=900) as page:
            page.set_default_timeout(180_000)
            page.goto(f"{url}/?view=Train+live")
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 4")
            page.evaluate(WATCH, "third-run")
            # a third run, still starting (no epoch yet): listed first, at the place the second had
            running_copy(root, "third-run", "digits-mixed-ncl-s0", writer=writer.pid, age=10, records=1)
            page.get_by_text("third-run").first.wait_for()
            page.get_by_text("starting (loading data").first.wait_for()
            page.wait_for_timeout(4500)  # two more re-reads of the panel
            assert page.evaluate("window.stale") == 0
            assert page.locator(".st-key-live-card-third-run .js-plotly-plot").count() == 0
            assert page.locator(".st-key-live-card-second-run .js-plotly-plot").count() >= 1
    finally:
        writer.kill()
        writer.wait()
