"""Task-start checkpoints: what ``python -m prm whatif`` resumes a run from, never a pickle.

At the start of every task t >= 1 of a masked method (before t's DTD and embedding init)
the engine emits a :class:`prm.events.TaskCheckpoint`; the run writer stores it as
``checkpoints/task_<t>.safetensors`` (safetensors: a JSON header, then raw little-endian
tensor bytes; nothing in it can run code). It holds exactly what the engine carries from
one task to the next:

- ``model.<name>``: the network's ``state_dict`` (hidden layers, the task-embedding table
  of every task, every head), float32;
- ``mask.<i>.<l>``: task i's mask at s = smax of masked layer l, for every earlier task i
  (the accumulated mask is their elementwise max, recomputed exactly on resume);
- ``rng.torch``, ``rng.generator`` (and ``rng.cuda`` on a CUDA device): the states of torch's
  global generator (dropout, init) and of the engine's own (batch order), uint8;
- string metadata: format, version, task, and the SHA-256 of the run's config.

Reading one is hardened like every other run file (:mod:`prm.safeio`): a regular file inside
the run folder, opened once. The layout it must have comes from the run's config and the event
log's input size and class counts, each held to the engine's own limits (``prm.config``:
width, layers, weights; ``prm.records.MAX_TASKS``) before it sizes anything. The header is read
first and checked (exactly the expected names, dtypes and integer shapes for this run and task,
offsets that tile a body of the file's own size); only then are the tensor bytes read, and
the tensors built from them at the checked offsets. Anything else is a
:class:`RunFormatError` that says what is wrong; a file of another layout or size is refused
before any tensor byte is read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

from prm import methods, safeio
from prm.config import CATConfig, RunConfig
from prm.limits import MAX_INPUT, MAX_WEIGHTS
from prm.events import TaskCheckpoint
from prm.records import MAX_TASKS
from prm.run.errors import RunFormatError

FORMAT = "prm-checkpoint"
VERSION = "1"
MAX_HEADER_BYTES = safeio.MiB
"""The JSON header: about 100 bytes per tensor; a 1000-task, 8-layer checkpoint needs < 1 MB."""
MAX_CUDA_STATE_BYTES = safeio.MiB
"""The CUDA generator's state, the one size the file itself says (16 bytes in the builds seen)."""
_ITEMSIZE = {"F32": 4, "U8": 1}
_NUMPY = {"F32": np.dtype("<f4"), "U8": np.dtype("u1")}


_ADDED_LATER = {"prm": {"settle": 0, "settle_every": 5}, "cat": dataclasses.asdict(CATConfig()),
                **{m.sections[0]: dataclasses.asdict(m.settings()) for m in methods.REGISTRY.values()
                   if m.settings is not None}}
"""Config fields added after checkpoints existed, with their defaults: left out of the hash at
that value (and a section left empty so, such as ``cat`` or a baseline's own, with them), so
the checkpoints of runs recorded before them stay valid."""


def config_hash(config: RunConfig) -> str:
    """SHA-256 of the config as ``run.json`` holds it: a checkpoint belongs to one recipe."""
    data = config.to_dict()
    for section, fields in _ADDED_LATER.items():
        for name, default in fields.items():
            if data[section].get(name) == default:
                del data[section][name]
        if not data[section]:
            del data[section]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def capture(*, task: int, model: torch.nn.Module, task_masks: Sequence[Sequence[Tensor]],
            generator: torch.Generator, config: RunConfig, rng_torch: Tensor) -> TaskCheckpoint:
    """The engine's state at the start of ``task``, as copies (training goes on meanwhile).
    ``rng_torch``: the run's stream of torch's global generator (``prm.trainer.run_rng``)."""
    def copy(t: Tensor) -> Tensor:
        return t.detach().cpu().clone().contiguous()

    cuda = torch.cuda.get_rng_state(torch.device(config.device)) if config.device.startswith("cuda") else None
    return _event(task=task, model={k: copy(v) for k, v in model.state_dict().items()},
                  task_masks=[[copy(m) for m in masks] for masks in task_masks], rng_torch=rng_torch.clone(),
                  rng_generator=generator.get_state(), rng_cuda=cuda, config=config)


