"""Shared test set-up: one BLAS/torch thread (two test processes on two cores must not
oversubscribe), and a tiny configuration that trains a whole sequence in about a second."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from prm.config import ModelConfig, OptimConfig, PRMConfig, RecordConfig, RunConfig  # noqa: E402


def tiny_config(**changes) -> RunConfig:
    """A 3-task digits-classes run with a narrow network and few epochs."""
    base = RunConfig(
        sequence="digits-classes", n_tasks=3, method="prm", seed=0,
        model=ModelConfig(hidden=(32, 32)),
        optim=OptimConfig(max_epochs=6, patience=2),
        prm=PRMConfig(dtd_epochs=4, head_epochs=2),
        record=RecordConfig(trajectory_every=1, projections=("pca",)),
    )
    return base.replace(**changes)


@pytest.fixture
def tiny():
    return tiny_config
