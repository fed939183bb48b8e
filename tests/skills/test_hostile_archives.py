"""Hostile archives are refused with nothing stored, and refusing them takes bounded memory.

Every archive is built here, in the test; none is committed.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import tracemalloc
import zipfile
import zlib

import pytest

from skills.archives import Limits, UploadRejected, read_tar_gz, read_zip
from skills.models import Blob, Skill, SkillVersion
from tests.skills.conftest import make_tar_gz, make_zip

GOOD_MD = b"---\nname: fine\ndescription: A fine skill.\n---\n# fine\n"
MiB = 1024 * 1024


def zip_with(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, content in entries:
            zf.writestr(info, content)
    return buffer.getvalue()


def unix_entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def tar_gz_with(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, content in members:
            info.size = len(content) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(content) if info.isreg() else None)
    return buffer.getvalue()


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def zip_bomb(inflated_bytes: int) -> bytes:
    """A valid zip, a few MiB, whose one entry inflates to ``inflated_bytes`` of zeros.

    Built from one full-flushed deflate block of 1 MiB of zeros repeated: every copy is
    byte-identical, so there is no need to compress gigabytes to build it.
    """
    chunk = MiB
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(b"\0" * chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.flush(zlib.Z_FINISH)
    copies = inflated_bytes // chunk
    crc = 0
    zeros = b"\0" * chunk
    for _ in range(copies):
        crc = zlib.crc32(zeros, crc)
    data = block * copies + tail
    name = b"bomb/data.bin"
    local = struct.pack(
        "<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), copies * chunk, len(name), 0
    )
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50,
        20,
        20,
        0,
        8,
        0,
        0x21,
        crc,
        len(data),
        copies * chunk,
        len(name),
        0,
        0,
        0,
        0,
        0,
        0,
    )
    skill_name = b"bomb/SKILL.md"
    skill_local_offset = len(local) + len(name) + len(data)
    skill_local = struct.pack(
        "<IHHHHHIIIHH",
        0x04034B50,
        20,
        0,
        0,
        0,
        0x21,
        zlib.crc32(GOOD_MD),
        len(GOOD_MD),
        len(GOOD_MD),
        len(skill_name),
        0,
    )
    skill_central = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50,
        20,
        20,
        0,
        0,
        0,
        0x21,
        zlib.crc32(GOOD_MD),
        len(GOOD_MD),
        len(GOOD_MD),
        len(skill_name),
        0,
        0,
        0,
        0,
        0,
        skill_local_offset,
    )
    body = local + name + data + skill_local + skill_name + GOOD_MD
    directory = central + name + skill_central + skill_name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 2, 2, len(directory), len(body), 0)
    return body + directory + end


def overlapping_zip() -> bytes:
    """Two central-directory entries pointing at the same local data (the overlap trick)."""
    normal = zip_with([("a/SKILL.md", GOOD_MD)])
    zf = zipfile.ZipFile(io.BytesIO(normal))
    info = zf.infolist()[0]
    eocd = normal.rfind(b"PK\x05\x06")
    cd_offset = struct.unpack("<I", normal[eocd + 16 : eocd + 20])[0]
    entry = normal[cd_offset:eocd]
    second = entry.replace(b"a/SKILL.md", b"b/SKILL.md")
    directory = entry + second
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 2, 2, len(directory), cd_offset, 0)
    assert info.header_offset == 0
    return normal[:cd_offset] + directory + end


def assert_nothing_stored() -> None:
    assert not Skill.objects.exists()
    assert not SkillVersion.objects.exists()
    assert not Blob.objects.exists()


HOSTILE = {
    "zip slip (../)": (lambda: zip_with([("SKILL.md", GOOD_MD), ("../evil.sh", b"x")]), "goes up"),
    "zip slip inside a folder": (
        lambda: zip_with([("a/SKILL.md", GOOD_MD), ("a/../../evil", b"x")]),
        "goes up",
    ),
    "absolute path": (lambda: zip_with([("SKILL.md", GOOD_MD), ("/etc/passwd", b"x")]), "absolute"),
    "windows drive path": (
        lambda: zip_with([("SKILL.md", GOOD_MD), ("C:/evil", b"x")]),
        "absolute",
    ),
    "backslash path": (
        lambda: zip_with([("SKILL.md", GOOD_MD), ("..\\..\\evil", b"x")]),
        "backslash",
    ),
    "symlink entry": (
        lambda: zip_with(
            [("SKILL.md", GOOD_MD), (unix_entry("link", stat.S_IFLNK | 0o777), b"/etc/passwd")]
        ),
        "links",
    ),
    "special entry (fifo)": (
        lambda: zip_with([("SKILL.md", GOOD_MD), (unix_entry("fifo", stat.S_IFIFO | 0o644), b"")]),
        "special",
    ),
    "duplicate after normalisation": (
        lambda: zip_with([("s/SKILL.md", GOOD_MD), ("s/a.txt", b"1"), ("s/./a.txt", b"2")]),
        "collides",
    ),
    "duplicate by double slash": (
        lambda: zip_with([("s/SKILL.md", GOOD_MD), ("s/a.txt", b"1"), ("s//a.txt", b"2")]),
        "collides",
    ),
    "duplicate by case": (
        lambda: zip_with([("s/SKILL.md", GOOD_MD), ("s/Read.md", b"1"), ("s/READ.md", b"2")]),
        "collides",
    ),
    "duplicate by unicode form": (
        lambda: zip_with(
            [("s/SKILL.md", GOOD_MD), ("s/caf\u00e9.md", b"1"), ("s/cafe\u0301.md", b"2")]
        ),
        "collides",
    ),
    "a file that is also a folder": (
        lambda: zip_with([("SKILL.md", GOOD_MD), ("a", b"1"), ("a/b", b"2")]),
        "both a file and a folder",
    ),
    "10,000 tiny files": (
        lambda: zip_with([("SKILL.md", GOOD_MD)] + [(f"f/{i}.txt", b"x") for i in range(10_000)]),
        "too many entries",
    ),
    "overlapping entries": (overlapping_zip, "overlap"),
    "encrypted entry": (
        lambda: _encrypted(zip_with([("SKILL.md", GOOD_MD)])),
        "encrypted",
    ),
    "tar symlink": (
        lambda: tar_gz_with(
            [(tar_member("SKILL.md"), GOOD_MD), (tar_member("x", tarfile.SYMTYPE, "/etc"), b"")]
        ),
        "links",
    ),
    "tar hard link": (
        lambda: tar_gz_with(
            [(tar_member("SKILL.md"), GOOD_MD), (tar_member("x", tarfile.LNKTYPE, "SKILL.md"), b"")]
        ),
        "links",
    ),
    "tar device": (
        lambda: tar_gz_with(
            [(tar_member("SKILL.md"), GOOD_MD), (tar_member("d", tarfile.CHRTYPE), b"")]
        ),
        "special",
    ),
    "tar slip": (
        lambda: tar_gz_with([(tar_member("SKILL.md"), GOOD_MD), (tar_member("../../x"), b"x")]),
        "goes up",
    ),
    "gzip inside gzip": (
        lambda: zlib_gzip(make_tar_gz({"SKILL.md": GOOD_MD})),
        "compression inside compression",
    ),
}


def _encrypted(data: bytes) -> bytes:
    # Set the "encrypted" flag bit in the local and central headers of the one entry.
    patched = bytearray(data)
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = patched.find(signature)
        patched[at + flag_offset] |= 0x1
    return bytes(patched)


def zlib_gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


@pytest.mark.parametrize("case", list(HOSTILE))
def test_it_refuses_a_hostile_archive_and_stores_nothing(client, publisher, case):
    make, message = HOSTILE[case]
    response = publisher.upload(client, make())
    assert response.status_code == 400, response.content
    problems = response.json()["errors"]
    assert any(message in p["message"] for p in problems), problems
    assert_nothing_stored()


def test_more_files_than_the_limit_are_refused():
    limits = Limits(max_files=5, max_unpacked_bytes=MiB, max_file_bytes=MiB)
    archive = zip_with([("SKILL.md", GOOD_MD)] + [(f"{i}.txt", b"x") for i in range(5)])
    with pytest.raises(UploadRejected, match="more than 5 files"):
        read_zip(io.BytesIO(archive), limits)


def test_a_file_over_the_per_file_limit_is_refused():
    limits = Limits(max_files=10, max_unpacked_bytes=10 * MiB, max_file_bytes=MiB)
    archive = zip_with([("SKILL.md", GOOD_MD), ("big.bin", b"\0" * (MiB + 1))])
    with pytest.raises(UploadRejected, match="bigger than"):
        read_zip(io.BytesIO(archive), limits)


def test_a_small_zip_that_inflates_to_gigabytes_is_refused_in_bounded_memory(client, publisher):
    bomb = zip_bomb(3 * 1024 * MiB)  # 3 GiB of zeros
    assert len(bomb) < 8 * MiB
    tracemalloc.start()
    try:
        response = publisher.upload(client, bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 400
    assert "bigger than" in response.json()["errors"][0]["message"]
    # Counting stops at the per-file limit (10 MiB): nothing near the 3 GiB is ever held.
    assert peak < 64 * MiB, peak
    assert_nothing_stored()


def test_the_bomb_is_refused_by_the_total_limit_too():
    limits = Limits(max_files=10, max_unpacked_bytes=2 * MiB, max_file_bytes=100 * MiB)
    with pytest.raises(UploadRejected, match="unpacks to more than"):
        read_zip(io.BytesIO(zip_bomb(64 * MiB)), limits)


def test_a_tar_gz_bomb_is_refused_in_bounded_memory():
    # 1 GiB of zeros in a tar.gz, streamed through gzip so the test never holds it.
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("SKILL.md")
        info.size = len(GOOD_MD)
        tar.addfile(info, io.BytesIO(GOOD_MD))
        info = tarfile.TarInfo("zeros.bin")
        info.size = 1024 * MiB

        class Zeros(io.RawIOBase):
            left = info.size

            def readable(self) -> bool:
                return True

            def readinto(self, buffer):  # type: ignore[override]
                n = min(len(buffer), self.left)
                buffer[:n] = b"\0" * n
                self.left -= n
                return n

        tar.addfile(info, io.BufferedReader(Zeros(), buffer_size=MiB))
    archive = raw.getvalue()
    assert len(archive) < 16 * MiB
    tracemalloc.start()
    try:
        with pytest.raises(UploadRejected):
            read_tar_gz(io.BytesIO(archive), Limits.from_settings())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * MiB, peak


def test_a_clean_tar_gz_still_passes():
    files = read_tar_gz(io.BytesIO(make_tar_gz({"SKILL.md": GOOD_MD})), Limits.from_settings())
    assert files == {"SKILL.md": GOOD_MD}


def test_a_clean_zip_with_a_folder_entry_still_passes():
    archive = zip_with([("s/", b""), ("s/SKILL.md", GOOD_MD)])
    assert read_zip(io.BytesIO(archive), Limits.from_settings()) == {"s/SKILL.md": GOOD_MD}


def test_an_oversized_body_is_refused_before_parsing(client, publisher, settings):
    settings.SKILLS_MAX_UPLOAD_BYTES = 1000
    padding = os.urandom(5000)  # incompressible
    response = publisher.upload(client, make_zip({"SKILL.md": GOOD_MD, "pad.bin": padding}))
    assert response.status_code == 413
    assert_nothing_stored()
