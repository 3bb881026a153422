"""Files of a run folder built to hurt the readers themselves (``prm.safeio``, ``prm.checkpoint``):
links inside the folder and a file swapped for a link while it is read, ``.npy`` headers
whose shape holds a zero next to a huge dimension, and checkpoints sized by an untrusted
event log. Each case ends in one clear error (or a warning), never in a traceback, never
in the outside file's bytes, never in a large allocation.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import sys
import threading
import tracemalloc
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from prm import checkpoint, safeio
from prm.config import ModelConfig, RunConfig
from prm.events import TaskCheckpoint
from prm.run import RunFormatError, load_run

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_runs" / "digits-classes-prm-s0"
GiB = 2**30


# ----------------------------------------------------------------------------- links and swaps


def _npz(values) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array(values, dtype=np.float32))
    return buffer.getvalue()


INSIDE, OUTSIDE = _npz([1, 2, 3]), _npz([6, 6, 6])

READERS = {
    "read_bytes": lambda folder, name: safeio.read_bytes(folder, name, limit=safeio.MiB),
    "read_tail": lambda folder, name: safeio.read_tail(folder, name, nbytes=safeio.MiB),
    "read_text": lambda folder, name: safeio.read_text(folder, name),
    "read_npz": lambda folder, name: safeio.read_npz(folder, name, budget=safeio.Budget()),
}


@pytest.fixture
def tree(tmp_path) -> dict[str, Path]:
    """A run folder holding ``arrays/task_000.npz`` and ``arrays/other.npz``, and a folder
    beside it holding ``secret/task_000.npz`` with other bytes."""
    run, secret = tmp_path / "runs" / "run", tmp_path / "secret"
    (run / "arrays").mkdir(parents=True)
    secret.mkdir()
    for path in (run / "arrays" / "task_000.npz", run / "arrays" / "other.npz", run / "spare" / "task_000.npz"):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(INSIDE)
    (secret / "task_000.npz").write_bytes(OUTSIDE)
    return {"run": run, "secret": secret}


LINKS = {  # what is replaced by a link, and where the link points (outside the folder or inside it)
    "file-out": ("arrays/task_000.npz", lambda t: t["secret"] / "task_000.npz"),
    "file-in": ("arrays/task_000.npz", lambda t: Path("other.npz")),
    "folder-out": ("arrays", lambda t: t["secret"]),
    "folder-in": ("arrays", lambda t: Path("spare")),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("link", LINKS)
def test_a_link_inside_the_run_folder_is_refused_on_open(tree, reader, link):
    replaced, target = LINKS[link]
    path = tree["run"] / replaced
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    path.symlink_to(target(tree))
    with pytest.raises(safeio.UnsafeFile, match="links are never followed") as caught:
        READERS[reader](tree["run"], "arrays/task_000.npz")
    message = str(caught.value)
    assert message.startswith("arrays/task_000.npz: ") and "\n" not in message
    assert ("outside the run folder" in message) == link.endswith("-out")


@pytest.mark.parametrize("reader", READERS)
def test_a_run_folder_reached_through_a_link_is_read(tree, reader):
    """The folder is the user's choice: links in its own path are followed."""
    link = tree["run"].parent.parent / "runs-link"
    link.symlink_to(tree["run"].parent)
    got = READERS[reader](link / "run", "arrays/task_000.npz")
    if reader == "read_npz":
        assert np.array_equal(got["x"], [1, 2, 3])
    else:
        assert got in (INSIDE, INSIDE.decode(errors="replace"))


SWAPS, READS = 200_000, 3000


def test_a_file_swapped_for_a_link_while_read_never_yields_the_outside_bytes(tree):
    """A thread swaps the file and a link to a file outside, atomically, while it is read."""
    run, name = tree["run"], "arrays/task_000.npz"
    stop = threading.Event()

    def swap() -> None:
        for i in range(SWAPS):
            if stop.is_set():
                return
            spare = run / "arrays" / f"swap-{i % 2}"
            spare.write_bytes(INSIDE) if i % 2 else spare.symlink_to(tree["secret"] / "task_000.npz")
            os.replace(spare, run / name)

    seen: Counter = Counter()
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so reads and swaps interleave finely
    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    try:
        for _ in range(READS):
            try:
                data = safeio.read_bytes(run, name, limit=safeio.MiB)
            except safeio.UnsafeFile:
                seen["refused"] += 1
                continue
            seen["outside" if data == OUTSIDE else "inside" if data == INSIDE else "other"] += 1
    finally:
        stop.set()
        swapper.join()
        sys.setswitchinterval(old)
    assert seen["outside"] == 0 and seen["other"] == 0, seen
    assert seen["refused"] and seen["inside"], f"the swap never took effect: {seen}"


# ----------------------------------------------------------------------------- .npy shapes


