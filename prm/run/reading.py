"""Reading a run folder back: :func:`load_run` for any run, finished or still being written.

Layout of a run folder (schema version ``SCHEMA``)::

    run.json            config, schema, seed, library versions, start time, writer pid/host
    events.jsonl        append-only event log, one JSON object a line, flushed per event
    arrays/task_007.npz per task: final embedding, mask at smax, accumulated and protecting
                        masks, embedding trajectory (one array per masked layer)
    arrays/dtd_007.npz  per DTD step: the embeddings X-means clustered, the DTD trajectory
    checkpoints/task_007.safetensors
                        masked methods: the state task 7 starts from (``prm.checkpoint``),
                        which ``python -m prm whatif`` resumes; run.json's ``parent`` names
                        the run a what-if run was resumed from
    projections.npz     2-D PCA/UMAP coordinates of the embeddings per layer (at run end)
    summary.json        Acc, BWT, timings, status (at run end)

A run folder is untrusted input (it may be uploaded, copied or damaged). Only JSON and
numeric ``.npz`` arrays are read, through :mod:`prm.safeio` (regular files inside the folder,
sizes checked before anything is allocated, never a pickle); every JSON document is parsed
by :func:`prm.strictjson.load_json` (a number no float can hold refuses its record), every
event record into its typed event by :mod:`prm.records` (types and ranges checked), and
every array is checked against the run's shapes. ``load_run`` reads a finished, running, stopped, failed or
killed run: a truncated or corrupt line, a record out of range, a missing or refused array
file or a bad summary gives a partial run with warnings; a folder that is not a run, or one
from a newer schema, raises ``RunFormatError``, and nothing else is ever raised. Live views
call it again as the run grows: the same files, folded by :func:`apply_events`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prm import methods, safeio
from prm.config import RunConfig
from prm.events import TaskCheckpoint
from prm.methods.base import Shape
from prm.records import BadRecord, method_flags
from prm.run.meta import UPLOADED, RunParent, read_meta, writer_alive
from prm.run.state import MAX_SKIP_MESSAGES, RunState, apply_events
from prm.run.summary import read_summary
from prm.strictjson import load_json

MAX_LINE_CHARS = 16 * safeio.MiB
"""The longest event line read; a real one is under 100 kB (a 1000-task oracle matrix, the
largest possible, under 10 MB)."""


def iter_records(text: str, problems: list[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects of an event log, one line at a time (so a long log is folded without
    holding every parsed line at once); a warning per line that is not one goes to ``problems``."""
    lines = text.split("\n")
    final = next((n for n in range(len(lines), 0, -1) if lines[n - 1].strip()), 0)  # last line with text
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:  # parsing it could build hundreds of MB of Python objects
            if len(problems) < MAX_SKIP_MESSAGES:
                problems.append(f"events.jsonl: line {number} is longer than {MAX_LINE_CHARS // safeio.MiB} MiB; skipped")
            continue
        try:
            record = load_json(line)
            if not isinstance(record, dict) or "type" not in record:
                raise ValueError("not an event object")
        except BadRecord as exc:  # a number no float can hold: the line is JSON, its record is refused
            if len(problems) < MAX_SKIP_MESSAGES:
                problems.append(f"events.jsonl: line {number} skipped ({exc})")
            continue
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
            if len(problems) < MAX_SKIP_MESSAGES:
                problems.append(f"events.jsonl: {'truncated last line' if number == final else f'corrupt line {number}'}"
                                " skipped")
            continue
        yield record


