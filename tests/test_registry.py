"""The method registry: one record per method, every method's levers its own, and a new method
trained by the unchanged engine from one module and one entry."""

from __future__ import annotations

import ast
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from prm import methods, trainer
from prm.config import PRMConfig, RunConfig, preset
from prm.engine import train_sequence
from prm.events import TaskEnd
from prm.methods.base import Hooks, Method
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_method_has_a_distinct_label_colour_and_one_module():
    entries = list(methods.REGISTRY.values())
    assert len({m.label for m in entries}) == len({m.colour for m in entries}) == len(entries)
    for m in entries:
        assert m.help and m.hooks.__module__.startswith("prm.methods.")
    assert {methods.with_role(r).name for r in ("baseline", "single-task", "lower-bound", "upper-bound")} \
        == {"hat", "stl", "ncl", "joint"}


def test_a_variant_gets_its_levers_however_its_config_is_built():
    levers = methods.get("prm+").levers
    assert levers  # PRM+ is a variant by its levers
    for cfg in (RunConfig(method="prm+"), preset("default", method="prm+"), RunConfig().replace(method="prm+")):
        assert all(getattr(cfg.prm, name) == value for name, value in levers.items())
    # back to PRM: the variant's levers return to the paper's values, any other setting is kept
    back = RunConfig(method="prm+", prm=PRMConfig(**levers, dtd_epochs=7)).replace(method="prm")
    assert back.prm == PRMConfig(dtd_epochs=7)
    # an explicit PRMConfig is taken as given, and round-trips through run.json's dict
    explicit = RunConfig(method="prm+", prm=PRMConfig(relax=0.5))
    assert explicit.prm.relax == 0.5 and explicit.prm.clustering == "xmeans"
    assert RunConfig.from_dict(explicit.to_dict()) == explicit


def test_an_unknown_method_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown method 'nope'; choose one of prm, prm\\+"):
        methods.get("nope")
    with pytest.raises(ValueError, match="method: unknown"):
        RunConfig(method=["prm"])  # unhashable: still a clear ConfigError, not a TypeError


class _Rehearsal(Hooks):
    """A toy method: each task trains together with the one before it (a one-task replay)."""

    def also(self, task):
        return [(task - 1, self.data[task - 1])] if task > 0 else []


def test_a_new_method_is_one_module_and_one_registry_entry(monkeypatch):
    """The engine, the config and the trainer stay as they are: a method written as one Hooks
    subclass and one Method record, added to the registry, trains and reports every task."""
    toy = Method(name="toy", label="Toy", help="a test method", colour="#123456", hooks=_Rehearsal)
    monkeypatch.setattr(methods, "REGISTRY", MappingProxyType({**methods.REGISTRY, "toy": toy}))
    trained_with, real_fit = [], trainer.fit

    def fit(ctx, model, task, data, **kwargs):
        trained_with.append([i for i, _ in kwargs.get("also", ())])
        return real_fit(ctx, model, task, data, **kwargs)

    monkeypatch.setattr(trainer, "fit", fit)
    events: list = []
    result = train_sequence(tiny_config(method="toy"), emit=events.append)
    assert result.status == "finished" and trained_with == [[], [0], [1]]
    assert [e.task for e in events if isinstance(e, TaskEnd)] == [0, 1, 2]
    assert not np.isnan(result.test_acc[np.tril_indices(3)]).any()


# Strings that are a method's name but mean something else here: the config sections ``prm``,
# ``hat`` and ``cat`` (``RunConfig.prm`` ...), and ``prm`` as the package (``python -m prm``).
SECTIONS = {"prm", "hat", "cat"}


def _method_strings(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every string constant equal to a method's name; the names that are also
    config sections count only where compared with a method (``method == "hat"``, ``method in ("cat",)``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set(methods.NAMES)
    compared = {id(c) for node in ast.walk(tree) if isinstance(node, ast.Compare) and "method" in ast.unparse(node)
                for side in (node.left, *node.comparators) for c in ast.walk(side)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
            and (node.value not in SECTIONS or id(node) in compared)]


def test_method_names_appear_only_in_their_own_module_and_the_registry():
    """Outside prm/methods/, no code names a method: it asks the registry (roles, orders,
    flags). The three names that are also config sections are checked where compared."""
    found = []
    for path in sorted([*ROOT.glob("prm/**/*.py"), *ROOT.glob("explorer/**/*.py")]):
        if path.is_relative_to(ROOT / "prm" / "methods"):
            continue
        found += [f"{path.relative_to(ROOT)}:{line} {name!r}" for line, name in _method_strings(path)]
    assert not found, "method names outside prm/methods/: " + ", ".join(found)
