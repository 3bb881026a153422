"""Time the explorer's first full render of every view on every sample run and on a 50-task
run (AppTest).

    python bench/app.py [--runs sample_runs] [--views Story,Clustering] [--long-run DIR | --no-long]
    python bench/app.py --live 5     # Train live's quick demo in a real browser, cold and warm

For each run the Streamlit caches are cleared, then each view is opened in a fresh AppTest
session and its first full script run is timed, so the first view of a run also pays for
loading the run (and the Story view for loading its siblings). One untimed warm-up render
imports the libraries first. The 50-task run is trained first with the engine's CLI at small
settings (mnist5k-long-50, prm+, width 64, about 40 s on 2 cores) into a temporary folder,
unless ``--long-run`` names one. Goal: < 1 s per view on the 2-core reference machine, with
UMAP precomputed (stored in the run).

``--live N`` times instead the quick demo of Train live (digits-mixed, prm, 4 tasks, the
``QUICK_DEMO`` settings, no UMAP) in a real browser (``explorer.browser``): from the click
on Start to the page showing the run's first epoch, and to the page showing it finished,
N times with warming off (each run a cold ``python -m prm``) and N times on (a warm worker,
``explorer.worker``), and prints the medians. The page rests 10 s before each Start, as a
user reading the form would, so a worker started after the previous run is ready.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from streamlit.components.v2 import manifest_scanner  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from explorer import state as keys  # noqa: E402

APP = str(ROOT / "explorer" / "app.py")
VIEWS = [v for v in keys.VIEWS if v != keys.LIVE] + [keys.LIVE]
SHORT = {keys.STORY: "story", keys.OVERVIEW: "overview", keys.ACCURACY: "accuracy", keys.EMBEDDINGS: "embeddings",
         keys.CLUSTERING: "clustering", keys.MASKS: "masks", keys.LIVE: "live", keys.COMPARE: "compare",
         keys.TUNING: "tuning"}


def render(run: str, view: str, runs_dir: Path | None = None) -> float:
    at = AppTest.from_file(APP, default_timeout=120)
    if runs_dir is not None:  # the sidebar's "Your runs folder", so a run outside the repository is listed
        at.session_state[keys.RUNS_DIR] = str(runs_dir)
    at.query_params[keys.RUN] = run
    at.query_params[keys.VIEW] = view
    started = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - started
    if at.exception:
        raise RuntimeError(f"{run} / {view}: {at.exception[0].value}")
    if any("The link asks for" in w.value for w in at.warning):  # not listed: the app fell back to another run
        raise RuntimeError(f"{run} / {view}: the app did not open this run")
    return seconds


LONG_RUN = ["--sequence", "mnist5k-long-50", "--method", "prm+", "--seed", "0", "--width", "64", "--epochs", "5",
            "--dtd-epochs", "3", "--head-epochs", "2", "--quiet"]


def long_run(folder: Path) -> Path:
    """Train the 50-task run the bench also times (a real engine run, small settings)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "prm", "run", *LONG_RUN, "--out", str(folder)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"))
    print(f"trained the 50-task run ({' '.join(LONG_RUN)}) in {time.perf_counter() - started:.0f} s")
    return folder


LIVE_FORM = {"tasks (0 = the sequence's default)": "4"}
"""The quick demo's fields beyond the Quick demo settings button: digits-mixed and prm are the defaults."""


