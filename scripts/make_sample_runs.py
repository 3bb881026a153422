"""Regenerate ``sample_runs/``: the finished runs the explorer opens with.

    python scripts/make_sample_runs.py            # all sequences, default methods, seed 0
    python scripts/make_sample_runs.py --out /tmp/samples --sequences digits-mixed

PRM, HAT, NCL, PRM(S), PRM(D) and STL (the FWT reference) on the bundled digits sequences,
and PRM, HAT and STL on the 28x28 mnist5k-mixed (which records its measured oracle transfer),
seed 0, with the default configuration: 21 runs, 7.6 MB. Runs are deterministic for a seed on one machine, so the
committed folders can be checked against a fresh regeneration (timings aside).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prm.config import RunConfig  # noqa: E402
from prm.engine import train_sequence  # noqa: E402
from prm.runs import RunWriter  # noqa: E402

METHODS = ("prm", "hat", "ncl", "prm-s", "prm-d", "stl")
SEQUENCES = ("digits-classes", "digits-writers", "digits-mixed", "mnist5k-mixed")
REDUCED = {"mnist5k-mixed": ("prm", "hat", "stl")}  # keeps the folder at a few MB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "sample_runs"))
    parser.add_argument("--sequences", default=",".join(SEQUENCES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for sequence in args.sequences.split(","):
        for method in args.methods.split(","):
            if sequence in REDUCED and method not in REDUCED[sequence]:
                continue
            folder = out / f"{sequence}-{method}-s{args.seed}"
            if folder.exists():
                shutil.rmtree(folder)
            cfg = RunConfig(sequence=sequence, method=method, seed=args.seed)
            started = time.perf_counter()
            result = train_sequence(cfg, emit=RunWriter(folder, config=cfg))
            acc = result.test_acc[-1].mean()
            print(f"{folder.name:<28} Acc {acc:.3f}  CT {result.seconds:5.1f} s  "
                  f"(with projections {time.perf_counter() - started:5.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
