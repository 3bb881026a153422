"""DTD that stops when its answer settles (prm.settle), against the paper's fixed budget."""

from __future__ import annotations

import hashlib
import json

import pytest

from prm.checkpoint import config_hash
from prm import methods
from prm.config import CATConfig, ConfigError, OptimConfig, PRMConfig
from prm.engine import train_sequence
from prm.events import TaskEnd
from tests.conftest import tiny_config


def _dtd_epochs(cfg) -> list[int]:
    events = []
    train_sequence(cfg, emit=events.append, compile="off")
    return [e.epochs["dtd"] for e in events if isinstance(e, TaskEnd) and "dtd" in e.epochs]


def test_settling_dtd_stops_at_a_check_and_the_fixed_budget_runs_out():
    # patience longer than the budget: only the budget (or settling) can end DTD
    optim = OptimConfig(max_epochs=4, patience=30)
    fixed = _dtd_epochs(tiny_config(optim=optim, prm=PRMConfig(dtd_epochs=12, head_epochs=1)))
    assert fixed == [12, 12]
    settling = _dtd_epochs(tiny_config(optim=optim, prm=PRMConfig(dtd_epochs=12, head_epochs=1, settle=1,
                                                                  settle_every=3)))
    # the answer is asked after epochs 3, 6, 9, 12; one unchanged check ends DTD at the 2nd at the earliest
    assert all(e in (6, 9, 12) for e in settling), settling
    assert min(settling) == 6


def test_settle_is_validated_and_old_checkpoints_keep_their_hash():
    with pytest.raises(ConfigError, match="prm.settle"):
        tiny_config(prm=PRMConfig(settle=-1))
    with pytest.raises(ConfigError, match="prm.settle_every"):
        tiny_config(prm=PRMConfig(settle_every=0))
    # a checkpoint written before these fields existed hashed the config without them
    base = tiny_config()
    before = base.to_dict()
    del before["prm"]["settle"], before["prm"]["settle_every"], before["cat"]  # CAT's section came later still
    for m in methods.REGISTRY.values():  # and the baselines' own sections later again
        if m.settings is not None:
            del before[m.sections[0]]
    assert config_hash(base) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    assert config_hash(base) != config_hash(base.replace(cat=CATConfig(kta_weight=0.5)))
    assert config_hash(base) != config_hash(base.replace(prm=PRMConfig(**{**base.to_dict()["prm"], "settle": 2})))
