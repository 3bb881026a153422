"""Check a rendered page for layout faults, in a real browser: what a reader at 800, 1280 or
1920 px would see as broken, measured rather than eyeballed.

    python -m explorer.layout [--run RUN] [--views Story,Compare] [--sizes 800x900,1280x800] [--out DIR]

prints every fault of every view at every size and, with ``--out``, saves a full-page picture
of each. :func:`faults` is what ``tests/test_layout.py`` asserts on. A fault is one of:

- the page scrolls sideways (the document or the main column is wider than the window);
- two text boxes of one chart overlap (tick labels, cell text, titles, legend entries: their
  SVG bounding boxes intersect by more than :data:`OVERLAP_PX` each way);
- a chart's text is cut off (its box reaches outside the chart's own picture);
- a text of the page is cut to an ellipsis (a button or a label too narrow for its words);
- the page shows a Python error (a broken view has no layout to check);
- the page asked a host other than the app's own server for anything.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from urllib.parse import urlencode, urlparse

OVERLAP_PX = 2.0
"""Two boxes closer than this (either way) are touching, not overlapping: glyph boxes include
the font's line gap, so neighbouring labels that look apart still share a pixel or two."""

PROBE = """(overlap) => {
  const faults = [];
  document.querySelectorAll('[data-testid="stException"]').forEach(el => faults.push(`the page shows an error: ${el.innerText.trim().slice(0, 200)}`));
  const doc = document.scrollingElement;
  if (doc.scrollWidth > window.innerWidth + 1) faults.push(`the page scrolls sideways (${doc.scrollWidth} px wide in a ${window.innerWidth} px window)`);
  const main = document.querySelector('[data-testid="stMain"]');
  if (main && main.scrollWidth > main.clientWidth + 1) faults.push(`the main column scrolls sideways (${main.scrollWidth} px of content in ${main.clientWidth} px)`);
  const shown = (el) => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
    return r.width > 0.5 && r.height > 0.5 && s.visibility !== 'hidden' && s.display !== 'none' && parseFloat(s.opacity || '1') > 0.05
      && !el.closest('.hoverlayer') && (el.textContent || '').trim() !== ''; };
  document.querySelectorAll('.js-plotly-plot').forEach((plot, n) => {
    const frame = plot.getBoundingClientRect();
    if (frame.width < 1) return;
    const title = (plot.querySelector('.gtitle') || {}).textContent || `chart ${n + 1}`;
    const boxes = [...plot.querySelectorAll('svg.main-svg text')].filter(shown).map(el => [el.textContent.trim(), el.getBoundingClientRect()]);
    for (const [text, r] of boxes) {
      if (r.left < frame.left - 1 || r.right > frame.right + 1 || r.top < frame.top - 1 || r.bottom > frame.bottom + 1)
        faults.push(`'${title}': '${text}' is cut off by the chart's edge`);
    }
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const [a, ra] = boxes[i], [b, rb] = boxes[j];
      const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
      const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
      if (w > overlap && h > overlap) faults.push(`'${title}': '${a}' overlaps '${b}'`);
    }
  });
  document.querySelectorAll('[data-testid="stMain"] *').forEach(el => {
    if (el.scrollWidth <= el.clientWidth + 1 || !shown(el) || getComputedStyle(el).textOverflow !== 'ellipsis') return;
    faults.push(`'${el.textContent.trim().slice(0, 60)}' is cut to fit its box`);
  });
  document.querySelectorAll('[data-testid="stMain"] [data-testid="stDataFrame"] .dvn-scroller').forEach(el => {
    if (el.scrollWidth > el.clientWidth + 1) faults.push(`a table scrolls sideways (${el.scrollWidth} px of columns in ${el.clientWidth} px)`);
  });
  return faults;
}"""


def settle(page, *, timeout: float = 90.0) -> None:
    """Wait until the script has finished and every chart has drawn its picture (polled, with a
    generous deadline: a loaded 2-core machine may take seconds)."""
    page.wait_for_function(SETTLED, timeout=timeout * 1000)
    page.wait_for_timeout(600)  # plotly lays out text after the first paint
    page.wait_for_function(SETTLED, timeout=timeout * 1000)  # ...unless a rerun started meanwhile


SETTLED = """() => document.querySelector('[data-test-script-state="notRunning"]') !== null
    && document.querySelector('[data-stale="true"], [data-testid="stSkeleton"]') === null
    && [...document.querySelectorAll('.js-plotly-plot')].every(p => p.querySelector('.main-svg'))"""
"""The script is idle, nothing on the page is stale (faded, from the previous run) or a
placeholder, and every chart has drawn."""


def faults(page) -> list[str]:
    """Every layout fault of the page as it is drawn now (see the module's docstring)."""
    found = page.evaluate(PROBE, OVERLAP_PX)
    return list(dict.fromkeys(found))  # a fault drawn twice (two identical charts) is one fault


class Outside:
    """Collects the page's requests to any host other than the app's own server."""

    def __init__(self, page, *, url: str) -> None:
        self.host = urlparse(url).hostname
        self.requests: list[str] = []
        page.on("request", self._seen)

    def _seen(self, request) -> None:
        parsed = urlparse(request.url)
        if parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname != self.host:
            self.requests.append(request.url)


def visit(page, url: str, **params: str) -> None:
    """Open the app at ``params`` and every expander of its main column, so that what a reader
    finds by opening "How to read this" is checked too (a chart drawn while its expander was
    closed is laid out again when it opens, as it is for the reader)."""
    page.goto(f"{url}/?{urlencode(params)}")
    settle(page)
    page.evaluate("""() => document.querySelectorAll('[data-testid="stMain"] details:not([open]) > summary')
        .forEach(s => s.click())""")
    settle(page)


def picture(page, path: Path) -> None:
    """The whole page: Streamlit scrolls its main column, not the document, so the window is
    made as tall as that column for the picture (then restored)."""
    size = page.viewport_size
    tall = page.evaluate("() => (document.querySelector('[data-testid=stMain]') || document.body).scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], tall)})
    page.wait_for_timeout(400)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


def main() -> int:
    from explorer import state as keys
    from explorer.browser import browser_page, serve

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="sample_runs/digits-writers-binary-prm-s2")
    parser.add_argument("--views", default=",".join(keys.VIEWS))
    parser.add_argument("--sizes", default="800x900,1280x800,1920x1080")
    parser.add_argument("--out", help="a folder for one full-page picture per view and size")
    parser.add_argument("--runs-dir", help="the sidebar's runs folder (a run outside sample_runs/)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    total, started = 0, time.perf_counter()
    env = {"PRM_EXPLORER_RUNS": args.runs_dir} if args.runs_dir else None
    with serve(timeout=90, env=env) as url, browser_page() as page:
        outside = Outside(page, url=url)
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.split("x"))
            page.set_viewport_size({"width": width, "height": height})
            for view in args.views.split(","):
                visit(page, url, run=args.run, view=view)
                found = faults(page)
                total += len(found)
                print(f"{view} @ {size}: {len(found)} fault(s)", *(f"  - {f}" for f in found), sep="\n")
                if out:
                    picture(page, out / f"{view.replace(' ', '-').lower()}-{width}.png")
        for request in dict.fromkeys(outside.requests):
            print(f"request outside the app: {request}")
    print(f"{total} fault(s), {len(outside.requests)} outside request(s) in {time.perf_counter() - started:.0f} s")
    return 1 if total or outside.requests else 0


if __name__ == "__main__":
    sys.exit(main())