def _npy(shape: tuple, payload: bytes = b"") -> bytes:
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, dtype="<f4"))
    header["shape"] = shape
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + payload


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


HUGE_SHAPES = [(0, 10**30), (0, 2**62), (2**62, 0), (0, 0, 2**63), (0, safeio.MAX_DIM + 1)]


@pytest.mark.parametrize("shape", HUGE_SHAPES, ids=str)
def test_an_npy_shape_with_a_zero_and_a_huge_dimension_is_refused(tmp_path, shape):
    (tmp_path / "a.npz").write_bytes(_zip({"x.npy": _npy(shape)}))
    with pytest.raises(safeio.UnsafeFile, match=r"a\.npz:x: shape .* is not allowed"):
        safeio.read_npz(tmp_path, "a.npz", budget=safeio.Budget())


def test_the_largest_dimension_allowed_is_still_read(tmp_path):
    (tmp_path / "a.npz").write_bytes(_zip({"x.npy": _npy((safeio.MAX_DIM, 0))}))
    assert safeio.read_npz(tmp_path, "a.npz", budget=safeio.Budget())["x"].shape == (safeio.MAX_DIM, 0)


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"{SAMPLE} is missing")
def test_a_run_with_a_huge_npy_shape_loads_with_a_warning(tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(SAMPLE, folder)
    path = folder / "arrays" / "task_000.npz"
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    members["mask_l0.npy"] = _npy((0, 10**30))
    path.write_bytes(_zip(members))
    run = load_run(folder)
    assert run.mask(0, 0) is None and run.mask(1, 0) is not None
    assert any("task_000.npz" in w and "is not allowed" in w for w in run.warnings)


# ----------------------------------------------------------------------------- checkpoints


CONFIG = RunConfig(sequence="digits-mixed", n_tasks=3, method="prm", seed=0, model=ModelConfig(hidden=(8, 8)))
INPUT, HEADS = 64, [1, 10, 2]


def _point(config: RunConfig, task: int) -> checkpoint.Checkpoint:
    """A valid checkpoint of ``task`` for ``config`` (random weights, masks of 0.5; real RNG states)."""
    shapes = checkpoint.expected(config=config, input_dim=INPUT, head_sizes=HEADS, task=task)
    return checkpoint.Checkpoint(
        task=task, model={k[len("model."):]: torch.randn(s) for k, (_, s) in shapes.items() if k.startswith("model.")},
        task_masks=tuple(tuple(torch.full((w,), 0.5) for w in config.model.hidden) for _ in range(task)),
        rng_torch=torch.get_rng_state(), rng_generator=torch.Generator().get_state(),
        rng_cuda=torch.zeros(16, dtype=torch.uint8) if config.device.startswith("cuda") else None)


def _checkpoint(config: RunConfig, task: int) -> bytes:
    return checkpoint.encode(checkpoint.event(_point(config, task), config=config))


def _write(folder: Path, task: int, data: bytes, *, size: int | None = None) -> Path:
    """The checkpoint file of ``task`` holding ``data``, then (sparse) extended to ``size``."""
    path = folder / TaskCheckpoint.file_name(task)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if size is not None:
        os.truncate(path, size)
    return path


def _layout_only(config: RunConfig, task: int, input_dim: int) -> tuple[bytes, int]:
    """The 8-byte length and the header of a checkpoint with this layout (without its
    tensors), and the bytes of tensors that should follow."""
    shapes = checkpoint.expected(config=config, input_dim=input_dim, head_sizes=HEADS, task=task)
    header, position = {}, 0
    for key, (dtype, shape) in shapes.items():
        end = position + math.prod(shape) * (4 if dtype == "F32" else 1)
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [position, end]}
        position = end
    header["__metadata__"] = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "task": str(task),
                              "config_sha256": checkpoint.config_hash(config)}
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text, position


def _peak(action) -> tuple[int, BaseException | None]:
    """The peak of Python allocations while ``action`` runs, and what it raised."""
    raised = None
    tracemalloc.start()
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - the caller checks what it was
        raised = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, raised


def test_a_valid_checkpoint_loads(tmp_path):
    written = _point(CONFIG, 2)
    _write(tmp_path, 2, checkpoint.encode(checkpoint.event(written, config=CONFIG)))
    point = checkpoint.read(tmp_path, 2, config=CONFIG, input_dim=INPUT, head_sizes=HEADS)
    assert point.task == 2 and point.model.keys() == written.model.keys()
    assert all(torch.equal(point.model[k], v) for k, v in written.model.items())
    assert all(torch.equal(a, b) for read, wrote in zip(point.task_masks, written.task_masks, strict=True)
               for a, b in zip(read, wrote, strict=True))
    assert torch.equal(point.rng_torch, written.rng_torch) and torch.equal(point.rng_generator, written.rng_generator)
    checkpoint.encode(checkpoint.event(point, config=CONFIG))  # a what-if child writes it again when it replays it


