"""Regenerate ``sample_runs/``: the finished runs the explorer opens with.

    python scripts/make_sample_runs.py            # all sequences, default methods, seed 0
    python scripts/make_sample_runs.py --out /tmp/samples --sequences digits-mixed

The story first: ``digits-mixed-few`` (two training images per writer and digit, full digit
pairs), where sharing between writers can pay, with PRM+, PRM, PRM(T), HAT, CAT, NCL, STL and joint
of the same seed side by side; the app opens on its PRM+ run. Its seed is 4, the one of the
README's five seeds (0-4) where PRM+ gained most over HAT (0.976 against 0.957; over all five
the gain is within the seed spread, see the README). Then the full sequences, seed 0: PRM,
HAT, CAT, NCL, PRM(S), PRM(D) and STL on ``digits-mixed``, and PRM, HAT and STL on
``digits-classes``, ``digits-writers`` and the 28x28 ``mnist5k-mixed`` (which records its
measured oracle transfer). Default configuration (``prm.config.preset``, so PRM+ gets its
levers).
Only the run the app opens on keeps its what-if checkpoints (3.8 MB; ``record.checkpoints``,
docs/whatif.md), so the Clustering view's "what if" can be trained from it; the others record
none, to keep the repository small.
Runs are deterministic for a seed on one machine, so the committed folders can be checked
against a fresh regeneration (timings aside).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prm.config import RunConfig, preset  # noqa: E402
from prm.engine import train_sequence  # noqa: E402
from prm.runs import RunWriter  # noqa: E402

SAMPLES = {  # sequence -> (seed, methods); a few MB in all
    "digits-mixed-few": (4, ("prm+", "prm", "prm-t", "hat", "cat", "ncl", "stl", "joint")),
    "digits-mixed": (0, ("prm", "hat", "cat", "ncl", "prm-s", "prm-d", "stl")),
    "digits-classes": (0, ("prm", "hat", "stl")),
    "digits-writers": (0, ("prm", "hat", "stl")),
    "mnist5k-mixed": (0, ("prm", "hat", "stl")),
}
CHECKPOINTED = {("digits-mixed-few", "prm+")}
"""(sequence, method) of the samples that keep what-if checkpoints: the app's default run."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "sample_runs"))
    parser.add_argument("--sequences", default=",".join(SAMPLES), help="comma-separated [%(default)s]")
    parser.add_argument("--methods", default=None, help="comma-separated [each sequence's own list]")
    parser.add_argument("--seed", type=int, default=None, help="[each sequence's own seed]")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for sequence in args.sequences.split(","):
        own_seed, own_methods = SAMPLES.get(sequence, (0, ("prm", "hat", "stl")))
        seed = own_seed if args.seed is None else args.seed
        for method in args.methods.split(",") if args.methods else own_methods:
            folder = out / f"{sequence}-{method}-s{seed}"
            if folder.exists():
                shutil.rmtree(folder)
            cfg = preset("default", sequence=sequence, method=method, seed=seed,
                         record={**RunConfig().to_dict()["record"],
                                 "checkpoints": (sequence, method) in CHECKPOINTED})
            started = time.perf_counter()
            result = train_sequence(cfg, emit=RunWriter(folder, config=cfg))
            acc = result.test_acc[-1].mean()
            print(f"{folder.name:<28} Acc {acc:.3f}  CT {result.seconds:5.1f} s  "
                  f"(with projections {time.perf_counter() - started:5.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
