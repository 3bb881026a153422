"""Time the explorer's first full render of every view on every sample run (AppTest).

    python bench/app.py [--runs sample_runs] [--views Overview,Clustering]

For each run the Streamlit caches are cleared, then each view is opened in a fresh AppTest
session and its first full script run is timed, so the first view of a run also pays for
loading the run. One untimed warm-up render imports the libraries first. Goal: < 2 s per
view on the 2-core reference machine, with UMAP precomputed (stored in the run).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from explorer import state as keys  # noqa: E402

APP = str(ROOT / "explorer" / "app.py")
VIEWS = [v for v in keys.VIEWS if v != keys.LIVE] + [keys.LIVE]
SHORT = {keys.OVERVIEW: "overview", keys.ACCURACY: "accuracy", keys.EMBEDDINGS: "embeddings",
         keys.CLUSTERING: "clustering", keys.MASKS: "masks", keys.LIVE: "live", keys.COMPARE: "compare"}


def render(run: str, view: str) -> float:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params[keys.RUN] = run
    at.query_params[keys.VIEW] = view
    started = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - started
    if at.exception:
        raise RuntimeError(f"{run} / {view}: {at.exception[0].value}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(ROOT / "sample_runs"))
    parser.add_argument("--views", default=",".join(VIEWS))
    parser.add_argument("--goal", type=float, default=2.0)
    args = parser.parse_args()
    views = [v for v in args.views.split(",") if v]
    runs = sorted(p for p in Path(args.runs).iterdir() if (p / "run.json").exists())
    keys_of = [str(p.resolve().relative_to(ROOT)) if p.resolve().is_relative_to(ROOT) else str(p) for p in runs]
    warm = time.perf_counter()
    render(keys_of[0], keys.OVERVIEW)
    print(f"warm-up (imports, first script run): {time.perf_counter() - warm:.2f} s")
    for name in list(logging.root.manager.loggerDict):  # AppTest outside a server warns about
        if name.startswith("streamlit"):                 # its missing context: harmless, noisy
            logging.getLogger(name).setLevel(logging.ERROR)
    width = max(len(p.name) for p in runs)
    print(f"{'run':<{width}}  " + "  ".join(f"{SHORT.get(v, v)[:10]:>10}" for v in views))
    worst = 0.0
    for path, key in zip(runs, keys_of):
        st.cache_data.clear()
        times = [render(key, v) for v in views]
        worst = max(worst, *times)
        print(f"{path.name:<{width}}  " + "  ".join(f"{t:>10.2f}" for t in times), flush=True)
    print(f"slowest view: {worst:.2f} s (goal < {args.goal:.1f} s) -> {'OK' if worst < args.goal else 'TOO SLOW'}")
    return 0 if worst < args.goal else 1


if __name__ == "__main__":
    raise SystemExit(main())
