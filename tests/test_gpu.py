"""The CUDA path: the same step and the same stacked runs on a GPU as on the CPU.

Skipped where torch sees no CUDA device (CI and most machines); run with ``-m gpu`` on one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prm import masks as M
from prm import step as S
from prm.engine import Job, train_sequence, train_together
from tests.conftest import tiny_config
from tests.test_step import WIDTHS, _clone, _hyper, _inputs, _params, _protect, _stacked_keeps

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def _to(tree, device):
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to(t, device) for t in tree)
    if isinstance(tree, dict):
        return {k: _to(v, device) for k, v in tree.items()}
    if isinstance(tree, S.Hyper):
        return S.Hyper(**{k: getattr(tree, k).to(device) for k in ("smax", "lamb", "thres_cosh", "thres_emb", "clip")})
    return tree


@pytest.mark.parametrize("compiled", [False, True])
def test_the_step_on_cuda_matches_the_cpu(compiled):
    gen = torch.Generator().manual_seed(1)
    runs = 3
    params, inputs = _params(runs, gen, masked=True), _inputs(runs, gen)
    protect = _protect(runs, gen)
    weights = [M.regulariser_weights(p, WIDTHS) for p in protect]
    fixed = dict(keeps=_stacked_keeps(protect), reg_weights=torch.stack([w for w, _ in weights]),
                 reg_norm=torch.stack([n for _, n in weights]), hyper=_hyper(runs))
    cpu, gpu = _clone(params), _to(_clone(params), "cuda")
    S.sgd_step(**cpu, **inputs, **fixed)
    with torch.no_grad():
        (S.compiled() if compiled else S.sgd_step)(**gpu, **_to(inputs, "cuda"), **_to(fixed, "cuda"))
    for (w, b), (gw, gb) in zip(cpu["layers"], gpu["layers"]):
        torch.testing.assert_close(gw.cpu(), w, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(gb.cpu(), b, rtol=1e-4, atol=1e-5)


def test_runs_train_on_cuda_alone_and_stacked():
    cfg = tiny_config(device="cuda")
    alone = train_sequence(cfg, compile="off")
    assert alone.status == "finished" and np.isfinite(alone.test_acc[-1]).all()
    stacked = train_together([Job(config=cfg.replace(seed=s)) for s in (0, 1)], compile="off")
    np.testing.assert_allclose(stacked[0].test_acc, alone.test_acc, atol=0.05, equal_nan=True)


def test_a_cat_run_trains_on_cuda_with_its_attention_phase(monkeypatch):
    """CAT's side networks, multipliers, attention and head choice on the device (every
    earlier task forced similar, so the attention step runs)."""
    from prm.config import CATConfig
    from prm.events import TaskEnd
    from tests.test_cat import force_similar

    force_similar(monkeypatch)
    events: list = []
    result = train_sequence(tiny_config(method="cat", device="cuda", cat=CATConfig(detect_epochs=3)),
                            emit=events.append, compile="off")
    assert result.status == "finished" and np.isfinite(result.test_acc[-1]).all()
    assert [len(e.kta) for e in events if isinstance(e, TaskEnd)] == [1, 2, 3]
