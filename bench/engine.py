"""Engine benchmark: every speed figure the README and docs/speed.md quote comes from one run.

    python bench/engine.py            # about 15 minutes on 2 cores
    python bench/engine.py --quick    # the same lines on a subset (under 2 minutes)

"Today's" figures come from the engine as it was before the compiled step (git revision
``--baseline``, default b8348ae), unpacked from this repository's history into a temporary
folder and timed in the same run, so ratios compare like with like on one machine. Without
git history those lines say so and are skipped.

Prints, in one process (and its children):
  1. the training step at each width: masked (HAT, an earlier task protected) and unmasked,
     eager and compiled, and ``masked/plain step ratio: X`` in each mode (goal <= 1.2);
  2. compiled masked step / today's eager masked step (goal <= 0.35);
  3. the per-run step of 8 runs stacked in one compiled step / today's eager step (goal <= 0.25);
  4. PRM / HAT total time on digits-mixed, with DTD's fixed budget and with the settling DTD
     (goal <= 1.0), and DTD's calls right in each (the settling DTD's not below the fixed one's);
  5. wall time / CT of a default CLI run (goal <= 1.2), twice: the first may compile UMAP;
  6. a 3-seed ``compare`` of prm, hat, stl on digits-mixed, today's against now (goal >= 2x);
  7. (full only) HAT on mnist5k-mixed eager and compiled: the evidence behind ``--compile auto``;
  8. (full only) a 50-task sequence: time per step, X-means per DTD, folder size, memory.
Timings are medians of repeats; the machine is noisy, so read ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prm import masks as M  # noqa: E402
from prm import step as S  # noqa: E402
from prm.analysis import calls_right, true_groups  # noqa: E402
from prm.config import PRMConfig, RecordConfig, RunConfig  # noqa: E402
from prm.engine import train_sequence  # noqa: E402
from prm.events import DTDResult, RunStarted, TaskEnd  # noqa: E402
from prm.run import RunWriter  # noqa: E402
from prm.xmeans import xmeans  # noqa: E402

BATCH, INPUT, CLASSES = RunConfig().optim.batch_size, 64, 10
SETTLE = PRMConfig(settle=2, settle_every=5)
"""The settling DTD measured: ask every 5 epochs, stop once the answer held for two checks."""


def _median_time(fn, repeats: int, inner: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def step_inputs(width: int, runs: int, *, masked: bool) -> dict:
    """A HAT step's inputs at ``width`` for ``runs`` stacked runs: task 1 with task 0 protected."""
    gen = torch.Generator().manual_seed(0)

    def r(*shape):
        return (torch.rand(runs, *shape, generator=gen) - 0.5) * 0.2

    sizes = [INPUT, width, width]
    protect = [torch.sigmoid(400 * torch.randn(w, generator=gen)) for w in (width, width)]
    keeps = [(k.expand(runs, *k.shape).clone(), b.expand(runs, *b.shape).clone()) for k, b in M.layer_keeps(protect)]
    weights, norm = M.regulariser_weights(protect, (width, width))
    one = torch.ones(runs)
    return {
        "layers": [(r(o, i), r(o)) for i, o in zip(sizes[:-1], sizes[1:])], "head": (r(CLASSES, width), r(CLASSES)),
        "embedding": torch.randn(runs, 2 * width, generator=gen) if masked else None,
        "x": torch.rand(runs, BATCH, INPUT, generator=gen), "y": torch.randint(0, CLASSES, (runs, BATCH), generator=gen),
        "weight": torch.full((runs, BATCH), 1.0 / BATCH), "noise": torch.rand(runs, BATCH, INPUT + 2 * width),
        "rates": torch.cat([torch.full((INPUT,), 0.2), torch.full((2 * width,), 0.5)]).expand(runs, -1).clone(),
        "s": one * 200.0, "lr": one * 0.01, "keeps": keeps if masked else None,
        "reg_weights": weights.expand(runs, -1).clone() if masked else None, "reg_norm": norm.expand(runs) if masked
        else None,
        "hyper": S.Hyper(smax=one * 400.0, lamb=one * 0.75, thres_cosh=one * 50.0, thres_emb=one * 6.0, clip=one * 1e4),
    }