def test_an_input_size_beyond_the_engines_limit_is_refused_before_the_checkpoint_is_read(tmp_path):
    """The event log's input_dim (10^7) no longer sizes the read: the 1 GiB file (less than
    the 1.3 GB such a layout would need) is never read."""
    config = CONFIG.replace(model=ModelConfig(hidden=(32, 32)))
    _write(tmp_path, 1, _layout_only(config, 1, INPUT)[0], size=GiB)
    peak, exc = _peak(lambda: checkpoint.read(tmp_path, 1, config=config, input_dim=10**7, head_sizes=HEADS))
    assert isinstance(exc, RunFormatError) and "input size 10000000" in str(exc), exc
    assert peak < 8 * safeio.MiB, f"{peak / safeio.MiB:.0f} MiB allocated"


@pytest.mark.parametrize("end, message", [("1-GiB", "MiB allowed"), ("padded", "truncated or padded"),
                                          ("truncated", "truncated or padded")])
def test_a_checkpoint_whose_size_differs_from_its_layout_is_refused_from_its_header(tmp_path, end, message):
    """A wide network (within the engine's limits) whose header is right but whose file is
    not: refused from the file's size and its header, before any tensor byte is read."""
    wide = CONFIG.replace(model=ModelConfig(hidden=(8192, 8192)))  # a payload of about 370 MB
    header, body = _layout_only(wide, 1, 3072)
    size = {"1-GiB": GiB, "padded": len(header) + body + 4096, "truncated": len(header) + body // 2}[end]
    _write(tmp_path, 1, header, size=size)
    peak, exc = _peak(lambda: checkpoint.read(tmp_path, 1, config=wide, input_dim=3072, head_sizes=HEADS))
    assert isinstance(exc, RunFormatError) and message in str(exc), exc
    assert peak < 8 * safeio.MiB, f"{peak / safeio.MiB:.0f} MiB allocated"


def _with_entry(data: bytes, key: str, **changes) -> bytes:
    """The checkpoint with header entry ``key`` changed (the tensor bytes kept)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header[key].update(changes)
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


BAD_SHAPES = [[8.0], [True], [0], [-8], [10**30], ["8"], [[8]], [8, 0], [0, 10**30], 8]


@pytest.mark.parametrize("shape", BAD_SHAPES, ids=str)
@pytest.mark.parametrize("key", ["model.layers.0.bias", "model.heads.0.bias"])
def test_a_checkpoint_tensor_with_a_crafted_shape_is_refused(tmp_path, key, shape):
    _write(tmp_path, 1, _with_entry(_checkpoint(CONFIG, 1), key, shape=shape))
    with pytest.raises(RunFormatError, match=f"{key} is not a F32 tensor of shape"):
        checkpoint.read(tmp_path, 1, config=CONFIG, input_dim=INPUT, head_sizes=HEADS)


@pytest.mark.parametrize("shape", [*BAD_SHAPES, [16.0], [2, 8], [True] * 16], ids=str)
def test_a_cuda_generator_state_with_a_crafted_shape_is_refused(tmp_path, shape):
    cuda = CONFIG.replace(device="cuda")
    _write(tmp_path, 1, _with_entry(_checkpoint(cuda, 1), "rng.cuda", shape=shape))
    with pytest.raises(RunFormatError, match="rng.cuda is not a U8 tensor of shape"):
        checkpoint.read(tmp_path, 1, config=cuda, input_dim=INPUT, head_sizes=HEADS)


def test_a_cuda_generator_state_is_read(tmp_path):
    cuda = CONFIG.replace(device="cuda")
    _write(tmp_path, 1, _checkpoint(cuda, 1))
    point = checkpoint.read(tmp_path, 1, config=cuda, input_dim=INPUT, head_sizes=HEADS)
    assert point.rng_cuda is not None and point.rng_cuda.shape == (16,)


@pytest.mark.parametrize("what, change, message", [
    ("tasks", lambda: {"head_sizes": [2] * 1001}, "1001 tasks"),
    ("classes", lambda: {"head_sizes": [10**8, 2, 2]}, "heads"),
    ("no-class", lambda: {"head_sizes": [0, 2, 2]}, "task 1 has 0 classes"),
    ("no-input", lambda: {"input_dim": 0}, "input size 0"),
])
def test_a_layout_beyond_the_engines_limits_is_refused_before_reading(tmp_path, what, change, message):
    _write(tmp_path, 1, b"\0" * 64, size=GiB)
    arguments = {"config": CONFIG, "input_dim": INPUT, "head_sizes": HEADS, **change()}
    peak, exc = _peak(lambda: checkpoint.read(tmp_path, 1, **arguments))
    assert isinstance(exc, RunFormatError) and message in str(exc), exc
    assert peak < 8 * safeio.MiB, f"{peak / safeio.MiB:.0f} MiB allocated"
