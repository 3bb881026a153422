"""Uploads the zip reader cannot read safely, or that lie about themselves, are refused with one
message and leave nothing on disk: encrypted members, compression methods other than stored and
deflated, wrong CRCs, sizes that lie, local headers that disagree with the central directory,
corrupt deflate streams, truncation, look-alike digits in member names. At the archive level and
through the app's upload callback (AppTest), where every failure is one "Upload refused: ..."."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer import archive
from explorer import state as keys

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_runs" / "digits-classes-prm-s0"
pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason=f"{SAMPLE} is missing")
MEMBER = f"{SAMPLE.name}/events.jsonl"  # deflated by zip_run, and large enough to cut into

# Offsets of the fields patched below, in a local file header and in a central directory entry
# (APPNOTE.TXT 4.3.7 and 4.3.12), with their struct formats.
LOCAL = {"flag": 6, "method": 8, "crc": 14, "csize": 18, "usize": 22}
CENTRAL = {"flag": 8, "method": 10, "crc": 16, "csize": 20, "usize": 24}
FORMAT = {"flag": "<H", "method": "<H", "crc": "<I", "csize": "<I", "usize": "<I"}


def good() -> bytes:
    return archive.zip_run(SAMPLE)


def info_of(data: bytes, member: str = MEMBER) -> zipfile.ZipInfo:
    return zipfile.ZipFile(io.BytesIO(data)).getinfo(member)


def central_entry(data: bytes, member: str) -> int:
    """Offset of ``member``'s central directory entry."""
    pos = zipfile.ZipFile(io.BytesIO(data)).start_dir
    while data[pos:pos + 4] == b"PK\x01\x02":
        n, x, c = struct.unpack_from("<HHH", data, pos + 28)
        if data[pos + 46:pos + 46 + n] == member.encode():
            return pos
        pos += 46 + n + x + c
    raise KeyError(member)


def patched(data: bytes, member: str = MEMBER, **fields: int) -> bytes:
    """The zip with ``fields`` of ``member`` overwritten in both its local and central headers,
    as a writer that lies (or a flipped bit) would leave them."""
    buf, local, central = bytearray(data), info_of(data, member).header_offset, central_entry(data, member)
    for field, value in fields.items():
        struct.pack_into(FORMAT[field], buf, local + LOCAL[field], value)
        struct.pack_into(FORMAT[field], buf, central + CENTRAL[field], value)
    return bytes(buf)


def local_name(data: bytes, new: str) -> bytes:
    """The zip with MEMBER's local header naming ``new`` (same length) while its central entry
    still names MEMBER."""
    buf, local = bytearray(data), info_of(data).header_offset
    buf[local + 30:local + 30 + len(new)] = new.encode()
    return bytes(buf)


def shared_body(data: bytes) -> bytes:
    """The zip with summary.json's central entry pointing at run.json's local header: two
    entries reading the same bytes, the trick of overlapping-entry zip bombs."""
    buf, summary = bytearray(data), central_entry(data, f"{SAMPLE.name}/summary.json")
    struct.pack_into("<I", buf, summary + 42, info_of(data, f"{SAMPLE.name}/run.json").header_offset)
    return bytes(buf)


def corrupt_stream(data: bytes) -> bytes:
    """The zip with 30 bytes of MEMBER's deflate stream inverted (zlib.error on inflating)."""
    buf, local = bytearray(data), info_of(data).header_offset
    n, x = struct.unpack_from("<HH", buf, local + 26)
    start = local + 30 + n + x + 10
    buf[start:start + 30] = bytes(b ^ 0xFF for b in buf[start:start + 30])
    return bytes(buf)


def named(names: list[str]) -> bytes:
    """A zip of the sample's run.json under each of ``names``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in names:
            zf.writestr(name, (SAMPLE / "run.json").read_bytes())
    return buffer.getvalue()


def handmade(entries: dict[bytes, bytes]) -> bytes:
    """A zip of stored members written field by field, for names zipfile's writer will not
    write (it fails on an empty name)."""
    files, directory = bytearray(), bytearray()
    for name, body in entries.items():
        crc, size = zlib.crc32(body), len(body)
        directory += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, crc, size, size, len(name), 0, 0,
                                 0, 0, 0, len(files)) + name
        files += struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, size, size, len(name), 0) + name + body
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(directory), len(files), 0)
    return bytes(files + directory + end)


def with_member(name: str) -> bytes:
    """The sample's zip with one more member, named ``name``, holding a valid array file."""
    buffer = io.BytesIO(good())
    with zipfile.ZipFile(buffer, "a") as zf:
        zf.writestr(f"{SAMPLE.name}/{name}", (SAMPLE / "arrays" / "task_000.npz").read_bytes())
    return buffer.getvalue()


def flag(bits: int) -> bytes:
    data = good()
    return patched(data, flag=info_of(data).flag_bits | bits)