def step_seconds(width: int, repeats: int, *, masked: bool, compiled: bool, runs: int = 1) -> float:
    """Seconds per call of the step (all ``runs`` together), as the engine calls it."""
    inputs = step_inputs(width, runs, masked=masked)
    fn = S.compiled() if compiled else S.sgd_step

    def call() -> None:
        with torch.no_grad():
            fn(**inputs)

    call()  # compile (or warm up) outside the timing
    return _median_time(call, repeats, max(5, 50 // runs))


def baseline_tree(rev: str, into: Path) -> Path | None:
    """The project as it was at ``rev``, unpacked from git history; None when unavailable."""
    target = into / f"baseline-{rev}"
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
        target.mkdir()
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"  (baseline {rev} unavailable: {exc}; today's lines skipped)")
        return None
    return target


def baseline_step(tree: Path, width: int, repeats: int) -> tuple[float, float]:
    """Today's eager (masked, plain) seconds per step, timed by that revision's own bench."""
    code = ("import sys, json, torch; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/bench']; torch.set_num_threads(1); "
            "torch.set_flush_denormal(True); import engine; "
            "print(json.dumps(engine.step_timing(int(sys.argv[2]), int(sys.argv[3]))[:2]))")
    out = subprocess.run([sys.executable, "-c", code, str(tree), str(width), str(repeats)], check=True,
                         capture_output=True, text=True, cwd=tree).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


def timed_run(cfg: RunConfig, **kwargs) -> tuple[float, float, list[float]]:
    """Total seconds, final Acc and DTD's calls right per task of one run (default compile mode)."""
    events: list = []
    result = train_sequence(cfg, emit=events.append, **kwargs)
    started = next(e for e in events if isinstance(e, RunStarted))
    groups = true_groups(started.tasks)
    right = [calls_right(groups=groups, task=e.task, dissimilar=e.layers[-1]["dissimilar_xmeans"])
             for e in events if isinstance(e, DTDResult)]
    return result.seconds, float(np.mean(result.test_acc[-1])), right


def cli_run(tree: Path, out: Path, extra: list[str]) -> tuple[float, float]:
    """(wall seconds, CT) of ``python -m prm run`` in ``tree`` (a fresh process, as a user runs it)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "prm", "run", "--out", str(out), "--quiet", *extra], check=True, cwd=tree,
                   capture_output=True)
    wall = time.perf_counter() - start
    end = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()][-1]
    return wall, end["seconds"]


def compare_seconds(tree: Path, seeds: list[int], n_tasks: int | None) -> float:
    """Wall seconds of ``python -m prm compare`` in ``tree`` (tables only: no folders, no UMAP)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "prm", "compare", "--sequence", "digits-mixed", "--methods", "prm,hat,stl",
                    "--seeds", ",".join(map(str, seeds)), "--quiet", *_tasks_option(n_tasks)], check=True, cwd=tree,
                   capture_output=True)
    return time.perf_counter() - start


