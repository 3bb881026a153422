"""Round-2 audit of the data readers (D01, D02, D04, D05, D06; A01, A02): a data file is read only
as a regular file, opened non-blocking and bounded in size before it is read; an IDX header
promises at most what the supported data sets hold and a short stream costs no more than its
own bytes; a ``~user`` path that cannot be expanded is one clear error (data folder, runs folder,
Train live's data folder); a LEAF user id that is no valid text is refused naming its file.

Every test builds tiny files here and goes through the public entry points (``make_sequence``,
``read_idx``, the CLI's ``main``, the app) or the one helper they share (``data_file``)."""

from __future__ import annotations

import gzip
import json
import os
import pwd
import re
import threading
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from explorer import state as keys
from explorer.figures.common import md
from prm.cli import main
from prm.data import DATA_ENV, DataError, make_sequence
from prm.datasets import core, idx, leaf
from tests.test_datasets_files import (CELEBA_MIN, FEMNIST_MIN, SIZES, leaf_doc, write_celeba, write_emnist,
                                      write_femnist)

EMNIST_TRAIN_IMAGES = "emnist-balanced-train-images-idx3-ubyte.gz"


def no_such_user() -> str:
    """A user name this machine does not know (so ``~name`` cannot be expanded)."""
    for k in range(1000):
        name = f"prm_no_such_user_{k}"
        try:
            pwd.getpwnam(name)
        except KeyError:
            return name
    raise AssertionError("every candidate user name exists")


@contextmanager
def feeding(fifo: Path, data: bytes):
    """A writer that puts ``data`` (less than a pipe's 64 kB buffer, so writing never waits for
    a reader) into ``fifo`` once a reader opens it: a reader that opens the FIFO gets the data
    and returns instead of hanging (so the old code fails, not hangs). On exit a writer still
    waiting for a reader is released by opening the read end non-blocking."""
    assert len(data) < 2**16

    def write():
        with open(fifo, "wb") as f:
            f.write(data)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        yield
    finally:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        writer.join()
        os.close(fd)


def small_femnist_doc() -> bytes:
    """One writer of FEMNIST_MIN blank images and two labels: a valid file of about 24 kB."""
    return json.dumps(leaf_doc({"w": ([[0] * 784] * FEMNIST_MIN, [k % 2 for k in range(FEMNIST_MIN)])})).encode()


def femnist_json_only(root: Path) -> Path:
    """A FEMNIST folder whose second file is removed; returns the path of the first."""
    folder = write_femnist(root)
    (folder / "all_data_1.json").unlink()
    return folder / "all_data_0.json"


def femnist_error(root: Path, *, n: int = 1) -> str:
    with pytest.raises(DataError) as info:
        make_sequence("F-EMNIST-10T", data_dir=root, n_tasks=n, min_samples=FEMNIST_MIN)
    return str(info.value)


# --------------------------------------------------------------------------- D01, D02: LEAF file rules


def test_a_femnist_json_that_is_a_fifo_is_refused_without_reading_it(tmp_path):
    """D01: a FIFO blocked ``prm run`` for ever (read_bytes waits for a writer that never comes)."""
    path = femnist_json_only(tmp_path)
    path.unlink()
    os.mkfifo(path)
    with feeding(path, small_femnist_doc()):
        msg = femnist_error(tmp_path)
    assert str(path) in msg and "not a regular file" in msg, msg


def test_a_femnist_json_linked_to_a_device_is_refused(tmp_path):
    """D02: a link to /dev/zero was read until memory ran out; a device is never read (the
    descriptor is checked first). /dev/null stands in for it: the old reader read it as empty
    JSON, so this fails without exhausting memory."""
    path = femnist_json_only(tmp_path)
    path.unlink()
    path.symlink_to("/dev/null")
    msg = femnist_error(tmp_path)
    assert str(path) in msg and "not a regular file" in msg and "/dev/null" in msg, msg


