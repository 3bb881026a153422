"""Regenerate ``sample_runs/tuning/``: the 20-trial studies the Tuning view opens with.

    python scripts/make_tuning_sample.py                     # prm, hat, ncl, ewc; about 35 min on 1 core
    python scripts/make_tuning_sample.py --methods hat --out /tmp/tuning
    python scripts/make_tuning_sample.py --relocate          # rewrite absolute run folders (see relocate)

One ``prm tune`` per method on ``digits-mixed-few`` with seed 4 (the bundled runs' seed, so
a tuned run can sit beside the default ones in Compare), all in one SQLite storage. Every
trial keeps its metrics and accuracy matrix in the storage; of the run folders only each
study's best trial's is kept (0.5 MB each instead of 34 MB for all 80), so the Tuning view
opens the best trial and says "not on this machine" for the others. Each trial records its
folder relative to the storage file, so the sample opens its own folders in any clone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prm import tune  # noqa: E402


def generate(out: Path, *, methods: list[str], trials: int) -> None:
    url = f"sqlite:///{out / 'optuna.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for method in methods:
        subprocess.run([sys.executable, "-m", "prm", "tune", "--sequence", "digits-mixed-few", "--method", method,
                        "--seed", "4", "--trials", str(trials), "--storage", url, "--runs-dir", str(out)],
                       check=True, env=env, cwd=ROOT)
        study = tune.load_study(url, tune.default_study("digits-mixed-few", method))
        best = tune.run_folder(url, study.best).resolve()
        for folder in (out / study.name).iterdir():
            if folder.resolve() != best:
                shutil.rmtree(folder)


def relocate(db: Path) -> int:
    """Rewrite a storage made before trials recorded their folder relative to it: each
    trial's ``run_dir`` (the absolute path on the machine it was made on) becomes its
    ``run_dir_relative`` (the same folder relative to the storage file), which is then
    dropped, and the file is vacuumed so that no free page keeps the old path. Optuna cannot
    change a finished trial, hence SQL on its two columns, on a copy that replaces ``db`` only
    once every other value of every study reads the same; returns the number of trials rewritten."""
    work = db.with_name(db.name + ".relocating")
    shutil.copyfile(db, work)
    with closing(sqlite3.connect(work)) as con:
        with con:
            rows = con.execute("SELECT trial_id, value_json FROM trial_user_attributes "
                               "WHERE key = 'run_dir_relative' AND value_json != 'null'").fetchall()
            for trial_id, relative in rows:
                if tune.inside(json.loads(relative)) is None:
                    raise SystemExit(f"trial {trial_id}: {relative} is not a folder below the storage's")
                con.execute("UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = 'run_dir'",
                            (relative, trial_id))
            con.execute("DELETE FROM trial_user_attributes WHERE key = 'run_dir_relative'")
        con.execute("VACUUM")
    if _contents(work) != _contents(db):
        work.unlink()
        raise SystemExit(f"relocating would change more than the run folders: {db} left as it was")
    os.replace(work, db)
    return len(rows)


def _contents(db: Path) -> list:
    """Every study of the storage ``db`` as :func:`_without_folders` compares it."""
    url = f"sqlite:///{db.resolve()}"
    return [_without_folders(tune.load_study(url, name)) for name in tune.study_names(url)]


def _without_folders(study: tune.Study) -> tuple:
    """What a study holds besides its trials' folders, comparable with ``==`` (the accuracy
    matrices by their exact bytes, NaN included)."""
    trials = [(dataclasses.replace(t, run_dir=None, run_dir_relative=None, test_matrix=None),
               None if t.test_matrix is None else (t.test_matrix.shape, np.ascontiguousarray(t.test_matrix).tobytes()))
              for t in study.trials]
    return dataclasses.replace(study, trials=()), trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="prm,hat,ncl,ewc")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "sample_runs" / "tuning"))
    parser.add_argument("--relocate", action="store_true",
                        help="only rewrite OUT/optuna.db's absolute run folders as relative ones (no training)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    if args.relocate:
        print(f"{relocate(out / 'optuna.db')} trial(s) now record their folder relative to {out / 'optuna.db'}")
    else:
        generate(out, methods=args.methods.split(","), trials=args.trials)


if __name__ == "__main__":
    main()
