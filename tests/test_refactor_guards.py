"""Guards of a refactor that must change no behaviour (issue 22): what the explorer reads from
every bundled run stays what it was, and the modules import one another without cycles.

The digests in ``tests/data/sample_state_digests.json`` were recorded by
``scripts/state_digest.py --write`` on the code before the refactor; a mismatch means a loaded
run now folds to something else. ``python scripts/state_digest.py --sections FOLDER``, run on
the old and the new code, says which part moved.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


state_digest = _load_script("state_digest")
module_graph = _load_script("module_graph")

RECORDED: dict[str, str] = json.loads(state_digest.RECORDED.read_text())

# ----------------------------------------------------------------------------- the folded state of every sample


def test_every_sample_is_recorded():
    """A run or a study added to (or gone from) sample_runs/ must be recorded anew, knowingly."""
    now = {state_digest._relative(f) for f in state_digest.run_folders()}
    recorded_runs = {k for k in RECORDED if not k.startswith(state_digest.STUDY_PREFIX)}
    assert now == recorded_runs, (f"new: {sorted(now - recorded_runs)}; gone: {sorted(recorded_runs - now)}; "
                                  "record them with scripts/state_digest.py --write on the unchanged code")
    assert len(RECORDED) > len(recorded_runs), "the bundled Optuna studies are digested too"


@pytest.mark.parametrize("key", sorted(RECORDED))
def test_sample_state_is_unchanged(key):
    got = state_digest.digest(state_digest.sections_of(key))
    assert got == RECORDED[key], (
        f"{key}: what the explorer reads from it changed (digest {got[:12]}, recorded {RECORDED[key][:12]}). "
        f"Run `python scripts/state_digest.py --sections {key}` on the old and the new code to see which part.")


def test_digest_tells_values_apart():
    """The canonical form separates what a sloppy one would merge, and ignores dict order."""
    import numpy as np

    digest = state_digest.digest
    assert digest({"a": 1, "b": 2.0}) == digest({"b": 2.0, "a": 1})
    assert digest(0.0) != digest(-0.0) and digest(1) != digest(1.0) and digest(float("nan")) != digest(None)
    assert digest(np.zeros(4, np.float32)) != digest(np.zeros(4, np.float64))
    assert digest(np.zeros((2, 2))) != digest(np.zeros(4))
    assert digest(np.arange(3)) == digest(np.arange(3)[::-1][::-1].copy())
    with pytest.raises(TypeError):
        digest(object())


# ----------------------------------------------------------------------------- import cycles


def _cycles(packages: tuple[str, ...]) -> list[str]:
    graph = module_graph.build_graph(packages)
    links = module_graph.edges(graph, packages)
    return [module_graph.explain(graph, c, links) for c in module_graph.cycles(links)]


def test_no_import_cycle_in_prm_or_explorer():
    """Function-level imports count: Python runs them at the first call, and a cycle hidden in
    one still means neither module can move or be read alone."""
    found = _cycles(module_graph.PACKAGES)
    assert not found, "import cycles:\n" + "\n".join(found)


def _write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_cycle_hidden_in_a_function_is_caught_and_a_type_only_import_is_not(tmp_path, monkeypatch):
    _write_package(tmp_path, {
        "guardpkg/__init__.py": "",
        "guardpkg/a.py": "from guardpkg import b\n",
        "guardpkg/b.py": "import json\n\n\ndef late():\n    import guardpkg.a\n",
        "guardpkg/sub/__init__.py": "",
        "guardpkg/sub/c.py": "import guardpkg.a\n",
        "guardpkg/d.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import guardpkg.e\n",
        "guardpkg/e.py": "import guardpkg.d\n",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    found = _cycles(("guardpkg",))
    home = (tmp_path / "guardpkg").resolve()
    assert found == [f"guardpkg.a --[{home}/a.py:1]--> guardpkg.b --[{home}/b.py:5 (function-level)]--> guardpkg.a"]


def test_an_acyclic_package_passes(tmp_path, monkeypatch):
    _write_package(tmp_path, {
        "guardfree/__init__.py": "",
        "guardfree/a.py": "from guardfree import b\n",
        "guardfree/b.py": "def late():\n    import guardfree.c\n",
        "guardfree/c.py": "",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycles(("guardfree",)) == []


# ----------------------------------------------------------------------------- prm stays free of the app


def test_prm_never_imports_streamlit_or_the_app():
    """The engine runs headless (CLI, tuning, CI): Streamlit and the explorer are the app's alone,
    not even behind a function-level import."""
    graph = module_graph.build_graph(external=True)
    for forbidden in ("streamlit", "explorer"):
        chains = graph.find_shortest_chains(importer="prm", imported=forbidden, as_packages=True)
        assert not chains, f"prm imports {forbidden}: " + "; ".join(" -> ".join(c) for c in sorted(chains))


# ----------------------------------------------------------------------------- sizes


shape = _load_script("shape")


def test_modules_and_functions_stay_within_their_limits():
    """A module over 500 lines or a function over 60 is where a new contributor stops reading:
    split it by concept before it grows (``python scripts/shape.py`` lists the largest)."""
    too_big = {path: n for path, n in shape.modules().items() if n > shape.MODULE_LIMIT}
    too_long = [f"{f.path}:{f.line} {f.name} ({f.lines})" for f in shape.long_functions(shape.FUNCTION_LIMIT)]
    assert not too_big and not too_long, (too_big, too_long)
