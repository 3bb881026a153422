"""Engine benchmark: every speed figure the README quotes comes from one run of this script.

    python bench/engine.py            # about 10 minutes on 2 cores
    python bench/engine.py --quick    # fewer repeats and seeds (a smoke check, ~1 minute)

Prints, in one process, so ratios compare like with like:
  1. time per training step of the HAT-masked MLP (protecting an earlier task) against the
     same MLP without masks, per width (goal: ratio <= 1.3 at the default width);
  2. achieved GFLOP/s of that step against plain torch.mm on the same shapes;
  3. PRM's total time over HAT's on digits-mixed, default settings (goal <= 1.5; the
     paper reports 0.7-0.8), and the default PRM run's wall time (goal < 60 s);
  4. a 50-task sequence: time per task (flat: the last 10 tasks against the first 10, goal
     <= 1.2), X-means time per DTD, run-folder size (goal < 50 MB) and peak memory;
  5. X-means time for 50 points in 2000 dimensions;
  6. HAT accuracy on digits-mixed per width, the evidence behind the default width.
Timings are medians of repeats; the machine is noisy, so read ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prm.config import ModelConfig, RecordConfig, RunConfig  # noqa: E402
from prm.engine import Step, train_sequence  # noqa: E402
from prm.events import DTDResult, RunStarted, TaskEnd  # noqa: E402
from prm.runs import RunWriter  # noqa: E402
from prm.model import MaskedMLP  # noqa: E402
from prm.xmeans import xmeans  # noqa: E402

BATCH, INPUT, CLASSES = RunConfig().optim.batch_size, 64, 10


def _median_time(fn, repeats: int, inner: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def step_timing(width: int, repeats: int) -> tuple[float, float, float]:
    """Seconds per step: masked (HAT, protecting task 0's mask) and unmasked; and torch.mm."""
    torch.manual_seed(0)
    x, y = torch.rand(BATCH, INPUT), torch.randint(0, CLASSES, (BATCH,))
    times = {}
    for masked in (True, False):
        model = MaskedMLP(input_dim=INPUT, hidden=(width, width), head_sizes=[CLASSES, CLASSES],
                          input_dropout=0.2, hidden_dropout=0.5, masked=masked)
        protect = [m.detach() for m in model.masks(0, 400.0)] if masked else None
        step = Step(model=model, task=1, hat=RunConfig().hat, clip=10000.0, protect=protect, reg_used=protect)
        model.train()
        times[masked] = _median_time(lambda: step(0.01, x, y, 200.0), repeats, 50)
    # the same matrix products as forward + backward: per layer y = x W^T, dW = g^T x, dx = g W
    shapes = [(BATCH, INPUT, width), (BATCH, width, width), (BATCH, width, CLASSES)]
    mats = [(torch.rand(b, i), torch.rand(o, i), torch.rand(b, o)) for b, i, o in shapes]

    def products() -> None:
        for a, w, g in mats:
            torch.mm(a, w.t())
            torch.mm(g.t(), a)
            torch.mm(g, w)

    mm = _median_time(products, repeats, 50)
    return times[True], times[False], mm


def step_flops(width: int) -> float:
    shapes = [(INPUT, width), (width, width), (width, CLASSES)]
    return sum(3 * 2 * BATCH * i * o for i, o in shapes)


def timed_run(cfg: RunConfig) -> tuple[float, float]:
    """Total seconds and final Acc of one run."""
    result = train_sequence(cfg)
    return result.seconds, float(np.mean(result.test_acc[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # as train_sequence does
    repeats = 3 if args.quick else 7
    seeds = [0] if args.quick else [0, 1, 2]
    default_width = RunConfig().model.hidden[0]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {BATCH}, default width {default_width}")

    print("\n1-2. training step: HAT-masked MLP vs the same MLP unmasked; GFLOP/s vs torch.mm")
    print(f"{'width':>6} {'masked ms':>10} {'plain ms':>9} {'ratio':>6} {'GFLOP/s':>8} {'mm GFLOP/s':>11} {'of mm':>6}")
    for width in (64, 128, 256, 512, 1024, 2000):
        masked, plain, mm = step_timing(width, repeats)
        flops = step_flops(width)
        print(f"{width:>6} {masked * 1e3:>10.3f} {plain * 1e3:>9.3f} {masked / plain:>6.2f} "
              f"{flops / masked / 1e9:>8.2f} {flops / mm / 1e9:>11.2f} {mm / masked:>6.1%}", flush=True)

    print("\n3. PRM vs HAT on digits-mixed (default config), per seed")
    ratios, prm_times = [], []
    for seed in seeds:
        hat_s, hat_acc = timed_run(RunConfig(method="hat", seed=seed))
        prm_s, prm_acc = timed_run(RunConfig(method="prm", seed=seed))
        ratios.append(prm_s / hat_s)
        prm_times.append(prm_s)
        print(f"  seed {seed}: HAT {hat_s:5.1f} s (Acc {hat_acc:.3f})   PRM {prm_s:5.1f} s (Acc {prm_acc:.3f})   "
              f"PRM/HAT {prm_s / hat_s:.2f}", flush=True)
    print(f"  PRM/HAT total time: mean {np.mean(ratios):.2f} (goal <= 1.5); default PRM run: "
          f"slowest {max(prm_times):.1f} s (goal < 60 s)")

    print("\n4. a 50-task sequence: mnist5k-long-50, PRM, recorded to a run folder")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(sequence="mnist5k-long-50", method="prm", seed=0, record=RecordConfig(projections=("pca",)))
        events: list = []
        writer = RunWriter(Path(tmp) / "long", config=cfg)

        def emit(event) -> None:
            writer(event)
            events.append(event)

        result = train_sequence(cfg, emit=emit)
        size = sum(f.stat().st_size for f in (Path(tmp) / "long").rglob("*") if f.is_file())
    ends = [e for e in events if isinstance(e, TaskEnd)]
    tasks = next(e for e in events if isinstance(e, RunStarted)).tasks
    per_task = np.array([sum(e.seconds.values()) for e in ends])
    # Tasks differ in size (digit pairs: 600 images; style tasks: ~120) and in the epochs early
    # stopping gives them, so flatness is judged per SGD step: all of a task's time (DTD,
    # clustering, training, evaluation of every earlier task) over the batches it trained.
    steps = np.array([sum(e.epochs.values()) * -(-t["sizes"]["train"] // cfg.optim.batch_size)
                      for e, t in zip(ends, tasks)])
    per_step = per_task / steps * 1e3
    xm = [e.seconds for e in events if isinstance(e, DTDResult)]
    print(f"  total {result.seconds:.0f} s, Acc {np.mean(result.test_acc[-1]):.3f}")
    print("  seconds per task: " + " ".join(f"{v:.1f}" for v in per_task))
    print("  ms per SGD step:  " + " ".join(f"{v:.2f}" for v in per_step))
    print(f"  last 10 tasks / first 10: {per_step[-10:].mean() / per_step[:10].mean():.2f} per step (goal <= 1.2), "
          f"{per_task[-10:].mean() / per_task[:10].mean():.2f} per task")
    print(f"  X-means per DTD (both layers): first {xm[0] * 1e3:.0f} ms, at 50 tasks {xm[-1] * 1e3:.0f} ms")
    print(f"  run folder {size / 2**20:.1f} MB (goal < 50 MB); peak memory of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MB")

    print("\n5. X-means on 50 points in 2000 dimensions (two blobs; median of repeats)")
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(3, 1, (25, 2000)), rng.normal(-3, 1, (25, 2000))])
    seconds = _median_time(lambda: xmeans(points, seed=0), repeats, 1)
    print(f"  {seconds * 1e3:.1f} ms, k = {xmeans(points, seed=0).k}")

    print("\n6. HAT on digits-mixed by width (seed 0): Acc and total time")
    for width in (64, 128, 256, 512):
        s, acc = timed_run(RunConfig(method="hat", model=ModelConfig(hidden=(width, width))))
        print(f"  width {width:>4}: Acc {acc:.3f}  CT {s:5.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