def _tasks_option(n_tasks: int | None) -> list[str]:
    return [] if n_tasks is None else ["--n-tasks", str(n_tasks)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline", default="b8348ae", help="git revision of 'today' [%(default)s]")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # as train_sequence does
    repeats = 3 if args.quick else 7
    seeds = [0] if args.quick else [0, 1, 2]
    n_tasks = 4 if args.quick else None  # --quick: the first 4 tasks of digits-mixed
    tasks_note = "" if n_tasks is None else f", first {n_tasks} tasks"
    default_width = RunConfig().model.hidden[0]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {BATCH}, default width "
          f"{default_width}, compiler {'found' if S.compiler_available() else 'missing'}")
    tmp = Path(tempfile.mkdtemp(prefix="prm-bench-"))
    tree = baseline_tree(args.baseline, tmp)

    print("\n1. training step (ms): masked vs unmasked, eager vs compiled (first compile: see below)")
    start = time.perf_counter()
    step_seconds(default_width, 1, masked=True, compiled=True)
    print(f"  first compile in this process: {time.perf_counter() - start:.1f} s "
          f"(cache {os.environ.get('TORCHINDUCTOR_CACHE_DIR')})")
    widths = (default_width,) if args.quick else (64, 256, 1024)
    print(f"  {'width':>6} {'eager masked':>13} {'eager plain':>12} {'compiled masked':>16} {'compiled plain':>15}")
    found = {}
    for width in widths:
        found[width] = {(m, c): step_seconds(width, repeats, masked=m, compiled=c)
                        for m in (True, False) for c in (False, True)}
        t = found[width]
        print(f"  {width:>6} {t[True, False] * 1e3:>13.3f} {t[False, False] * 1e3:>12.3f} "
              f"{t[True, True] * 1e3:>16.3f} {t[False, True] * 1e3:>15.3f}", flush=True)
    t = found[default_width]
    print(f"masked/plain step ratio: {t[True, True] / t[False, True]:.2f} (compiled, width {default_width}; "
          f"goal <= 1.2)")
    print(f"masked/plain step ratio: {t[True, False] / t[False, False]:.2f} (eager, width {default_width})")

    today = baseline_step(tree, default_width, repeats) if tree else None
    print("\n2. compiled masked step against today's eager masked step")
    if today:
        print(f"  today's eager: masked {today[0] * 1e3:.3f} ms, plain {today[1] * 1e3:.3f} ms "
              f"(ratio {today[0] / today[1]:.2f}); eager now {t[True, False] * 1e3:.3f} ms")
        print(f"compiled/today's eager masked step: {t[True, True] / today[0]:.2f} (goal <= 0.35)")

    print("\n3. runs stacked in one compiled step (per run)")
    for runs in (1, 8) if args.quick else (1, 4, 8, 16):
        per_run = step_seconds(default_width, repeats, masked=True, compiled=True, runs=runs) / runs
        line = f"  {runs:>2} runs: {per_run * 1e3:.3f} ms per run"
        if runs == 8 and today:
            line += f"\nstacked-8 per-run step/today's eager masked step: {per_run / today[0]:.2f} (goal <= 0.25)"
        print(line, flush=True)

    print(f"\n4. PRM / HAT on digits-mixed{tasks_note}: DTD's fixed budget against the settling DTD "
          f"(settle {SETTLE.settle}, every {SETTLE.settle_every} epochs)")
    rows = []
    for seed in seeds:
        hat = timed_run(RunConfig(method="hat", seed=seed, n_tasks=n_tasks))
        fixed = timed_run(RunConfig(method="prm", seed=seed, n_tasks=n_tasks))
        settle = timed_run(RunConfig(method="prm", seed=seed, n_tasks=n_tasks, prm=SETTLE))
        rows.append((hat[0], fixed[0], settle[0], np.mean(fixed[2]), np.mean(settle[2])))
        print(f"  seed {seed}: HAT {hat[0]:5.1f} s (Acc {hat[1]:.3f}); PRM fixed {fixed[0]:5.1f} s (Acc {fixed[1]:.3f}, "
              f"calls right {np.mean(fixed[2]):.3f}); PRM settling {settle[0]:5.1f} s (Acc {settle[1]:.3f}, "
              f"calls right {np.mean(settle[2]):.3f})", flush=True)
    hat_s, fixed_s, settle_s, fixed_right, settle_right = (np.array(c) for c in zip(*rows))
    print(f"PRM/HAT total time, fixed DTD: {np.mean(fixed_s / hat_s):.2f}")
    print(f"PRM/HAT total time, settling DTD: {np.mean(settle_s / hat_s):.2f} (goal <= 1.0); calls right "
          f"{np.mean(settle_right):.3f} against the fixed budget's {np.mean(fixed_right):.3f}")

    print(f"\n5. wall time of a default CLI run (python -m prm run, digits-mixed{tasks_note}, prm) against its CT")
    for attempt in (1, 2):
        wall, ct = cli_run(ROOT, tmp / f"cli-{attempt}", ["--sequence", "digits-mixed", "--method", "prm",
                                                          *_tasks_option(n_tasks)])
        print(f"  run {attempt}: wall {wall:.1f} s, CT {ct:.1f} s")
    print(f"wall/CT of a default CLI run: {wall / ct:.2f} (goal <= 1.2; run 2, caches warm)")

    print(f"\n6. compare of prm, hat, stl on digits-mixed{tasks_note}, seeds " + ",".join(map(str, seeds)))
    now = compare_seconds(ROOT, seeds, n_tasks)
    print(f"  now {now:.1f} s", flush=True)
    if tree:
        before = compare_seconds(tree, seeds, n_tasks)
        print(f"  today's {before:.1f} s")
        print(f"compare speed-up against today's: {before / now:.2f}x (goal >= 2)")

    if not args.quick:
        print("\n7. the auto rule's evidence: HAT on mnist5k-mixed (seed 0), eager against compiled")
        for mode in ("off", "on"):
            seconds, acc, _ = timed_run(RunConfig(sequence="mnist5k-mixed", method="hat"), compile=mode)
            print(f"  compile {mode:>3}: CT {seconds:5.1f} s, Acc {acc:.3f}", flush=True)
        long_sequence()
        print("\n9. X-means on 50 points in 2000 dimensions (two blobs; median of repeats)")
        rng = np.random.default_rng(0)
        points = np.concatenate([rng.normal(3, 1, (25, 2000)), rng.normal(-3, 1, (25, 2000))])
        seconds = _median_time(lambda: xmeans(points, seed=0), repeats, 1)
        print(f"  {seconds * 1e3:.1f} ms, k = {xmeans(points, seed=0).k}")
    return 0