def parse_lines(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse JSON lines; return the objects and a warning per line that is not one."""
    problems: list[str] = []
    return list(iter_records(text, problems)), problems


@dataclass(frozen=True, kw_only=True)
class Run:
    """A run read back from its folder, every part checked (see the module docstring).

    ``warnings`` lists damage (records skipped, arrays refused); ``status_note`` says why a
    run without a closing record counts as failed. Views read arrays through the accessors
    below, never by array names.
    """

    path: Path
    meta: dict[str, Any]
    state: RunState
    status: str
    arrays: dict[tuple[str, int], dict[str, np.ndarray]]
    projections: dict[str, np.ndarray]
    summary: dict[str, Any] | None
    warnings: tuple[str, ...]
    status_note: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def engine_version(self) -> str | None:
        """The version of the engine that recorded the run (``prm.__version__``), None for a
        run recorded before run.json held it: only runs of one version have comparable times."""
        return self.meta["versions"].get("prm")

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.meta["config"])

    @property
    def parent(self) -> RunParent | None:
        """The run this what-if run was resumed from (None for an ordinary run, or when the
        link names a task beyond this run's sequence)."""
        return RunParent.parse(self.meta.get("parent"), n_tasks=self.state.n_tasks or None,
                               n_layers=len(self.meta["config"]["model"]["hidden"]))

    def has_checkpoint(self, task: int) -> bool:
        """Is there a checkpoint file for the start of ``task`` (checked only when read)?"""
        try:
            return safeio.inside(self.path, TaskCheckpoint.file_name(task)).is_file()
        except (safeio.UnsafeFile, OSError):
            return False

    @property
    def n_layers(self) -> int:
        """Masked layers (0 for the unmasked methods, which have no masks or embeddings)."""
        
        return len(self.meta["config"]["model"]["hidden"]) if method_flags(self.meta["config"]["method"]).masked else 0

    def _array(self, kind: str, task: int, name: str, layer: int) -> np.ndarray | None:
        return self.arrays.get((kind, task), {}).get(f"{name}_l{layer}")

    def embedding(self, task: int, layer: int) -> np.ndarray | None:
        """Task ``task``'s final embedding e_t of ``layer``, shape (units,)."""
        return self._array("task", task, "embedding", layer)

    def mask(self, task: int, layer: int) -> np.ndarray | None:
        """Task ``task``'s mask at s = smax, shape (units,)."""
        return self._array("task", task, "mask", layer)

    def accumulated(self, task: int, layer: int) -> np.ndarray | None:
        """HAT's accumulated mask a_<=task (every unit tasks 1..task used)."""
        return self._array("task", task, "accumulated", layer)

    def protected(self, task: int, layer: int) -> np.ndarray | None:
        """The mask that protected the weights while ``task`` was learnt (PRM: p_<=task-1)."""
        return self._array("task", task, "protected", layer)

    def trajectory(self, task: int, layer: int, *, dtd: bool = False) -> np.ndarray | None:
        """The embedding's snapshots during training (or during that task's DTD), (k, units)."""
        return self._array("dtd" if dtd else "task", task, "trajectory", layer)

    def dtd_embeddings(self, task: int, layer: int) -> np.ndarray | None:
        """The embeddings X-means clustered when ``task`` arrived: tasks 0..task, (task+1, units)."""
        return self._array("dtd", task, "embeddings", layer)

    def own(self, task: int, name: str, layer: int | None = None) -> np.ndarray | None:
        """One of the arrays the run's method records beyond HAT's (``Method.arrays``: SupSup's
        supermasks, PathNet's paths ...), checked against its rule when read; None if absent."""
        return self.arrays.get(("task", task), {}).get(name if layer is None else f"{name}_l{layer}")

    def learnt(self, layer: int) -> list[int]:
        """Tasks whose final embedding and mask of ``layer`` were recorded, in order."""
        return sorted(t for (kind, t) in self.arrays if kind == "task" and self.embedding(t, layer) is not None
                      and self.mask(t, layer) is not None)

    def dtd_steps(self) -> list[int]:
        """Tasks with a DTD decision and the embeddings it clustered (every masked layer)."""
        return sorted(t for t in self.state.dtd
                      if all(self.dtd_embeddings(t, layer) is not None for layer in range(self.n_layers)))

    def stored_projection(self, method: str, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(task, is-DTD, 2-D coordinates) of every point ``projections.npz`` holds for ``layer``."""
        keys = (f"task_l{layer}", f"dtd_l{layer}", f"{method}_l{layer}")
        if not all(k in self.projections for k in keys):
            return None
        return tuple(self.projections[k] for k in keys)  # type: ignore[return-value]


_TASK_ARRAYS = ("embedding", "mask", "accumulated", "protected", "trajectory")
_DTD_ARRAYS = ("embeddings", "trajectory")


def _check_arrays(kind: str, task: int, data: dict[str, np.ndarray], widths: list[int],
                  where: Shape) -> tuple[dict, list[str]]:
    """Keep the arrays whose name, shape and values fit the run (HAT's, or the method's own,
    ``Method.arrays``); say what was dropped."""
    kept, problems = {}, []
    method = methods.find(where.config.get("method"))
    own = method.arrays if method is not None and kind == "task" else {}
    layers = {str(n): n for n in range(len(widths))}  # looked up as text: int() would refuse "²" or 5000 digits
    for name, array in data.items():
        base, _, layer = name.rpartition("_l")
        if name in own and not own[name].per_layer:
            problem = own[name].problem(array, dataclasses.replace(where, layer=None))
        elif base in own and own[base].per_layer and layer in layers:
            problem = own[base].problem(array, dataclasses.replace(where, layer=layers[layer]))
        else:
            problem = _hat_problem(kind, task, base, layer, array, widths, layers)
        if problem:
            problems.append(f"arrays/{kind}_{task:03d}.npz: {name} ignored ({problem})")
        else:
            kept[name] = array
    required = ("embedding", "mask", "accumulated") if kind == "task" else ("embeddings",)
    missing = [f"{base}_l{layer}" for layer in range(len(widths)) for base in required
               if f"{base}_l{layer}" not in data]
    if missing and (method is None or method.masked or kind != "task"):
        problems.append(f"arrays/{kind}_{task:03d}.npz: {', '.join(missing)} missing")
    return kept, problems


def _hat_problem(kind: str, task: int, base: str, layer: str, array: np.ndarray, widths: list[int],
                 layers: dict[str, int]) -> str | None:
    """Why one of HAT's arrays (embeddings, masks, trajectories) does not fit, None when it does."""
    if base not in (_TASK_ARRAYS if kind == "task" else _DTD_ARRAYS) or layer not in layers:
        return "not an array of this run"
    H = widths[layers[layer]]
    shape = {"trajectory": (None, H), "embeddings": (task + 1, H)}.get(base, (H,))
    if array.ndim != len(shape) or any(want is not None and n != want for n, want in zip(array.shape, shape)):
        return f"shape {array.shape}, expected {tuple('k' if w is None else w for w in shape)}"
    if array.dtype.kind != "f" or not np.isfinite(array).all():
        return "not finite floating-point values"
    if base in ("mask", "accumulated", "protected") and not ((array >= 0) & (array <= 1)).all():
        return "mask values outside [0, 1]"
    return None


def _check_projections(data: dict[str, np.ndarray], n_tasks: int, n_layers: int) -> tuple[dict, list[str]]:
    """Keep each layer's projections only if its rows name distinct (task, is-DTD) points."""
    kept, problems = {}, []
    for layer in range(n_layers):
        tasks, is_dtd = data.get(f"task_l{layer}"), data.get(f"dtd_l{layer}")
        if tasks is None or is_dtd is None:
            continue
        n = len(tasks) if tasks.ndim == 1 else -1
        ok = (tasks.ndim == 1 and tasks.dtype.kind in "iu" and is_dtd.shape == (n,) and is_dtd.dtype.kind in "biu"
              and ((tasks >= 0) & (tasks < n_tasks)).all()
              and len({(int(t), bool(d)) for t, d in zip(tasks, is_dtd)}) == n)
        coords = {m: data[f"{m}_l{layer}"] for m in ("pca", "umap") if f"{m}_l{layer}" in data}
        ok = ok and all(c.shape == (n, 2) and c.dtype.kind == "f" and np.isfinite(c).all() for c in coords.values())
        if not ok:
            problems.append(f"projections.npz: layer {layer} ignored (rows do not match); computed on demand instead")
            continue
        kept.update({f"task_l{layer}": tasks, f"dtd_l{layer}": is_dtd.astype(bool),
                     **{f"{m}_l{layer}": c for m, c in coords.items()}})
    return kept, problems


def load_run(folder: str | Path) -> Run:
    """Read any run folder; see the module docstring for what is tolerated and what is not.
    Raises nothing but ``RunFormatError``."""
    folder = Path(folder)
    problems: list[str] = []
    meta = read_meta(folder, problems)
    state = _read_log(folder, meta, problems)
    status, note = _status(state, meta)
    widths = list(meta["config"]["model"]["hidden"])
    budget = safeio.Budget()
    arrays = _read_arrays(folder, state, widths, budget, problems)
    projections: dict[str, np.ndarray] = {}
    try:
        projections, dropped = _check_projections(safeio.read_npz(folder, "projections.npz", budget=budget),
                                                  state.n_tasks, len(widths))
        problems += dropped
    except FileNotFoundError:
        pass  # computed on demand
    except safeio.UnsafeFile as exc:
        problems.append(f"projections.npz: unreadable ({exc}); projections will be computed on demand")
    summary = None
    try:
        summary = read_summary(folder)
    except ValueError as exc:  # safeio.UnsafeFile and records.BadRecord are ValueErrors too
        problems.append(f"summary.json: ignored ({str(exc)[:160]})")
    return Run(path=folder, meta=meta, state=state, status=status, arrays=arrays, projections=projections,
               summary=summary, warnings=tuple(problems), status_note=note)


def _read_log(folder: Path, meta: dict[str, Any], problems: list[str]) -> RunState:
    """The event log folded (up to ``safeio.MAX_EVENTS_BYTES``); an empty state when it is
    missing, unreadable, or written for another config than run.json's."""
    try:
        raw = safeio.read_bytes(folder, "events.jsonl", limit=safeio.MAX_EVENTS_BYTES, truncate=True)
    except FileNotFoundError:
        raw = b""
        problems.append("events.jsonl is missing: nothing was recorded")
    except safeio.UnsafeFile as exc:
        raw = b""
        problems.append(f"{exc}; nothing was read from it")
    if len(raw) >= safeio.MAX_EVENTS_BYTES:
        raw = raw[: raw.rfind(b"\n") + 1]
        problems.append(f"events.jsonl: only its first {safeio.MAX_EVENTS_BYTES // safeio.MiB} MiB were read")
    bad: list[str] = []
    state = apply_events(RunState(), iter_records(raw.decode("utf-8", errors="replace"), bad))
    del raw
    problems += bad + list(state.skipped)
    if state.n_skipped > len(state.skipped):
        problems.append(f"events.jsonl: {state.n_skipped - len(state.skipped)} more records skipped")
    if state.started is not None and state.config != meta["config"]:
        problems.append("events.jsonl: its config differs from run.json's; the event log is ignored")
        state = RunState()
    return state


def _status(state: RunState, meta: dict[str, Any]) -> tuple[str, str | None]:
    """The run's status, and why a run without a closing record counts as failed."""
    if state.end is not None:
        return state.end.status, None
    if meta.get(UPLOADED):
        return "failed", "uploaded without a closing record: it was still running, or its process was killed"
    if writer_alive(meta):
        return "running", None
    return "failed", "the run ended without a closing record (the process was killed or crashed)"


def _read_arrays(folder: Path, state: RunState, widths: list[int], budget: safeio.Budget,
                 problems: list[str]) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """Every array file the log names, each array checked against the run's shapes."""
    arrays: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for (kind, task), name in sorted(state.array_files.items()):
        try:
            data = safeio.read_npz(folder, name, budget=budget)
        except FileNotFoundError:
            problems.append(f"{name}: missing; its arrays are missing")
            continue
        except safeio.UnsafeFile as exc:
            problems.append(f"{exc}; its arrays are missing")
            continue
        where = Shape(task=task, layer=None, widths=tuple(widths), n_tasks=state.n_tasks, config=state.config or {},
                      input_dim=state.started.input_dim if state.started is not None else None)
        arrays[(kind, task)], dropped = _check_arrays(kind, task, data, widths, where)
        problems += dropped
    return arrays


def list_runs(root: str | Path) -> list[Path]:
    """Sub-folders of ``root`` that look like runs (a run.json or an events.jsonl), newest
    first. A folder with an event log but no run.json is listed too, so that it can say what
    is wrong. Never raises: an unreadable root or a folder that vanishes is left out."""
    def stamp(p: Path) -> float | None:
        for name in ("run.json", "events.jsonl"):
            try:
                if (p / name).is_file():
                    return (p / name).stat().st_mtime
            except OSError:
                return None
        return None

    try:
        children = [p for p in Path(root).iterdir() if p.is_dir()]
    except OSError:
        return []
    found = [(t, p) for p in children if (t := stamp(p)) is not None]
    return [p for _, p in sorted(found, key=lambda item: (-item[0], item[1].name))]
