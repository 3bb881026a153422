"""The paper's data sets read from tiny files written here in each exact published format.

EMNIST (gzip IDX), CIFAR-100 (binary records), FEMNIST and CelebA (LEAF JSON,
CelebA with JPEG images). Every test goes through ``make_sequence`` with tiny
per-task ``sizes``/``min_samples``; malformed and truncated variants must give
one DataError naming what was expected where.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil

import numpy as np
import pytest
import torch

from prm.data import DataError, available_sequences, make_sequence
from prm.datasets import idx

SIZES = (10, 5, 5)  # per task, for EMNIST-10T and CIFAR100-10T
EMNIST_TRAIN, EMNIST_TEST = 6, 2  # images per class in the tiny files
FEMNIST_MIN, CELEBA_MIN = 10, 8


# --------------------------------------------------------------------------- writers


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_emnist(folder, *, images=None, n_classes=47, rng=None):
    """The four EMNIST balanced files; returns the stored (transposed) train images and labels."""
    rng = rng or np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    stored = {}
    for part, per in (("train", EMNIST_TRAIN), ("test", EMNIST_TEST)):
        y = np.repeat(np.arange(n_classes), per).astype(np.uint8)
        rng.shuffle(y)
        x = rng.integers(0, 256, (len(y), 28, 28), dtype=np.uint8) if images is None else images
        (folder / f"emnist-balanced-{part}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x)))
        (folder / f"emnist-balanced-{part}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y)))
        stored[part] = (x, y)
    return stored


def write_cifar(folder, *, per_train=3, per_test=1, record=3074):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    out = {}
    for name, per in (("train.bin", per_train), ("test.bin", per_test)):
        fine = np.repeat(np.arange(100), per)
        rec = rng.integers(0, 256, (len(fine), record), dtype=np.uint8)
        rec[:, 0], rec[:, 1] = fine // 5, fine
        (folder / name).write_bytes(rec.tobytes())
        out[name] = rec
    return out


def leaf_doc(users: dict[str, tuple[list, list]]) -> dict:
    return {
        "users": list(users),
        "num_samples": [len(y) for _, y in users.values()],
        "user_data": {u: {"x": x, "y": y} for u, (x, y) in users.items()},
    }


def write_femnist(root, *, n_users=8, per_user=12, rng=None):
    """Two all_data files; pixels as LEAF stores them (white paper = 1.0)."""
    rng = rng or np.random.default_rng(2)
    folder = root / "femnist" / "data" / "all_data"
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(2):
        users = {}
        for u in range(n_users // 2):
            m = per_user if u else 4  # the first user of each file is too small to be chosen
            ink = rng.random((m, 784)) < 0.1
            users[f"f{f}_{u:02d}"] = (np.where(ink, 0.0, 1.0).round(3).tolist(), rng.integers(0, 62, m).tolist())
        (folder / f"all_data_{f}.json").write_text(json.dumps(leaf_doc(users)))
    return folder


def write_celeba(root, *, n_users=3, per_user=10):
    from PIL import Image

    base = root / "celeba" / "data"
    images = base / "raw" / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    (base / "all_data").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    users, k = {}, 0
    for u in range(n_users):
        names = []
        for _ in range(per_user):
            k += 1
            names.append(f"{k:06d}.jpg")
            Image.fromarray(rng.integers(0, 256, (40, 33, 3), dtype=np.uint8)).save(images / names[-1])
        users[f"celeb{u}"] = (names, [i % 2 for i in range(per_user)])
    (base / "all_data" / "all_data.json").write_text(json.dumps(leaf_doc(users)))
    return base


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """One folder with all four data sets in their documented layout."""
    root = tmp_path_factory.mktemp("data")
    stored = write_emnist(root / "gzip")
    write_cifar(root / "cifar-100-binary")
    write_femnist(root)
    write_celeba(root)
    return root, stored


def tensors(seq):
    return [getattr(t, f"{a}_{p}") for t in seq.tasks for a in "xy" for p in ("train", "val", "test")]


# --------------------------------------------------------------------------- EMNIST


def test_emnist_tasks_sizes_and_transpose(data_root):
    root, stored = data_root
    seq = make_sequence("EMNIST-10T", data_dir=root, sizes=SIZES)
    assert seq.input_dim == 784 and len(seq.tasks) == 10
    assert sorted(t.n_classes for t in seq.tasks) == [4, 4, 4] + [5] * 7
    assert sorted(c for t in seq.tasks for c in t.classes) == list(range(47))
    x_train, y_train = stored["train"]
    x_test, _ = stored["test"]
    for t in seq.tasks:
        assert t.family == "classes"
        assert t.describe()["sizes"] == {"train": 10, "val": 5, "test": 5}
        train, val, test = (list(r) for r in t.rows)
        assert not set(train) & set(val)
        # images are transposed back: upright row-major, scaled to [0, 1]
        want = torch.from_numpy(x_train[train].transpose(0, 2, 1).reshape(len(train), -1) / np.float32(255))
        assert torch.allclose(t.x_train, want)
        assert torch.allclose(t.x_test, torch.from_numpy(x_test[test].transpose(0, 2, 1).reshape(len(test), -1) / np.float32(255)))
        assert [t.classes[k] for k in t.y_train.tolist()] == y_train[train].tolist()
        assert sorted(np.bincount(t.y_train.numpy()).tolist()) in ([2] * 5, [2, 2, 3, 3])  # class-balanced


def test_emnist_found_in_plain_folder_and_too_few_images(tmp_path):
    write_emnist(tmp_path)
    assert len(make_sequence("EMNIST-10T", data_dir=tmp_path, sizes=SIZES, n_tasks=2).tasks) == 2
    with pytest.raises(DataError, match=r"EMNIST-10T training file: class \d+ has 6 images, needs 7"):
        make_sequence("EMNIST-10T", data_dir=tmp_path, sizes=(20, 15, 5))
    with pytest.raises(DataError, match="EMNIST-10T training file: class"):
        make_sequence("EMNIST-10T", data_dir=tmp_path)  # the paper's 500/200/200 need 2400-image files


def _emnist_variant(tmp_path, change):
    folder = tmp_path / "gzip"
    write_emnist(folder)
    change(folder)
    with pytest.raises(DataError) as info:
        make_sequence("EMNIST-10T", data_dir=tmp_path, sizes=SIZES)
    return str(info.value)


def test_emnist_missing_file_names_file_and_folder(tmp_path):
    msg = _emnist_variant(tmp_path, lambda f: (f / "emnist-balanced-test-labels-idx1-ubyte.gz").unlink())
    assert msg == (
        f"EMNIST-10T needs emnist-balanced-test-labels-idx1-ubyte.gz in {tmp_path} (or {tmp_path / 'gzip'}); "
        "download the EMNIST 'gzip' archive from NIST and unpack it there"
    )


def _rewrite(path, edit):
    path.write_bytes(gzip.compress(edit(gzip.decompress(path.read_bytes()))))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda b: b[:-100], r"is truncated: header promises 221088 values \(282, 28, 28\), file has 220988"),
        (lambda b: b + b"\0", r"longer than its header says"),
        (lambda b: b"\x00\x00\x0d\x03" + b[4:], r"not an IDX file of unsigned bytes \(bad magic number 00000d03\)"),
        (lambda b: b[:3] + b"\x02" + b[4:], r"has 2 dimensions, expected 3"),
        (lambda b: b[:12] + np.array([27], ">u4").tobytes() + b[16:], r"shape \(28, 27\), expected \(28, 28\)"),
        (lambda b: b[:6], r"is truncated: the header needs 16 bytes"),
    ],
)
def test_emnist_malformed_images(tmp_path, edit, message):
    name = "emnist-balanced-train-images-idx3-ubyte.gz"
    msg = _emnist_variant(tmp_path, lambda f: _rewrite(f / name, edit))
    assert name in msg
    assert re.search(message, msg), msg


def test_emnist_header_claiming_a_huge_count_or_a_gzip_bomb(tmp_path):
    """The reader stops at what the header promises (at most MAX_IMAGES): no huge allocation."""
    name = "emnist-balanced-train-images-idx3-ubyte.gz"
    huge = np.array([2**31], ">u4").tobytes()
    msg = _emnist_variant(tmp_path, lambda f: _rewrite(f / name, lambda b: b[:4] + huge + b[8:]))
    assert name in msg and f"more than the {idx.MAX_IMAGES} this reader accepts" in msg
    bomb = bytes([0, 0, 8, 1]) + np.array([94], ">u4").tobytes() + bytes(64 * 2**20)  # 64 MB of zeros, ~64 kB gzipped
    msg = _emnist_variant(tmp_path / "b", lambda f: (f / "emnist-balanced-test-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(bomb, compresslevel=1)))
    assert "longer than its header says" in msg


def test_emnist_bad_gzip_label_count_and_range(tmp_path):
    msg = _emnist_variant(tmp_path, lambda f: (f / "emnist-balanced-test-images-idx3-ubyte.gz").write_bytes(b"not gzip"))
    assert "is not a readable gzip IDX file" in msg
    msg = _emnist_variant(tmp_path, lambda f: _rewrite(f / "emnist-balanced-test-labels-idx1-ubyte.gz",
                                                     lambda b: b[:4] + np.array([93], ">u4").tobytes() + b[8:-1]))
    assert "holds 94 images but" in msg and "holds 93 labels" in msg
    msg = _emnist_variant(tmp_path, lambda f: _rewrite(f / "emnist-balanced-test-labels-idx1-ubyte.gz",
                                                     lambda b: b[:-1] + b"\x3b"))
    assert "has label 59; EMNIST balanced has labels 0..46" in msg


# --------------------------------------------------------------------------- CIFAR-100


def test_cifar_tasks(data_root):
    root, _ = data_root
    seq = make_sequence("CIFAR100-10T", data_dir=root, sizes=(10, 5, 5), seed=3)
    records = np.fromfile(root / "cifar-100-binary" / "train.bin", dtype=np.uint8).reshape(-1, 3074)
    assert seq.input_dim == 3072 and len(seq.tasks) == 10
    assert sorted(c for t in seq.tasks for c in t.classes) == list(range(100))
    for t in seq.tasks:
        assert t.n_classes == 10 and t.family == "classes"
        rows = list(t.rows[0])
        assert torch.allclose(t.x_train, torch.from_numpy(records[rows, 2:] / np.float32(255)))  # channel-major, as stored
        assert [t.classes[k] for k in t.y_train.tolist()] == records[rows, 1].tolist()  # fine labels


def test_cifar_errors(tmp_path):
    with pytest.raises(DataError, match="CIFAR100-10T needs cifar-100-binary/train.bin and test.bin in"):
        make_sequence("CIFAR100-10T", data_dir=tmp_path)
    py = tmp_path / "cifar-100-python"
    py.mkdir()
    for name in ("train", "test", "meta"):
        (py / name).write_bytes(b"\x80\x04pickle")
    with pytest.raises(DataError, match=r"holds the python version, which is a pickle: unpickling can run arbitrary "
                                        r"code, so it is never loaded\. Download the CIFAR-100 \*binary\* version"):
        make_sequence("CIFAR100-10T", data_dir=tmp_path)
    with pytest.raises(DataError, match="holds the python version"):
        make_sequence("CIFAR100-10T", data_dir=py)  # pointing straight at it
    (tmp_path / "cifar-100-binary").mkdir()
    (tmp_path / "cifar-100-binary" / "train.bin").write_bytes(b"")
    (tmp_path / "cifar-100-binary" / "test.bin").write_bytes(b"")
    with pytest.raises(DataError, match="has 0 bytes, not a whole number"):
        make_sequence("CIFAR100-10T", data_dir=tmp_path, sizes=SIZES)
    write_cifar(tmp_path / "cifar-100-binary", record=3073)  # CIFAR-10-sized records
    with pytest.raises(DataError, match="not a whole number of 3074-byte CIFAR-100 records"):
        make_sequence("CIFAR100-10T", data_dir=tmp_path, sizes=SIZES)
    records = write_cifar(tmp_path / "cifar-100-binary")["test.bin"]
    (tmp_path / "cifar-100-binary" / "test.bin").write_bytes(records.tobytes()[:-3074])  # one class short
    with pytest.raises(DataError, match=r"CIFAR100-10T test file: class 99 has 0 images, needs 1"):
        make_sequence("CIFAR100-10T", data_dir=tmp_path, sizes=(10, 5, 10))


# --------------------------------------------------------------------------- LEAF


def test_femnist_writers(data_root):
    root, _ = data_root
    seq = make_sequence("F-EMNIST-10T", data_dir=root, n_tasks=6, min_samples=FEMNIST_MIN)
    assert seq.input_dim == 784 and len(seq.tasks) == 6
    assert {t.family for t in seq.tasks} == {"writers"} and {t.n_classes for t in seq.tasks} == {62}
    assert all(not t.name.endswith("_00") for t in seq.tasks)  # 4-sample writers are never chosen
    for t in seq.tasks:
        assert t.describe()["sizes"] == {"train": 8, "val": 2, "test": 2}  # 12 samples split 4:1:1
        assert t.x_train.mean() < 0.5  # LEAF's white paper flipped to ink = 1
        assert sorted(sum(t.rows, ())) == list(range(12))
    with pytest.raises(DataError, match=r"only 6 writers in .* have at least 10 samples"):
        make_sequence("F-EMNIST-10T", data_dir=root, n_tasks=7, min_samples=FEMNIST_MIN)
    with pytest.raises(DataError, match="at least 200 samples"):
        make_sequence("F-EMNIST-10T", data_dir=root, n_tasks=2)


def test_celeba_people(data_root):
    root, _ = data_root
    seq = make_sequence("F-CelebA-10T", data_dir=root, n_tasks=3, min_samples=CELEBA_MIN)
    assert seq.input_dim == 3072 and {t.family for t in seq.tasks} == {"people"}
    for t in seq.tasks:
        assert t.n_classes == 2 and t.describe()["sizes"] == {"train": 7, "val": 1, "test": 2}
        assert 0.0 <= t.x_train.min() and t.x_train.max() <= 1.0


def _leaf_error(tmp_path, edit, *, name="F-EMNIST-10T", n=1):
    folder = write_femnist(tmp_path)
    path = folder / "all_data_0.json"
    doc = json.loads(path.read_text())
    text = edit(doc)
    path.write_text(text if isinstance(text, str) else json.dumps(doc))
    (folder / "all_data_1.json").unlink()
    with pytest.raises(DataError) as info:
        make_sequence(name, data_dir=tmp_path, n_tasks=n, min_samples=FEMNIST_MIN)
    return str(info.value)


def _set_label(value):
    return lambda d: d["user_data"]["f0_01"]["y"].__setitem__(0, value)


def _set_pixel(value):
    return lambda d: d["user_data"]["f0_01"]["x"][0].__setitem__(0, value)


def _drop_x(doc):
    doc["user_data"]["f0_01"]["x"].pop()


def _short_row(doc):
    doc["user_data"]["f0_01"]["x"][3] = [0.5] * 783


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: "{not json", "is not valid JSON"),
        (lambda d: d.pop("num_samples"), "expected an object with keys users, num_samples, user_data"),
        (_drop_x, "user 'f0_01' has 11 x, 12 y and num_samples 12; they must agree"),
        (_short_row, "every x must be a list of 784 pixel values"),
        (lambda d: d["user_data"]["f0_01"]["y"].__setitem__(0, 62), "has label 62; labels must be integers 0..61"),
        (lambda d: d["user_data"].pop("f0_02"), "user_data['f0_02'] must be an object with lists x and y"),
        (lambda d: d["user_data"].__setitem__("f0_01", [[0.0] * 784]), "user_data['f0_01'] must be an object"),
        (lambda d: d["users"].__setitem__(1, ["f0_01"]), "users must be a list of strings"),  # unhashable id
        (lambda d: d["users"].__setitem__(1, 7), "users must be a list of strings"),
        (_set_label(10**30), f"has label {10**30}; labels must be integers 0..61"),  # int64 overflow
        (_set_label(-1), "has label -1; labels must be integers 0..61"),
        (_set_label(1.5), "has label 1.5; labels must be integers 0..61"),  # int() would truncate
        (_set_label(True), "has label True; labels must be integers 0..61"),
        (_set_label("3"), "has label 3; labels must be integers 0..61"),
        (_set_label(None), "has label None; labels must be integers 0..61"),
        (lambda d: "[" * 100000, "is not a LEAF file: its JSON is nested too deeply"),  # RecursionError
        (lambda d: '{"users": ' + "[" * 100000, "nested too deeply"),
        (_set_pixel("0.5"), "x holds non-numeric pixel values"),
        (_set_pixel(True), "x holds non-numeric pixel values"),
        (_set_pixel(10**40), "pixel values must lie in [0, 1]"),  # inf as float32
        (_set_pixel(10**400), "x holds pixel values outside [0, 1]"),  # too large for any float
    ],
)
def test_leaf_malformed_json(tmp_path, edit, message):
    msg = _leaf_error(tmp_path, edit, n=3)
    assert message in msg and "all_data_0.json" in msg, msg


def test_celeba_missing_image_and_folder(tmp_path):
    base = write_celeba(tmp_path)
    (base / "raw" / "img_align_celeba" / "000004.jpg").unlink()
    with pytest.raises(DataError, match=r"image '000004.jpg' is not in .*img_align_celeba"):
        make_sequence("F-CelebA-10T", data_dir=tmp_path, n_tasks=3, min_samples=CELEBA_MIN)
    (base / "raw" / "img_align_celeba" / "000005.jpg").write_bytes(b"garbage")
    (base / "raw" / "img_align_celeba" / "000004.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read image"):
        make_sequence("F-CelebA-10T", data_dir=tmp_path, n_tasks=3, min_samples=CELEBA_MIN)
    shutil.rmtree(base / "raw")
    assert "F-CelebA-10T" not in available_sequences(tmp_path)
    with pytest.raises(DataError, match="needs the img_align_celeba/ image folder"):
        make_sequence("F-CelebA-10T", data_dir=tmp_path, n_tasks=3, min_samples=CELEBA_MIN)


def _celeba_error(root) -> str:
    with pytest.raises(DataError) as info:
        make_sequence("F-CelebA-10T", data_dir=root, n_tasks=3, min_samples=CELEBA_MIN)
    return str(info.value)


@pytest.mark.parametrize("limit, kind", [(1000, "DecompressionBombWarning"), (600, "DecompressionBombError")])
def test_celeba_decompression_bomb(tmp_path, monkeypatch, limit, kind):
    """40x33 = 1320 pixels: over Pillow's limit (a warning, made an error) or over twice it (an error)."""
    from PIL import Image

    write_celeba(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    msg = _celeba_error(tmp_path)
    assert re.search(rf"all_data.json, user 'celeb\d'.*: cannot read image .*/\d+\.jpg \({kind}", msg), msg


def test_celeba_truncated_foreign_and_escaping_images(tmp_path):
    from PIL import Image

    base = write_celeba(tmp_path)
    images = sorted((base / "raw" / "img_align_celeba").glob("*.jpg"))
    for path in images:
        path.write_bytes(path.read_bytes()[:400])  # header intact, pixels cut off
    assert re.search(r"cannot read image .*\.jpg \(OSError: ", _celeba_error(tmp_path))
    for path in images:
        Image.new("RGB", (8, 8)).save(path, format="GIF")  # only JPEG and PNG are decoded
    assert re.search(r"cannot read image .*\.jpg \(UnidentifiedImageError", _celeba_error(tmp_path))
    write_celeba(tmp_path)  # good images again
    doc_path = base / "all_data" / "all_data.json"
    doc = json.loads(doc_path.read_text())
    for escape in ("../img_align_celeba/000001.jpg", str(images[0]), ".", ["000001.jpg"]):  # all but one exist
        for entry in doc["user_data"].values():
            entry["x"][0] = escape
        doc_path.write_text(json.dumps(doc))
        assert "is not in" in _celeba_error(tmp_path)


# --------------------------------------------------------------------------- mixed, env var, listing


def test_mixed_paper_sequences(data_root):
    root, _ = data_root
    seq = make_sequence("EMNIST-10T+F-EMNIST-10T", data_dir=root, sizes=SIZES, min_samples=FEMNIST_MIN, n_tasks=8)
    families = [t.family for t in seq.tasks]
    assert seq.input_dim == 784 and sorted(families) == ["classes"] * 4 + ["writers"] * 4
    assert families != sorted(families) or families != sorted(families, reverse=True)
    seq = make_sequence("CIFAR100-10T+F-CelebA-10T", data_dir=root, sizes=SIZES, min_samples=CELEBA_MIN, n_tasks=5)
    assert seq.input_dim == 3072 and sorted(t.family for t in seq.tasks) == ["classes"] * 3 + ["people"] * 2
    with pytest.raises(DataError, match=r"only 3 celebrities in .* have at least 8 samples and two labels"):
        make_sequence("CIFAR100-10T+F-CelebA-10T", data_dir=root, sizes=SIZES, min_samples=CELEBA_MIN)


def test_same_seed_same_tensors(data_root):
    root, _ = data_root
    for name, kw in (("EMNIST-10T", {"sizes": SIZES}), ("F-EMNIST-10T", {"min_samples": FEMNIST_MIN, "n_tasks": 4})):
        a, b = (make_sequence(name, data_dir=root, seed=4, **kw) for _ in range(2))
        assert all(torch.equal(u, v) for u, v in zip(tensors(a), tensors(b)))
        c = make_sequence(name, data_dir=root, seed=5, **kw)
        assert [t.name for t in a.tasks] != [t.name for t in c.tasks]


def test_env_var_and_available_sequences(data_root, tmp_path, monkeypatch):
    root, _ = data_root
    monkeypatch.delenv("PRM_DATA", raising=False)
    base = available_sequences()
    assert {"digits-classes", "digits-writers", "digits-mixed", "mnist5k-classes", "mnist5k-styles"} <= set(base)
    assert not {"EMNIST-10T", "CIFAR100-10T", "F-EMNIST-10T", "F-CelebA-10T"} & set(base)
    with pytest.raises(DataError, match="EMNIST-10T reads local files: pass a data folder .* or set PRM_DATA"):
        make_sequence("EMNIST-10T")
    with pytest.raises(DataError, match="data folder .*nowhere does not exist"):
        make_sequence("EMNIST-10T", data_dir=tmp_path / "nowhere")
    monkeypatch.setenv("PRM_DATA", str(root))
    everything = available_sequences()
    paper = ["EMNIST-10T", "CIFAR100-10T", "F-EMNIST-10T", "F-CelebA-10T", "EMNIST-10T+F-EMNIST-10T",
             "CIFAR100-10T+F-CelebA-10T"]
    assert set(paper) <= set(everything)
    assert make_sequence("EMNIST-10T", sizes=SIZES, n_tasks=1).tasks[0].describe()["sizes"]["train"] == 10
    assert set(available_sequences(tmp_path)) == set(base)  # an explicit folder wins over PRM_DATA


def test_bad_sizes_and_min_samples(data_root):
    root, _ = data_root
    for sizes in ((10, 5), (10, 0, 5), (10, 5, 2.5), "10,5,5"):
        with pytest.raises(DataError, match="sizes must be three positive integers"):
            make_sequence("EMNIST-10T", data_dir=root, sizes=sizes)
    with pytest.raises(DataError, match="min_samples must be an integer >= 2"):
        make_sequence("F-EMNIST-10T", data_dir=root, min_samples=1)
    with pytest.raises(DataError, match="EMNIST-10T takes n_tasks from 1 to 10"):
        make_sequence("EMNIST-10T", data_dir=root, n_tasks=11)
