"""Which small settings may the Train-live form suggest? (chooses its "Quick demo settings")

    OMP_NUM_THREADS=1 python scripts/live_settings.py   # ~6 min alone on one core (17 on a busy 2-core box)

Trains each candidate setting exactly as the Train-live form would (``explorer.live.LiveOptions``,
i.e. ``python -m prm run`` in a child process, one at a time, no UMAP) on the form's default
sequence and on its few-shot variant, for HAT and PRM and two seeds, and prints one line per
setting, sequence and method: Acc (mean over the seeds), the lowest final accuracy of any task
(over the seeds), the mean training time (the run's own CT) and the mean wall time of the whole
child process (start-up included), and Acc against the engine's defaults.

Why 20 epochs at width 64 fell short: a 10-way writer task holds ~130 training images, 8 batches
an epoch. The patience schedule keeps lr at 0.1 for the first 30-60 epochs, and at that rate a
writer task needs about 40 epochs (300 SGD steps) before its validation accuracy settles; 20
epochs stop it halfway (0.48-0.80 per writer task at width 256). Width 64 fails on its own as well:
HAT's sparsity regulariser is normalised by the free capacity, so it prices the *fraction* of units
a task takes, whatever the width; a first writer task kept 4 of 64 units (2 in layer 2) and stayed
near chance even after 200 epochs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.live import LiveOptions  # noqa: E402
from explorer.views.live import QUICK_DEMO  # noqa: E402
from prm.run import load_run  # noqa: E402

CANDIDATES: dict[str, dict[str, int]] = {
    "defaults": {},  # the reference: the engine's own settings (prm/config.py)
    "old help: width 64 / 20 epochs": {"width": 64, "epochs": 20, "dtd_epochs": 20},
    "40 epochs": {"epochs": 40, "dtd_epochs": 20},
    "quick demo": QUICK_DEMO,
}
"""Form values each setting changes (the rest are the form's defaults, the engine's)."""


def train(options: LiveOptions, out: Path) -> tuple[float, float, float, float]:
    """Acc, lowest final task accuracy, CT and wall seconds of one run trained by the CLI."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    started = time.perf_counter()
    subprocess.run(options.command(out), check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    run = load_run(out)
    final = run.state.accuracy_matrix("test")[-1]
    return run.summary["acc"], float(np.min(final)), run.summary["seconds"], wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sequences", default="digits-mixed,digits-mixed-few")
    p.add_argument("--methods", default="hat,prm", help="e.g. hat,prm,prm+")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--settings", default=",".join(CANDIDATES), help="a subset of: " + ", ".join(CANDIDATES))
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"seeds {args.seeds}; Acc: mean over seeds; min task: lowest final task accuracy; "
          "CT: training seconds per run; wall: whole child process")
    print(f"{'setting':32} {'sequence':17} {'method':6} {'Acc':>6} {'vs defaults':>11} {'min task':>8} "
          f"{'CT s':>6} {'wall s':>6}")
    reference: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.settings.split(","):
            for sequence in args.sequences.split(","):
                for method in args.methods.split(","):
                    rows = [train(LiveOptions(sequence=sequence, method=method, seed=seed, umap=False,
                                              **CANDIDATES[name]),
                                  Path(tmp) / f"{len(os.listdir(tmp))}") for seed in seeds]
                    acc, low, ct, wall = np.array(rows).T
                    if name == "defaults":
                        reference[(sequence, method)] = float(acc.mean())
                    base = reference.get((sequence, method))
                    delta = "" if base is None else f"{acc.mean() - base:+.3f}"
                    print(f"{name:32} {sequence:17} {method:6} {acc.mean():6.3f} {delta:>11} {low.min():8.2f} "
                          f"{ct.mean():6.1f} {wall.mean():6.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
