"""Why the bundled-data defaults are batch 16 and lr 0.1 (not HAT's batch 64 and lr 0.05).

    python scripts/sweep_defaults.py          # about 2 minutes

Trains HAT and NCL on the first 4 tasks of each bundled family for a small grid of batch size,
learning rate and regulariser strength, and prints the mean accuracy just after learning each
task (diag), at the end (final), the epochs used and the time. The writer tasks hold about 80
training images, so at batch 64 an epoch is 2 steps and s jumps from 1/smax to smax.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prm.config import HATConfig, OptimConfig, RunConfig  # noqa: E402
from prm.engine import train_sequence  # noqa: E402
from prm.events import EpochEnd  # noqa: E402


def main() -> int:
    torch.set_num_threads(1)
    print("batch lr    lamb  | sequence/method: diag final epochs time")
    for batch, lr, lamb in itertools.product([16, 32, 64], [0.05, 0.1], [0.75, 0.25]):
        cells = []
        for sequence, method in itertools.product(["digits-writers", "digits-classes"], ["hat", "ncl"]):
            cfg = RunConfig(sequence=sequence, n_tasks=4, method=method, seed=0,
                            hat=HATConfig(lamb=lamb), optim=OptimConfig(batch_size=batch, lr=lr))
            epochs = []
            started = time.perf_counter()
            result = train_sequence(cfg, emit=lambda e: epochs.append(e) if isinstance(e, EpochEnd) else None)
            R = result.test_acc
            cells.append(f"{sequence[7:10]}/{method}: {np.mean(np.diag(R)):.3f} {np.mean(R[-1]):.3f} "
                         f"{len(epochs):>3} {time.perf_counter() - started:4.1f}s")
        print(f"{batch:>5} {lr:<5} {lamb:<5} | " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