def event(point: "Checkpoint", *, config: RunConfig) -> TaskCheckpoint:
    """A checkpoint read back, as the event that wrote it: a what-if child replays its
    parent's checkpoints through its own writer."""
    return _event(task=point.task, model=point.model, task_masks=point.task_masks, rng_torch=point.rng_torch,
                  rng_generator=point.rng_generator, rng_cuda=point.rng_cuda, config=config)


def _event(*, task: int, model: dict[str, Tensor], task_masks: Sequence[Sequence[Tensor]], rng_torch: Tensor,
           rng_generator: Tensor, rng_cuda: Tensor | None, config: RunConfig) -> TaskCheckpoint:
    """The one place the tensor names and the metadata of a checkpoint file are spelt out."""
    tensors = {f"model.{k}": v for k, v in model.items()}
    for i, masks in enumerate(task_masks):
        tensors.update({f"mask.{i}.{l}": m for l, m in enumerate(masks)})
    tensors["rng.torch"] = rng_torch
    tensors["rng.generator"] = rng_generator
    if rng_cuda is not None:
        tensors["rng.cuda"] = rng_cuda
    metadata = {"format": FORMAT, "version": VERSION, "task": str(task), "config_sha256": config_hash(config)}
    return TaskCheckpoint(task=task, tensors=tensors, metadata=metadata)


def encode(event: TaskCheckpoint) -> bytes:
    """The file's bytes (the writer renames them into place)."""
    from safetensors.torch import save

    return save(event.tensors, metadata=event.metadata)


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """A checked checkpoint: the engine resumes ``task`` from it (``prm.engine.Resume``)."""

    task: int
    model: dict[str, Tensor]
    task_masks: tuple[tuple[Tensor, ...], ...]
    rng_torch: Tensor
    rng_generator: Tensor
    rng_cuda: Tensor | None = None


def expected(*, config: RunConfig, input_dim: int, head_sizes: Sequence[int], task: int) -> dict[str, tuple[str, tuple]]:
    """Every tensor a checkpoint of ``task`` must hold for this run: name -> (dtype, shape).
    RNG states are 1-D uint8 of the length this torch uses (CUDA: checked on use)."""
    widths = list(config.model.hidden)
    shapes: dict[str, tuple[str, tuple]] = {}
    for l, (a, b) in enumerate(zip([input_dim, *widths], widths)):
        shapes[f"model.layers.{l}.weight"] = ("F32", (b, a))
        shapes[f"model.layers.{l}.bias"] = ("F32", (b,))
    shapes["model.embedding.weight"] = ("F32", (len(head_sizes), sum(widths)))
    for j, n in enumerate(head_sizes):
        shapes[f"model.heads.{j}.weight"] = ("F32", (n, widths[-1]))
        shapes[f"model.heads.{j}.bias"] = ("F32", (n,))
    shapes.update({f"mask.{i}.{l}": ("F32", (w,)) for i in range(task) for l, w in enumerate(widths)})
    shapes["rng.torch"] = ("U8", tuple(torch.get_rng_state().shape))
    shapes["rng.generator"] = ("U8", tuple(torch.Generator().get_state().shape))
    return shapes