def test_a_femnist_json_over_the_size_bound_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    path = femnist_json_only(tmp_path)
    monkeypatch.setattr(leaf, "MAX_JSON_BYTES", path.stat().st_size - 1, raising=False)
    msg = femnist_error(tmp_path)
    assert str(path) in msg and "more than the" in msg, msg


def test_a_femnist_json_that_is_a_folder_is_refused(tmp_path):
    path = femnist_json_only(tmp_path)
    (path.parent / "more.json").mkdir()
    msg = femnist_error(tmp_path, n=5)  # more writers than the good file holds: the folder is reached
    assert "more.json" in msg and "not a regular file" in msg, msg


def test_links_the_user_made_in_a_data_folder_are_followed(tmp_path):
    """A data folder is the user's own: a link to a shared copy of a file is read like the file."""
    shared = femnist_json_only(tmp_path / "shared")
    mine = tmp_path / "mine" / "femnist" / "data" / "all_data"
    mine.mkdir(parents=True)
    (mine / "all_data_0.json").symlink_to(shared)
    seq = make_sequence("F-EMNIST-10T", data_dir=tmp_path / "mine", n_tasks=2, min_samples=FEMNIST_MIN)
    assert len(seq.tasks) == 2


def test_celeba_images_are_read_under_the_data_file_rules(tmp_path, monkeypatch):
    """An image that is a FIFO was reported missing (a FIFO swapped in after that check would
    have blocked Pillow); an oversized image was decoded whatever its size."""
    image = write_celeba(tmp_path / "fifo") / "raw" / "img_align_celeba" / "000001.jpg"
    image.unlink()
    os.mkfifo(image)
    with pytest.raises(DataError, match=re.escape(f"{image}: not a regular file")):
        make_sequence("F-CelebA-10T", data_dir=tmp_path / "fifo", n_tasks=3, min_samples=CELEBA_MIN)
    image = write_celeba(tmp_path / "large") / "raw" / "img_align_celeba" / "000001.jpg"
    monkeypatch.setattr(leaf, "MAX_IMAGE_BYTES", image.stat().st_size - 1, raising=False)
    with pytest.raises(DataError, match=re.escape(f"{image}: ") + ".* more than the"):
        make_sequence("F-CelebA-10T", data_dir=tmp_path / "large", n_tasks=3, min_samples=CELEBA_MIN)


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "missing", "loop", "large"])
def test_data_file_opens_only_bounded_regular_files(tmp_path, kind):
    """The one opener every reader of ``prm/datasets`` uses: each refusal is a DataError naming
    the path as given (the FIFO is never opened for a blocking read: no writer exists here)."""
    path = tmp_path / "data.bin"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/null")  # not /dev/zero: a reader that regressed would read it for ever
    elif kind == "folder":
        path.mkdir()
    elif kind == "loop":
        path.symlink_to(path)
    elif kind == "large":
        path.write_bytes(bytes(11))
    with pytest.raises(DataError) as info:
        with core.data_file(path, limit=10) as (handle, _):
            handle.read()
    assert str(path) in str(info.value), info.value


def test_data_file_reads_a_regular_file_through_a_link(tmp_path):
    real = tmp_path / "real.bin"
    real.write_bytes(b"0123456789")
    (tmp_path / "link.bin").symlink_to(real)
    with core.data_file(tmp_path / "link.bin", limit=10) as (handle, size):
        assert (size, handle.read()) == (10, b"0123456789")


# --------------------------------------------------------------------------- D06: IDX bounds


def test_an_idx_header_promising_more_images_than_any_supported_file_is_refused(tmp_path):
    """D06: 1,360,000 promised images (under the old bound of 2**30 values) cost 2.3 GB; the bound
    is now what the supported data sets hold, and the header alone is refused."""
    folder = tmp_path / "gzip"
    write_emnist(folder)
    promised = 1_360_000  # the audit's file
    header = bytes([0, 0, 8, 3]) + np.array([promised, 28, 28], ">u4").tobytes()
    (folder / EMNIST_TRAIN_IMAGES).write_bytes(gzip.compress(header + bytes(784)))
    with pytest.raises(DataError) as info:
        make_sequence("EMNIST-10T", data_dir=tmp_path, sizes=SIZES)
    msg = str(info.value)
    assert EMNIST_TRAIN_IMAGES in msg and f"{promised} images" in msg, msg


