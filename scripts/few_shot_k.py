"""Choose the training images per class (k) of the few-shot and binary sequences without PRM.

For each k it trains STL (one network per task), NCL (one network fine-tuned task after
task, nothing protected) and ``joint`` (one network on all tasks' data at once, one head
per task) and prints their Acc over seeds. The default k is where joint is furthest above STL,
i.e. where the tasks have most to share that a task alone cannot learn (the rule that chose
the -few sequences' k); NCL - STL is printed beside it as a check that plain sequential
fine-tuning gains there too. No masked method is involved, so the choice cannot favour PRM.

    python scripts/few_shot_k.py --sequence digits-writers-binary --shots 3,5,10,15,20 --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prm.config import RunConfig  # noqa: E402

METHODS = ("stl", "ncl", "joint")


def _accs(job: tuple[str, str, int, tuple[int, ...]]) -> list[float]:
    """Acc of one method at one k for every seed, the seeds trained as one stack."""
    import torch

    from prm.engine import Job, train_together

    torch.set_num_threads(1)
    sequence, method, shots, seeds = job
    configs = [RunConfig(sequence=sequence, method=method, shots=shots, seed=s) for s in seeds]
    return [float(r.test_acc[-1].mean()) for r in train_together([Job(config=c) for c in configs])]


def _cell(values: np.ndarray) -> str:
    return f"{values.mean():.3f} ± {values.std():.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequence", default="digits-writers-binary")
    parser.add_argument("--shots", default="3,5,10,15,20")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    shots = [int(k) for k in args.shots.split(",")]
    seeds = tuple(int(s) for s in args.seeds.split(","))
    jobs = [(args.sequence, m, k, seeds) for k in shots for m in METHODS]
    with ProcessPoolExecutor(args.jobs) as pool:
        accs = {job[1:3]: np.array(a) for job, a in zip(jobs, pool.map(_accs, jobs))}
    print(f"{args.sequence}, seeds {list(seeds)}: Acc mean ± std over seeds")
    print("| k | STL | NCL | joint | NCL − STL | joint − STL |\n|---|---|---|---|---|---|")
    gain = {}
    for k in shots:
        stl, ncl, joint = (accs[(m, k)] for m in METHODS)
        gain[k] = (joint - stl).mean()
        print(f"| {k} | {_cell(stl)} | {_cell(ncl)} | {_cell(joint)} | {_cell(ncl - stl)} | {_cell(joint - stl)} |")
    print(f"k with the largest joint − STL: {max(gain, key=gain.get)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
