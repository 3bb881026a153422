"""How long must DTD train for X-means to see the task families? (chooses PRM's defaults)

For each DTD budget (2nd-optimisation epochs) it trains PRM on a mixed sequence for several
seeds and prints: how often DTD's similar/dissimilar call about an earlier task matches the
truth (same family and label set) (per layer, over every (new task, earlier task) pair), Acc, and PRM's total
time over HAT's on the same seeds, measured in the same process one after the other.

    python scripts/dtd_budget.py --budgets 10,20,40 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prm.analysis import calls_right, true_groups  # noqa: E402
from prm.config import PRMConfig, RunConfig  # noqa: E402
from prm.engine import train_sequence  # noqa: E402
from prm.events import DTDResult, RunStarted  # noqa: E402


def agreement(events) -> list[float]:
    """Per layer: fraction of (t, i < t) pairs where DTD's call matches the truth
    (``prm.analysis.true_groups``), weighting every earlier task of every step equally."""
    groups = true_groups(next(e for e in events if isinstance(e, RunStarted)).tasks)
    hits: dict[int, list[float]] = {}
    for dtd in (e for e in events if isinstance(e, DTDResult)):
        for layer, record in enumerate(dtd.layers):
            right = calls_right(groups=groups, task=dtd.task, dissimilar=record["dissimilar_xmeans"])
            hits.setdefault(layer, []).extend([right] * dtd.task)
    return [float(np.mean(v)) for _, v in sorted(hits.items())]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequence", default="digits-mixed")
    parser.add_argument("--budgets", default="10,20,40")
    parser.add_argument("--head-epochs", type=int, default=PRMConfig().head_epochs)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    hat = {}
    for seed in seeds:
        result = train_sequence(RunConfig(sequence=args.sequence, method="hat", seed=seed))
        hat[seed] = (result.test_acc[-1].mean(), result.seconds)
    print(f"{args.sequence}, seeds {seeds}: HAT Acc {np.mean([a for a, _ in hat.values()]):.3f}")
    print("dtd_epochs  agreement per layer   PRM Acc   PRM/HAT time")
    for budget in (int(b) for b in args.budgets.split(",")):
        agree, accs, ratios = [], [], []
        for seed in seeds:
            events = []
            cfg = RunConfig(sequence=args.sequence, method="prm", seed=seed,
                            prm=PRMConfig(dtd_epochs=budget, head_epochs=args.head_epochs))
            result = train_sequence(cfg, emit=events.append)
            agree.append(agreement(events))
            accs.append(result.test_acc[-1].mean())
            ratios.append(result.seconds / hat[seed][1])
        per_layer = " ".join(f"{v:.2f}" for v in np.mean(agree, axis=0))
        print(f"{budget:>10}  {per_layer:<20}  {np.mean(accs):.3f}     {np.mean(ratios):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