def long_sequence() -> None:
    print("\n8. a 50-task sequence: mnist5k-long-50, PRM, recorded to a run folder")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(sequence="mnist5k-long-50", method="prm", seed=0, record=RecordConfig(projections=("pca",)))
        events: list = []
        writer = RunWriter(Path(tmp) / "long", config=cfg)

        def emit(event) -> None:
            writer(event)
            events.append(event)

        result = train_sequence(cfg, emit=emit)
        files = [f for f in (Path(tmp) / "long").rglob("*") if f.is_file()]
        size = sum(f.stat().st_size for f in files)
        checkpoints = sum(f.stat().st_size for f in files if f.parent.name == "checkpoints")
    ends = [e for e in events if isinstance(e, TaskEnd)]
    tasks = next(e for e in events if isinstance(e, RunStarted)).tasks
    per_task = np.array([sum(e.seconds.values()) for e in ends])
    # Tasks differ in size and in the epochs early stopping gives them, so flatness is judged
    # per SGD step: all of a task's time over the batches it trained.
    steps = np.array([sum(e.epochs.values()) * -(-t["sizes"]["train"] // cfg.optim.batch_size)
                      for e, t in zip(ends, tasks)])
    per_step = per_task / steps * 1e3
    xm = [e.seconds for e in events if isinstance(e, DTDResult)]
    print(f"  total {result.seconds:.0f} s, Acc {np.mean(result.test_acc[-1]):.3f}")
    print(f"  last 10 tasks / first 10: {per_step[-10:].mean() / per_step[:10].mean():.2f} per step (goal <= 1.2)")
    print(f"  X-means per DTD (both layers): first {xm[0] * 1e3:.0f} ms, at 50 tasks {xm[-1] * 1e3:.0f} ms")
    print(f"  run folder {size / 2**20:.1f} MB, of which task checkpoints {checkpoints / 2**20:.1f} MB "
          f"(goal < 50 MB without them, --no-checkpoints); peak memory of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MB")


if __name__ == "__main__":
    raise SystemExit(main())