@pytest.mark.parametrize("gz", [True, False])
def test_a_short_idx_stream_costs_only_its_own_bytes(tmp_path, gz):
    """A header promising 100,000 images (fewer than EMNIST's training file) over a 1 kB payload:
    the reader grows with what it reads and stops at the end, instead of reserving the promise
    up front (a plain file is even checked against its size before it is read)."""
    n = 100_000
    path = tmp_path / ("images-idx3-ubyte.gz" if gz else "images-idx3-ubyte")
    payload = bytes([0, 0, 8, 3]) + np.array([n, 28, 28], ">u4").tobytes() + bytes(1000)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=rf"is truncated: header promises {n * 784} values"):
            idx.read_idx(path, ndim=3, shape_tail=(28, 28))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < n * 784 / 10, peak


# --------------------------------------------------------------------------- D04, A01, A02: ~user paths


def test_an_unknown_users_home_in_the_data_folder_is_a_data_error(monkeypatch):
    user = no_such_user()
    with pytest.raises(DataError, match=f"~{user}"):
        core.resolve_data_dir(f"~{user}/data")
    monkeypatch.setenv(DATA_ENV, f"~{user}")
    with pytest.raises(DataError, match=f"data folder .*{DATA_ENV}.*~{user}"):
        make_sequence("F-EMNIST-10T")


def test_prm_run_with_an_unknown_users_data_folder_is_one_error_line(tmp_path, capsys):
    """D04: even the bundled digits sequences, which read no data folder, name the bad option."""
    user = no_such_user()
    with pytest.raises(SystemExit) as info:
        main(["run", "--sequence", "digits-classes", "--n-tasks", "2", "--epochs", "1", "--quiet",
              "--data-dir", f"~{user}/data", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("prm: error:") and err.count("\n") == 1, err
    assert f"~{user}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_an_unknown_users_runs_folder_is_a_clear_value_error(tmp_path, monkeypatch):
    """A01: the sidebar's runs folder and PRM_EXPLORER_RUNS (the default) alike."""
    user = no_such_user()
    with pytest.raises(ValueError, match=f"runs folder '~{user}/runs'"):
        keys.runs_root(f"~{user}/runs", tmp_path)
    monkeypatch.setattr(keys, "DEFAULT_RUNS_DIR", f"~{user}")
    with pytest.raises(ValueError, match=f"runs folder '~{user}'"):
        keys.runs_root("", tmp_path)
    assert keys.runs_root("runs", tmp_path) == tmp_path / "runs"


def test_train_live_with_an_unknown_users_data_folder_shows_an_error(tmp_path):
    """A02: the form's data folder cannot be expanded: an error under the field, no exception."""
    from tests.test_live_view import open_live

    user = no_such_user()
    at = open_live(tmp_path, **{"live-data-dir": f"~{user}/data"})
    assert any(md(f"~{user}/data") in e.value for e in at.error), [e.value for e in at.error]


# --------------------------------------------------------------------------- D05: user ids


def test_a_femnist_user_id_with_a_lone_surrogate_is_refused_naming_the_file(tmp_path):
    """D05: ``"x\\ud800"`` is valid JSON but no text: it failed only when printed."""
    path = femnist_json_only(tmp_path)
    doc = json.loads(path.read_text())
    users = {("x\ud800" if u == "f0_01" else u): (d["x"], d["y"]) for u, d in doc["user_data"].items()}
    path.write_text(json.dumps(leaf_doc(users)))  # ensure_ascii writes the escape "\ud800"
    msg = femnist_error(tmp_path)
    assert str(path) in msg and "not valid text" in msg, msg
    msg.encode("utf-8")  # the message itself prints