def live_starts(repeats: int, *, warm: bool) -> list[tuple[float, float]]:
    """(Start to first epoch, Start to finished) in seconds of ``repeats`` quick-demo runs, in
    a real browser on a server of their own (warming on or off)."""
    from explorer.browser import browser_page, serve

    times = []
    with tempfile.TemporaryDirectory(prefix="prm-bench-live-") as runs, \
            serve(timeout=180, env={"PRM_EXPLORER_RUNS": runs, "PRM_EXPLORER_WARM": "1" if warm else "0"}) as url, \
            browser_page(width=1280, height=900) as page:
        page.set_default_timeout(180_000)
        for _ in range(repeats):
            page.goto(f"{url}/?view=Train+live")  # a fresh session: no earlier card on the page
            page.get_by_role("button", name="Quick demo settings").click()
            for label, value in LIVE_FORM.items():
                page.get_by_label(label, exact=True).fill(value)
            page.wait_for_timeout(10_000)
            started = time.perf_counter()
            page.get_by_role("button", name="Start").click()
            page.get_by_text(re.compile(r"task \d+ of 4 · .* epoch \d+")).first.wait_for()
            first = time.perf_counter() - started
            page.get_by_text("finished: 4 of 4 tasks learnt").first.wait_for()
            times.append((first, time.perf_counter() - started))
            print(f"  {'warm' if warm else 'cold'}: first epoch {first:.2f} s, finished {times[-1][1]:.2f} s", flush=True)
    return times


def live_bench(repeats: int) -> int:
    for warm in (False, True):
        times = live_starts(repeats, warm=warm)
        print(f"{'warm' if warm else 'cold'} (PRM_EXPLORER_WARM={int(warm)}), median of {repeats}: Start to first epoch "
              f"{statistics.median(t[0] for t in times):.2f} s, Start to finished "
              f"{statistics.median(t[1] for t in times):.2f} s", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(ROOT / "sample_runs"))
    parser.add_argument("--views", default=",".join(VIEWS))
    parser.add_argument("--goal", type=float, default=1.0)
    parser.add_argument("--long-run", help="a 50-task run folder to time too (default: train one)")
    parser.add_argument("--no-long", action="store_true", help="time the sample runs only")
    parser.add_argument("--live", type=int, metavar="N", help="time N quick-demo live runs, cold and warm, instead")
    args = parser.parse_args()
    if args.live:
        return live_bench(args.live)
    views = [v for v in args.views.split(",") if v]
    runs = sorted(p for p in Path(args.runs).iterdir() if (p / "run.json").exists())
    scratch = tempfile.TemporaryDirectory(prefix="prm-bench-")
    if args.long_run:
        runs.append(Path(args.long_run))
    elif not args.no_long:
        runs.append(long_run(Path(scratch.name) / "mnist5k-long-50-prm+-s0"))
    keys_of = [str(p.resolve().relative_to(ROOT)) if p.resolve().is_relative_to(ROOT) else str(p.resolve())
               for p in runs]
    folders = [None if p.resolve().is_relative_to(ROOT) else p.resolve().parent for p in runs]
    warm = time.perf_counter()
    render(keys_of[0], keys.OVERVIEW, folders[0])
    print(f"warm-up (imports, first script run): {time.perf_counter() - warm:.2f} s")
    # A server scans the installed packages for components once, at start-up; AppTest does it
    # again on every run (about 0.3 s here), which is not the app's render time: scan once.
    manifest_scanner.scan_component_manifests = functools.cache(manifest_scanner.scan_component_manifests)
    for name in list(logging.root.manager.loggerDict):  # AppTest outside a server warns about
        if name.startswith("streamlit"):                 # its missing context: harmless, noisy
            logging.getLogger(name).setLevel(logging.ERROR)
    width = max(len(p.name) for p in runs)
    print(f"{'run':<{width}}  " + "  ".join(f"{SHORT.get(v, v)[:10]:>10}" for v in views))
    worst = 0.0
    for path, key, folder in zip(runs, keys_of, folders):
        st.cache_data.clear()
        times = [render(key, v, folder) for v in views]
        worst = max(worst, *times)
        print(f"{path.name:<{width}}  " + "  ".join(f"{t:>10.2f}" for t in times), flush=True)
    print(f"slowest view: {worst:.2f} s (goal < {args.goal:.1f} s) -> {'OK' if worst < args.goal else 'TOO SLOW'}")
    return 0 if worst < args.goal else 1


if __name__ == "__main__":
    raise SystemExit(main())