def read(folder: str | Path, task: int, *, config: RunConfig, input_dim: int, head_sizes: Sequence[int]) -> Checkpoint:
    """Load and check ``checkpoints/task_<task>.safetensors`` of the run in ``folder``.

    ``input_dim`` and ``head_sizes`` come from the run's event log, so they are held to the
    engine's limits before they size anything; the file is opened once, its header read and
    checked against the layout they imply, and only then the tensor bytes that layout needs.
    Raises ``FileNotFoundError`` when it is absent and ``RunFormatError`` (saying why) when it
    is not exactly a checkpoint of this run and task."""
    folder = Path(folder)
    name = TaskCheckpoint.file_name(task)
    where = f"{folder / name}"
    _check_limits(input_dim=input_dim, head_sizes=head_sizes, task=task, width=config.model.hidden[-1], where=where)
    shapes = expected(config=config, input_dim=input_dim, head_sizes=head_sizes, task=task)
    cuda = config.device.startswith("cuda")
    limit = 8 + MAX_HEADER_BYTES + _payload(shapes) + (MAX_CUDA_STATE_BYTES if cuda else 0)
    try:
        with safeio.opened(folder, name, limit=limit) as (handle, size):
            header, metadata = _header(handle, size, where)
            if cuda:  # required: without the CUDA generator's state a resumed GPU run would not be exact
                shapes["rng.cuda"] = ("U8", _cuda_shape(header.get("rng.cuda"), where))
            _check_names(header, shapes, task, where)
            _check_layout(header, shapes, size - handle.tell(), where)
            _check_metadata(metadata, task, config, where)
            body = _read_body(handle, size - handle.tell(), where)
    except safeio.UnsafeFile as exc:
        raise RunFormatError(f"{folder}: {exc}") from None
    tensors = _tensors(header, shapes, body)
    _check_values(tensors, where)
    return Checkpoint(
        task=task, model={k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")},
        task_masks=tuple(tuple(tensors[f"mask.{i}.{l}"] for l in range(len(config.model.hidden))) for i in range(task)),
        rng_torch=tensors["rng.torch"], rng_generator=tensors["rng.generator"], rng_cuda=tensors.get("rng.cuda"))


def _check_limits(*, input_dim: int, head_sizes: Sequence[int], task: int, width: int, where: str) -> None:
    """The event log's sizes held to what the engine itself allows, before they size a read.
    The config's widths and layers are already (``RunConfig`` validates them, weights counted
    for a ``MAX_INPUT`` input); a head is weights too, held to the same ``MAX_WEIGHTS``."""
    if not 1 <= input_dim <= MAX_INPUT:
        raise RunFormatError(f"{where}: the event log's input size {input_dim} is outside the engine's limits "
                             f"(1 to {MAX_INPUT}, MAX_INPUT); no checkpoint of it is read")
    if len(head_sizes) > MAX_TASKS or not 0 <= task < len(head_sizes):
        raise RunFormatError(f"{where}: the event log names {len(head_sizes)} tasks (at most {MAX_TASKS}, and more "
                             f"than task {task + 1}); no checkpoint of it is read")
    for j, n in enumerate(head_sizes):
        if n < 1:
            raise RunFormatError(f"{where}: the event log says task {j + 1} has {n} classes; "
                                 "no checkpoint of it is read")
    if sum(head_sizes) * width > MAX_WEIGHTS:
        raise RunFormatError(f"{where}: the event log's heads ({sum(head_sizes)} classes x {width} units) exceed the "
                             f"engine's {MAX_WEIGHTS:.0e} weights (MAX_WEIGHTS); no checkpoint of it is read")


def _payload(shapes: dict[str, tuple[str, tuple]]) -> int:
    """Bytes of tensors a file with these shapes holds."""
    return sum(math.prod(shape) * _ITEMSIZE[dtype] for dtype, shape in shapes.values())


def _header(handle: BinaryIO, size: int, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header's tensor entries and its string metadata, read (at most ``MAX_HEADER_BYTES``)
    before any tensor byte; ``handle`` is left where the tensors start."""
    if size < 8:
        raise RunFormatError(f"{where}: truncated ({size} bytes)")
    n = int.from_bytes(handle.read(8), "little")
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise RunFormatError(f"{where}: truncated or not a safetensors file (header of {n} bytes)")
    try:
        header = json.loads(handle.read(n))
    except (ValueError, RecursionError):
        raise RunFormatError(f"{where}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise RunFormatError(f"{where}: not a safetensors file")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise RunFormatError(f"{where}: its metadata is not strings")
    return header, metadata


def _cuda_shape(entry: Any, where: str) -> tuple[int]:
    """The CUDA generator state's shape, the one shape the header itself says: 1-D, of 1 to
    ``MAX_CUDA_STATE_BYTES`` bytes (its length depends on the CUDA build; checked on use)."""
    shape = entry.get("shape") if isinstance(entry, dict) else None
    if not (isinstance(shape, list) and len(shape) == 1 and type(shape[0]) is int
            and 1 <= shape[0] <= MAX_CUDA_STATE_BYTES):
        raise RunFormatError(f"{where}: rng.cuda is not a U8 tensor of shape (n,) with n from 1 to "
                             f"{MAX_CUDA_STATE_BYTES}")
    return (shape[0],)


def _check_names(header: dict[str, Any], shapes: dict[str, tuple[str, tuple]], task: int, where: str) -> None:
    missing, extra = sorted(set(shapes) - set(header)), sorted(set(header) - set(shapes))
    if missing or extra:
        raise RunFormatError(f"{where}: not a checkpoint of this run's task {task + 1}"
                             + (f"; missing {', '.join(missing[:5])}" if missing else "")
                             + (f"; unexpected {', '.join(e[:40] for e in extra[:5])}" if extra else ""))


def _check_layout(header: dict[str, Any], shapes: dict[str, tuple[str, tuple]], body: int, where: str) -> None:
    """Each tensor's dtype and shape exactly as this run implies (integers, not ``8.0`` or
    ``true``), aligned offsets that tile the body, and a body of the file's own size."""
    spans = []
    for key, (dtype, shape) in shapes.items():
        entry = header[key]
        ok = isinstance(entry, dict) and entry.get("dtype") == dtype and isinstance(entry.get("shape"), list) \
            and all(type(n) is int for n in entry["shape"]) and tuple(entry["shape"]) == shape \
            and isinstance(entry.get("data_offsets"), list) \
            and len(entry["data_offsets"]) == 2 and all(type(o) is int for o in entry["data_offsets"])
        if not ok:
            raise RunFormatError(f"{where}: {key} is not a {dtype} tensor of shape {shape}")
        start, end = entry["data_offsets"]
        if not 0 <= start <= end or end - start != math.prod(shape) * _ITEMSIZE[dtype] or start % _ITEMSIZE[dtype]:
            raise RunFormatError(f"{where}: {key} has offsets that do not match its shape")
        spans.append((start, end))
    position = 0
    for start, end in sorted(spans):
        if start != position:
            raise RunFormatError(f"{where}: tensors overlap or leave gaps")
        position = end
    if position != body:
        raise RunFormatError(f"{where}: truncated or padded ({body} bytes of tensors, {position} expected)")


def _check_metadata(metadata: dict[str, Any], task: int, config: RunConfig, where: str) -> None:
    want = {"format": FORMAT, "version": VERSION, "task": str(task), "config_sha256": config_hash(config)}
    wrong = [k for k, v in want.items() if metadata.get(k) != v]
    if wrong:
        raise RunFormatError(f"{where}: its metadata does not match this run and task ({', '.join(wrong)} differ"
                             + ("; the run's config changed since it was written" if wrong == ["config_sha256"] else "")
                             + ")")


def _read_body(handle: BinaryIO, nbytes: int, where: str) -> bytearray:
    """The tensor bytes, exactly as many as the checked layout needs (a file that shrank while
    read is truncated, not short tensors)."""
    body = bytearray(nbytes)
    if handle.readinto(body) != nbytes:
        raise RunFormatError(f"{where}: truncated while it was read")
    return body


def _tensors(header: dict[str, Any], shapes: dict[str, tuple[str, tuple]], body: bytearray) -> dict[str, Tensor]:
    """Each tensor as a view of ``body`` at its checked offsets; safetensors stores little-endian
    values, which ``_NUMPY``'s explicit byte order reads right on any machine (a view where the
    machine is little-endian, a copy elsewhere)."""
    out = {}
    for key, (dtype, shape) in shapes.items():
        start = header[key]["data_offsets"][0]
        array = np.frombuffer(body, dtype=_NUMPY[dtype], count=math.prod(shape), offset=start)
        out[key] = torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=False).reshape(shape))
    return out


def _check_values(tensors: dict[str, Tensor], where: str) -> None:
    """Finite weights, masks in [0, 1], generator states torch accepts."""
    for key, value in tensors.items():
        if value.dtype == torch.float32 and not torch.isfinite(value).all():
            raise RunFormatError(f"{where}: {key} holds non-finite values")
        if key.startswith("mask.") and not ((value >= 0) & (value <= 1)).all():
            raise RunFormatError(f"{where}: {key} has mask values outside [0, 1]")
    for key in ("rng.torch", "rng.generator"):
        try:
            torch.Generator().set_state(tensors[key])
        except RuntimeError as exc:
            raise RunFormatError(f"{where}: {key} is not a valid generator state ({str(exc)[:120]})") from None
