"""Fingerprint what the explorer reads from every bundled run, to prove a refactor changed nothing.

    python scripts/state_digest.py            # compare with tests/data/sample_state_digests.json
    python scripts/state_digest.py --write    # record the digests of the code as it is now
    python scripts/state_digest.py --sections sample_runs/digits-mixed-prm-s0   # one digest per part

Each run folder under ``sample_runs/`` (the tuning trials' folders too) is loaded with
``prm.run.load_run`` and its folded state reduced to one SHA-256: run.json's meta, the status
and its note, the warnings, every typed event of the state, the accuracy matrices, each layer's
DTD and CAT calls, the phase seconds, the per-task arrays, the projections, the summary as read
and as computed again, and the points each layer's embedding figure plots. Each bundled Optuna
study is digested too, as ``prm.studies.load_study`` reads it. A refactor that keeps
behaviour keeps every digest; the first differing part is found by running ``--sections`` on
the old and the new code and comparing the lines.

Canonical form: dataclasses as their fields (never their class names, so a class may move or be
renamed), mappings as key-sorted pairs, floats by ``repr`` (NaN and -0.0 kept apart from 0.0),
arrays as dtype, shape and the SHA-256 of their C-ordered bytes, paths relative to the
repository. Anything else is an error, so that a new kind of value is never digested by accident.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prm import studies  # noqa: E402
from prm.run import embedding_points, load_run, summarise  # noqa: E402

SAMPLES = ROOT / "sample_runs"
RECORDED = ROOT / "tests" / "data" / "sample_state_digests.json"
STUDY_PREFIX = "study:"
"""Keys of study digests: ``study:<storage relative to the repository>:<study name>``."""


def canonical(value: Any) -> Any:
    """``value`` as plain JSON that is equal for equal values and differs for different ones."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return {"float": repr(float(value))}
    if isinstance(value, np.ndarray):
        return _array(value)
    if isinstance(value, Path):
        return {"path": _relative(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"fields": [[f.name, canonical(getattr(value, f.name))] for f in dataclasses.fields(value)]}
    if isinstance(value, Mapping):
        pairs = [[canonical(k), canonical(v)] for k, v in value.items()]
        return {"map": sorted(pairs, key=lambda kv: json.dumps(kv[0], sort_keys=True))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    raise TypeError(f"no canonical form for {type(value).__name__}: add one before digesting it")


def _array(value: np.ndarray) -> dict[str, Any]:
    if value.dtype == object:
        return {"object_array": list(value.shape), "items": [canonical(v) for v in value.ravel().tolist()]}
    data = np.ascontiguousarray(value).tobytes()
    return {"dtype": value.dtype.str, "shape": list(value.shape), "sha256": hashlib.sha256(data).hexdigest()}


def _relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT.resolve()).as_posix()
    except ValueError:
        return str(path)


def digest(value: Any) -> str:
    text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- what is digested


def run_folders(root: Path = SAMPLES) -> list[Path]:
    """Every folder under ``root`` holding a run.json or an events.jsonl (nested ones too)."""
    found = {p.parent for name in ("run.json", "events.jsonl") for p in root.rglob(name)}
    return sorted(found)


def run_sections(folder: Path) -> dict[str, Any]:
    """The parts of a loaded run the app reads, by name (each digested on its own by --sections)."""
    run = load_run(folder)
    state = run.state
    layers = range(len(run.meta["config"]["model"]["hidden"]))
    parent = run.parent
    return {
        "meta": run.meta,
        "status": [run.status, run.status_note, run.name, run.engine_version, run.n_layers],
        "warnings": list(run.warnings),
        "state": state,
        "accuracy": {split: state.accuracy_matrix(split) for split in ("test", "val")},
        "scalars": [state.config, state.sequence, list(state.tasks), state.oracle_transfer, state.n_tasks,
                    state.tasks_done, state.current()],
        "calls": {layer: state.calls(layer) for layer in (-1, *layers)},
        "task_seconds": state.task_seconds(),
        "arrays": run.arrays,
        "projections": run.projections,
        "accessors": _accessors(run, layers),
        "parent": None if parent is None else parent.to_dict(),
        "summary": run.summary,
        "summarised": summarise(run),
        "embedding_points": {layer: embedding_points(run, layer) for layer in range(run.n_layers)},
    }


def _accessors(run: Any, layers: range) -> dict[str, Any]:
    """What the views read through ``Run``'s accessors rather than by array name."""
    tasks = range(run.state.n_tasks)
    methods = run.meta["config"]["record"]["projections"]
    return {
        "learnt": {layer: run.learnt(layer) for layer in layers},
        "dtd_steps": run.dtd_steps(),
        "checkpoints": [run.has_checkpoint(t) for t in tasks],
        "stored_projection": {f"{m}/{layer}": run.stored_projection(m, layer) for m in methods for layer in layers},
    }


def study_sections(url: str, name: str) -> dict[str, Any]:
    study = studies.load_study(url, name)
    return {"study": study, "derived": [study.sequence, study.method, study.complete, study.best, study.ps]}


def storages(root: Path = SAMPLES) -> list[Path]:
    return sorted(root.rglob("optuna.db"))


def sections_of(key: str) -> dict[str, Any]:
    """The sections behind one key of the recorded file: a run folder or a study."""
    if key.startswith(STUDY_PREFIX):
        storage, name = key[len(STUDY_PREFIX):].split(":", 1)
        return study_sections(f"sqlite:///{(ROOT / storage).resolve()}", name)
    return run_sections(ROOT / key)


def all_sections() -> dict[str, dict[str, Any]]:
    """Key -> sections for every bundled run folder and every study of every bundled storage."""
    out = {_relative(folder): run_sections(folder) for folder in run_folders()}
    for db in storages():
        url = f"sqlite:///{db.resolve()}"
        for name in studies.study_names(url):
            out[f"{STUDY_PREFIX}{_relative(db)}:{name}"] = study_sections(url, name)
    return out


def digests() -> dict[str, str]:
    return {key: digest(sections) for key, sections in sorted(all_sections().items())}


def differences(recorded: dict[str, str], now: dict[str, str]) -> list[str]:
    """One line per key whose digest changed, appeared or vanished."""
    lines = []
    for key in sorted(recorded.keys() | now.keys()):
        if key not in now:
            lines.append(f"{key}: recorded, but no longer found")
        elif key not in recorded:
            lines.append(f"{key}: new, not recorded")
        elif recorded[key] != now[key]:
            lines.append(f"{key}: digest {now[key][:12]} differs from the recorded {recorded[key][:12]}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"record the digests in {_relative(RECORDED)}")
    parser.add_argument("--sections", metavar="FOLDER", nargs="+",
                        help="print one digest per part of these run folders (diff two versions' output)")
    args = parser.parse_args(argv)
    if args.sections:
        for folder in args.sections:
            for part, value in run_sections(Path(folder)).items():
                print(f"{_relative(Path(folder))} {part} {digest(value)}")
        return 0
    now = digests()
    if args.write:
        RECORDED.parent.mkdir(parents=True, exist_ok=True)
        RECORDED.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(now)} digests to {_relative(RECORDED)}")
        return 0
    problems = differences(json.loads(RECORDED.read_text()), now)
    print("\n".join(problems) if problems else f"all {len(now)} digests match")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