UNSUPPORTED = {  # refused from the central directory alone, before any member is opened
    "encrypted": (lambda: flag(0x1), "encrypted"),
    "strong-encryption": (lambda: flag(0x40), "encrypted"),
    "masked-directory": (lambda: flag(0x2000), "encrypted"),
    "patched-data": (lambda: flag(0x20), "unsupported"),
    "method-99-aes": (lambda: patched(good(), method=99), "compression method"),
    "bzip2": (lambda: patched(good(), method=zipfile.ZIP_BZIP2), "compression method"),
    "lzma": (lambda: patched(good(), method=zipfile.ZIP_LZMA), "compression method"),
    "stored-with-sizes-apart": (lambda: patched(named(["run.json"]), "run.json", csize=10), "size"),
    "compressed-size-past-the-next-member": (
        lambda: patched(good(), csize=info_of(good()).compress_size + 1000), "overlaps"),
    "two-entries-share-bytes": (lambda: shared_body(good()), "overlaps"),
    "arabic-indic-digits": (lambda: with_member("arrays/task_\u0660\u0660\u0660.npz"), "unexpected file"),
    "fullwidth-digits": (lambda: with_member("arrays/dtd_\uff10\uff10\uff11.npz"), "unexpected file"),
    "bidi-override-in-a-name": (lambda: with_member("arrays/\u202eypn.000_ksat"), "unexpected file"),
    "empty-name": (lambda: handmade({b"run.json": (SAMPLE / "run.json").read_bytes(), b"": b"x"}), "unsafe path"),
    "dot-name": (lambda: named(["run.json", "."]), "unsafe path"),
}

DAMAGED = {  # found while reading: refused, and the half-made folder removed
    "bad-crc": lambda: patched(good(), crc=info_of(good()).CRC ^ 1),
    "declares-more-than-it-holds": lambda: patched(good(), usize=info_of(good()).file_size + 100),
    "declares-less-than-it-holds": lambda: patched(good(), usize=info_of(good()).file_size - 100),
    "compressed-size-cut-short": lambda: patched(good(), csize=info_of(good()).compress_size // 2),
    "local-name-differs": lambda: local_name(good(), MEMBER[:-1] + "X"),
    "corrupt-deflate-stream": lambda: corrupt_stream(good()),
    "truncated-at-half": lambda: good()[: len(good()) // 2],
    "truncated-end-record": lambda: good()[:-5],
}


def leftovers(root: Path) -> list[Path]:
    return sorted(root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize("case", UNSUPPORTED)
def test_a_zip_the_reader_cannot_read_safely_is_refused_before_a_byte(case, tmp_path, monkeypatch):
    make, message = UNSUPPORTED[case]
    data = make()
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a) or real_open(self, *a, **k))
    with pytest.raises(archive.UploadError, match=message):
        archive.extract_run_zip(data, root=tmp_path / "mine", name="x.zip")
    assert opened == [] and not (tmp_path / "mine").exists()


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_zip_is_one_upload_error_and_leaves_nothing(case, tmp_path):
    with pytest.raises(archive.UploadError):
        archive.extract_run_zip(DAMAGED[case](), root=tmp_path / "mine", name="x.zip")
    assert leftovers(tmp_path / "mine") == []


def test_a_sound_zip_still_uploads(tmp_path):
    folder = archive.extract_run_zip(good(), root=tmp_path, name="fine.zip")
    assert (folder / "events.jsonl").read_bytes() == (SAMPLE / "events.jsonl").read_bytes()


def upload(at: AppTest, data: bytes, name: str = "run.zip") -> AppTest:
    at.sidebar.file_uploader(key=keys.UPLOAD).upload(name, data, "application/zip").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("case", ["encrypted", "method-99-aes", "corrupt-deflate-stream", "bad-crc",
                                  "declares-more-than-it-holds", "local-name-differs", "truncated-at-half",
                                  "bidi-override-in-a-name"])
def test_the_app_shows_one_refusal_for_any_broken_upload(case, tmp_path):
    """The upload callback's contract: any failure is one "Upload refused: ..." line in the
    sidebar (a member name quoted in it shown with its bidi override escaped), no traceback,
    and nothing of the upload on disk."""
    data = UNSUPPORTED[case][0]() if case in UNSUPPORTED else DAMAGED[case]()
    at = AppTest.from_file(str(ROOT / "explorer" / "app.py"), default_timeout=30)
    at.session_state[keys.RUNS_DIR] = str(tmp_path / "mine")
    at.query_params[keys.VIEW] = keys.LIVE
    at.run()
    upload(at, data)
    refusals = [e.value for e in at.sidebar.error if e.value.startswith("Upload refused: ")]
    assert len(refusals) == 1 and "\n" not in refusals[0], [e.value for e in at.sidebar.error]
    assert "\u202e" not in refusals[0]
    assert leftovers(tmp_path / "mine") == []
    upload(at, good(), "fine.zip")  # the next, sound upload is unpacked and opened
    assert any(s.value.startswith("Unpacked into") for s in at.sidebar.success)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["fine"]
