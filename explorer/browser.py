"""Drive the real app in a headless browser: the browser test and the README screenshot.

``python -m explorer.browser docs/screenshot.png`` starts ``streamlit run explorer/app.py``
on a free loopback port, opens it in Debian's chromium through Playwright and saves a
picture of the given view. Playwright's own browser download is never used.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("PRM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(*, port: int | None = None, timeout: float = 60.0, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run the app on 127.0.0.1 and yield its URL; the server is always killed afterwards."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "explorer" / "app.py"), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with status {proc.returncode} before serving")
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def browser_page(*, width: int = 1500, height: int = 1000):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def open_view(page, url: str, **params: str) -> None:
    """Load the app with query parameters and wait until its charts are drawn."""
    page.goto(f"{url}/?{urlencode(params)}")
    page.wait_for_selector(".js-plotly-plot .main-svg", state="attached")
    page.wait_for_timeout(800)  # let plotly finish laying out before any picture


def exceptions(page) -> list[str]:
    return [e.inner_text() for e in page.query_selector_all('[data-testid="stException"]')]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument("--view", default="Task embeddings")
    parser.add_argument("--run", default="sample_runs/digits-writers-binary-prm-s2")
    parser.add_argument("--task", default=None)
    parser.add_argument("--full-page", action="store_true")
    parser.add_argument("--size", default="1500x1000", help="viewport WIDTHxHEIGHT (1280x720: a projector)")
    parser.add_argument("--mode", choices=["lecture"], help="lecture: the Story one step per screen")
    parser.add_argument("--slide", default="1", help="with --mode lecture, the steps to picture, as 3 or 1,2,3,4,5 "
                        "(one picture each, named by OUT's {slide}: docs/lecture/step-{slide}.png)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    params = {"run": args.run, "view": args.view, **({"task": args.task} if args.task else {}),
              **({"mode": args.mode} if args.mode else {})}
    slides = args.slide.split(",") if args.mode else [None]
    with serve() as url, browser_page(width=width, height=height) as page:
        page.set_default_timeout(90_000)  # a loaded machine may take a while to draw the first chart
        for slide in slides:
            open_view(page, url, **params, **({"slide": slide} if slide else {}))
            problems = exceptions(page)
            if problems:
                print("\n".join(problems), file=sys.stderr)
                return 1
            out = args.out.format(slide=slide) if slide else args.out
            page.screenshot(path=out, full_page=args.full_page)
            print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
