"""CAT (and any method) against PRM and HAT in time: the paper's Figure 3 and its "1/35 of CAT
after 20 tasks", measured.

    python bench/cat_time.py                 # mnist5k-long-20, seed 0: CAT, PRM and HAT (about 25 minutes on 2 cores)
    python bench/cat_time.py --quick         # digits-mixed, 6 tasks (about a minute)
    python bench/cat_time.py --methods cat,prm --sequence digits-mixed --seed 1
    python bench/cat_time.py --methods prm,hat,pathnet,supsup,hypernet,acl --sequence digits-mixed
                                             # the paper's other baselines (docs/baselines.md, about 15 minutes)

Each method learns the same sequence in this one process, one after the other, with eager
steps (``--compile off``: no method gets a compiled step the other lacks) and one thread.
Prints, per task, each method's seconds (CAT split into its transfer trainings, its reference
training and the rest), then:
  - CT (the run's total time) after 10 tasks and after all tasks, per method;
  - ``CAT/PRM CT at N tasks: X`` at 10 tasks and at the end, and every method's CT over PRM's
    and HAT's (``X/PRM CT``, ``X/HAT CT``) when those ran;
  - the growth of the time per task: the least-squares slope over tasks 2..T (seconds per
    task per task) and the mean time of the last third of tasks over the first third's.
The machine is noisy: read the ratios of one run, not absolute seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prm.config import preset  # noqa: E402
from prm.engine import train_sequence  # noqa: E402
from prm.events import TaskEnd, TransferTest  # noqa: E402
from prm.metrics import average_accuracy  # noqa: E402


def measure(method: str, *, sequence: str, seed: int, n_tasks: int | None) -> dict:
    """One run of ``method``: seconds per task by phase, CT, Acc, CAT's calls."""
    ends: list[TaskEnd] = []
    tests: list[TransferTest] = []

    def emit(event) -> None:
        if isinstance(event, TaskEnd):
            ends.append(event)
            print(f"  {method} task {event.task + 1}: {sum(event.seconds.values()):.1f} s", flush=True)
        elif isinstance(event, TransferTest):
            tests.append(event)

    config = preset("default", method=method, sequence=sequence, seed=seed, n_tasks=n_tasks,
                    record={"projections": [], "checkpoints": False})
    started = time.perf_counter()
    result = train_sequence(config, emit=emit, compile="off")
    wall = time.perf_counter() - started
    per_task = np.array([sum(e.seconds.values()) for e in ends])
    phase = {p: np.array([e.seconds.get(p, 0.0) for e in ends]) for p in ("transfer", "reference")}
    return {"per_task": per_task, "phase": phase, "ct": result.seconds, "wall": wall,
            "acc": average_accuracy(result.test_acc), "tests": tests}


def growth(per_task: np.ndarray) -> tuple[float, float]:
    """(least-squares slope of seconds per task over tasks 2..T, last third's mean / first third's)."""
    later = per_task[1:]
    slope = float(np.polyfit(np.arange(len(later)), later, 1)[0]) if len(later) >= 2 else float("nan")
    third = max(1, len(per_task) // 3)
    return slope, float(per_task[-third:].mean() / per_task[:third].mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="digits-mixed, 6 tasks, cat and prm")
    parser.add_argument("--sequence", default=None, help="[mnist5k-long-20; --quick: digits-mixed]")
    parser.add_argument("--n-tasks", type=int, default=None)
    parser.add_argument("--methods", default=None, help="comma-separated, cat and prm first [cat,prm,hat; --quick: cat,prm]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sequence = args.sequence or ("digits-mixed" if args.quick else "mnist5k-long-20")
    n_tasks = args.n_tasks if args.n_tasks is not None else (6 if args.quick else None)
    methods = (args.methods or ("cat,prm" if args.quick else "cat,prm,hat")).split(",")
    print(f"sequence {sequence}, {n_tasks or 'all'} tasks, seed {args.seed}, eager steps, 1 thread", flush=True)
    runs = {m: measure(m, sequence=sequence, seed=args.seed, n_tasks=n_tasks) for m in methods}
    T = len(next(iter(runs.values()))["per_task"])
    print("\nseconds per task (CAT: transfer + reference + the rest)")
    print("task " + "".join(f"{m:>22}" for m in methods))
    for t in range(T):
        cells = []
        for m in methods:
            r = runs[m]
            extra = (f" ({r['phase']['transfer'][t]:.1f}+{r['phase']['reference'][t]:.1f})"
                     if m == "cat" else "")
            cells.append(f"{r['per_task'][t]:.1f}{extra}".rjust(22))
        print(f"{t + 1:>4} " + "".join(cells))
    marks = [k for k in (10, T) if k <= T]
    for m in methods:
        r = runs[m]
        cts = ", ".join(f"CT@{k} {r['per_task'][:k].sum():.1f} s" for k in dict.fromkeys(marks))
        slope, ratio = growth(r["per_task"])
        print(f"{m}: {cts}; run CT {r['ct']:.1f} s; Acc {r['acc']:.3f}; time per task grows {slope:+.2f} s a task, "
              f"last third / first third {ratio:.2f}")
    for reference in ("prm", "hat"):
        if reference in runs:
            print(f"CT over {reference}'s: " + ", ".join(
                f"{m} {runs[m]['per_task'].sum() / runs[reference]['per_task'].sum():.2f}" for m in methods if m != reference))
    if "cat" in runs and "prm" in runs:
        for k in dict.fromkeys(marks):
            ratio = runs["cat"]["per_task"][:k].sum() / runs["prm"]["per_task"][:k].sum()
            print(f"CAT/PRM CT at {k} tasks: {ratio:.2f}")
        cat = runs["cat"]
        share = (cat["phase"]["transfer"].sum() + cat["phase"]["reference"].sum()) / cat["per_task"].sum()
        print(f"CAT's transfer and reference trainings: {share:.0%} of its CT")
        similar = sum(len(t.similar) for t in cat["tests"])
        pairs = sum(t.task for t in cat["tests"])
        print(f"CAT called {similar} of {pairs} (task, earlier task) pairs similar")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
