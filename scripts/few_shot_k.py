"""Choose the training images per class (k) of the few-shot sequences without PRM.

For each k it trains STL (one network per task) and ``joint`` (one network on all tasks'
data at once, one head per task) on a few-shot sequence and prints their Acc: the default
k is where joint is furthest above STL, i.e. where the tasks have most to share that a
task alone cannot learn. No masked method is involved, so the choice cannot favour PRM.

    python scripts/few_shot_k.py --sequence digits-writers-few --shots 2,3,5,8 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prm.config import RunConfig  # noqa: E402


def _acc(job: tuple[str, str, int, int]) -> float:
    import torch

    from prm.engine import train_sequence

    torch.set_num_threads(1)
    sequence, method, shots, seed = job
    result = train_sequence(RunConfig(sequence=sequence, method=method, shots=shots, seed=seed))
    return float(result.test_acc[-1].mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequence", default="digits-writers-few")
    parser.add_argument("--shots", default="2,3,5,8")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    shots = [int(k) for k in args.shots.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(args.sequence, m, k, s) for k in shots for m in ("stl", "joint") for s in seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        accs = dict(zip(jobs, pool.map(_acc, jobs)))
    print(f"{args.sequence}, seeds {seeds}: Acc mean ± std over seeds")
    print("| k | STL | joint | joint - STL |\n|---|---|---|---|")
    for k in shots:
        stl = np.array([accs[(args.sequence, "stl", k, s)] for s in seeds])
        joint = np.array([accs[(args.sequence, "joint", k, s)] for s in seeds])
        gain = joint - stl
        print(f"| {k} | {stl.mean():.3f} ± {stl.std():.3f} | {joint.mean():.3f} ± {joint.std():.3f} | "
              f"{gain.mean():+.3f} ± {gain.std():.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
