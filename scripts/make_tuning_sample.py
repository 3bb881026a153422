"""Regenerate ``sample_runs/tuning/``: the 20-trial studies the Tuning view opens with.

    python scripts/make_tuning_sample.py                     # prm, hat, ncl, ewc; about 35 min on 1 core
    python scripts/make_tuning_sample.py --methods hat --out /tmp/tuning

One ``prm tune`` per method on ``digits-mixed-few`` with seed 4 (the bundled runs' seed, so
a tuned run can sit beside the default ones in Compare), all in one SQLite storage. Every
trial keeps its metrics and accuracy matrix in the storage; of the run folders only each
study's best trial's is kept (0.5 MB each instead of 34 MB for all 80), so the Tuning view
opens the best trial and says "not on this machine" for the others.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prm import tune  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="prm,hat,ncl,ewc")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "sample_runs" / "tuning"))
    args = parser.parse_args()
    out = Path(args.out).resolve()
    url = f"sqlite:///{out / 'optuna.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for method in args.methods.split(","):
        subprocess.run([sys.executable, "-m", "prm", "tune", "--sequence", "digits-mixed-few", "--method", method,
                        "--seed", "4", "--trials", str(args.trials), "--storage", url, "--runs-dir", str(out)],
                       check=True, env=env, cwd=ROOT)
        study = tune.load_study(url, tune.default_study("digits-mixed-few", method))
        best = tune.run_folder(url, study.best).resolve()
        for folder in (out / study.name).iterdir():
            if folder.resolve() != best:
                shutil.rmtree(folder)


if __name__ == "__main__":
    main()
