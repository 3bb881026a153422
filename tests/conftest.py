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


from contextlib import ExitStack  # noqa: E402

from tests.postgres import PostgresUnavailable, throwaway_cluster, unavailable  # noqa: E402


@pytest.fixture(scope="session")
def postgres_cluster():
    """One throwaway PostgreSQL server for the whole run, started (about a second) only if a
    test asks for it; skips with the reason where none can start, fails under
    PRM_REQUIRE_POSTGRES=1. pytest caches the skip, so later tests do not retry."""
    with ExitStack() as stack:
        try:
            cluster = stack.enter_context(throwaway_cluster())
        except PostgresUnavailable as exc:
            unavailable(str(exc))
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster):
    """A fresh database on the shared server, as the SQLAlchemy URL Optuna and ``--storage``
    take: each test gets its own studies, whatever names it uses."""
    return postgres_cluster.new_database()
