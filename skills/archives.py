"""Reading uploads safely into ``{normalised path: bytes}``, and writing deterministic zips.

Pure functions, no database and no file system: an archive is never extracted to disk by member
name. Each entry's path is normalised and validated, its bytes are inflated in bounded chunks and
counted as they come (declared sizes are never trusted), and links, special entries, encrypted or
overlapping zip entries and compression inside compression are refused.

Exceptions::

    UploadRejected      the upload as a whole is refused; ``.problems`` lists why
                        (each a ``Problem(path, message)``, the import's 400 body)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import os
import stat
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from django.conf import settings

_CHUNK = 64 * 1024
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the zip epoch: same version, same bytes
_MAX_PATH_BYTES = 1024
_MAX_PART_BYTES = 255


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class UploadRejected(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))
        self.problems = problems

    @classmethod
    def one(cls, path: str, message: str) -> UploadRejected:
        return cls([Problem(path, message)])


@dataclass(frozen=True)
class Limits:
    max_files: int
    max_unpacked_bytes: int
    max_file_bytes: int

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            max_files=settings.SKILLS_MAX_FILES,
            max_unpacked_bytes=settings.SKILLS_MAX_UNPACKED_BYTES,
            max_file_bytes=settings.SKILLS_MAX_FILE_BYTES,
        )

    @property
    def max_entries(self) -> int:
        # Folders cost nothing to store but still cost work to walk; bound them too.
        return 4 * self.max_files + 100


def normalize_path(raw: str) -> str:
    """The canonical form of an archive member name. Raises ``UploadRejected``.

    Refuses absolute paths, drive letters, ``..``, backslashes and control characters; drops
    empty and ``.`` segments; applies Unicode NFC so that two spellings of one name collide.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise UploadRejected.one(raw, "the path contains a control character")
    if "\\" in raw:
        raise UploadRejected.one(raw, "the path contains a backslash")
    if raw.startswith("/") or (len(raw) >= 2 and raw[1] == ":" and raw[0].isalpha()):
        raise UploadRejected.one(raw, "the path is absolute")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UploadRejected.one(raw, "the path goes up a folder (..)")
    if not parts:
        raise UploadRejected.one(raw, "the path is empty")
    path = unicodedata.normalize("NFC", "/".join(parts))
    if len(path.encode()) > _MAX_PATH_BYTES or any(
        len(part.encode()) > _MAX_PART_BYTES for part in parts
    ):
        raise UploadRejected.one(raw, "the path is too long")
    return path


class _Collector:
    """Accumulates files, enforcing the limits and refusing paths that collide."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.files: dict[str, bytes] = {}
        self.total = 0
        self.entries = 0
        # Case-folded: two names that differ only in case are one file on macOS and Windows.
        self._seen: dict[str, str] = {}

    def count_entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise UploadRejected.one("", "the archive has too many entries")

    def claim(self, raw: str) -> str:
        """Validate a file's path before its bytes are read; returns the normalised path."""
        path = normalize_path(raw)
        if len(self.files) >= self.limits.max_files:
            raise UploadRejected.one(raw, f"more than {self.limits.max_files} files (the limit)")
        folded = path.casefold()
        if folded in self._seen:
            raise UploadRejected.one(
                raw, f"the path collides with {self._seen[folded]!r} after normalisation"
            )
        self._seen[folded] = path
        return path

    def read(self, path: str, stream: IO[bytes]) -> None:
        """Inflate one entry in bounded chunks, counting real bytes against the limits."""
        chunks: list[bytes] = []
        size = 0
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            self.total += len(chunk)
            if size > self.limits.max_file_bytes:
                raise UploadRejected.one(
                    path, f"the file is bigger than {self.limits.max_file_bytes} bytes (the limit)"
                )
            if self.total > self.limits.max_unpacked_bytes:
                raise UploadRejected.one(
                    path,
                    f"the upload unpacks to more than {self.limits.max_unpacked_bytes} bytes "
                    "(the limit)",
                )
            chunks.append(chunk)
        self.files[path] = b"".join(chunks)

    def add(self, raw: str, content: bytes) -> None:
        path = self.claim(raw)
        self.read(path, io.BytesIO(content))

    def finish(self) -> dict[str, bytes]:
        """The files, once no file path is also used as a folder of another."""
        folders: set[str] = set()
        for path in self.files:
            parts = path.casefold().split("/")
            folders.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
        for path in self.files:
            if path.casefold() in folders:
                raise UploadRejected.one(path, "the path is both a file and a folder")
        return self.files


def _unix_type(info: zipfile.ZipInfo) -> int:
    if info.create_system != 3:  # only Unix-made zips carry a file type in external_attr
        return 0
    return stat.S_IFMT(info.external_attr >> 16)


def _check_no_overlap(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse entries whose data overlap (the non-recursive zip bomb, one payload many times)."""
    ordered = sorted(infos, key=lambda info: info.header_offset)
    for current, following in itertools.pairwise(ordered):
        end = (
            current.header_offset
            + 30  # the fixed part of a local file header
            + len(current.orig_filename.encode("utf-8", "surrogateescape"))
            + current.compress_size
        )
        if end > following.header_offset:
            raise UploadRejected.one(
                current.filename, "zip entries overlap (a compression trick); refused"
            )
    if ordered:
        last = ordered[-1]
        if last.header_offset + 30 + last.compress_size > zf.start_dir:
            raise UploadRejected.one(last.filename, "a zip entry overlaps the central directory")


def read_zip(stream: IO[bytes], limits: Limits) -> dict[str, bytes]:
    """The files of a zip (``.zip``, ``.skill``). Raises ``UploadRejected``."""
    try:
        zf = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        raise UploadRejected.one("", "the body is not a readable zip archive") from None
    collector = _Collector(limits)
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise UploadRejected.one("", "the archive has too many entries")
        _check_no_overlap(zf, infos)
        for info in infos:
            collector.count_entry()
            kind = _unix_type(info)
            if kind == stat.S_IFLNK:
                raise UploadRejected.one(info.filename, "links are not allowed")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UploadRejected.one(info.filename, "special entries are not allowed")
            if info.is_dir():
                normalize_path(info.filename)
                continue
            if info.flag_bits & 0x1:
                raise UploadRejected.one(info.filename, "encrypted entries are not allowed")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise UploadRejected.one(
                    info.filename, "only stored and deflated zip entries are accepted"
                )
            path = collector.claim(info.filename)
            try:
                with zf.open(info) as member:
                    collector.read(path, member)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
                raise UploadRejected.one(info.filename, "the entry is corrupt") from None
    return collector.finish()


class _BoundedReader(io.RawIOBase):
    """Counts every byte the gzip layer inflates; refuses the stream past ``limit``."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self.inner, self.limit, self.count = inner, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(min(len(buffer), _CHUNK))
        self.count += len(data)
        if self.count > self.limit:
            raise UploadRejected.one("", "the archive inflates past the unpacked-size limit")
        buffer[: len(data)] = data
        return len(data)


def read_tar_gz(stream: IO[bytes], limits: Limits) -> dict[str, bytes]:
    """The files of a gzip-compressed tar. Raises ``UploadRejected``."""
    # The tar stream also holds headers and padding: allow for them on top of the content limit.
    overhead = limits.max_entries * 3 * 512 + 1024 * 1024
    gunzipped = gzip.GzipFile(fileobj=stream, mode="rb")
    inflated = io.BufferedReader(
        _BoundedReader(gunzipped, limits.max_unpacked_bytes + overhead), buffer_size=_CHUNK
    )
    collector = _Collector(limits)
    try:
        if inflated.peek(2)[:2] == b"\x1f\x8b":
            raise UploadRejected.one("", "compression inside compression is refused")
        with tarfile.open(fileobj=inflated, mode="r|") as tar:
            for member in tar:
                collector.count_entry()
                if member.issym() or member.islnk():
                    raise UploadRejected.one(member.name, "links are not allowed")
                if member.isdir():
                    normalize_path(member.name)
                    continue
                if not member.isreg() or member.issparse():
                    raise UploadRejected.one(member.name, "special entries are not allowed")
                path = collector.claim(member.name)
                content = tar.extractfile(member)
                assert content is not None  # a regular file always has content
                collector.read(path, content)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError):
        raise UploadRejected.one("", "the body is not a readable tar.gz archive") from None
    return collector.finish()


def read_json_files(files: object, limits: Limits) -> dict[str, bytes]:
    """``{"<path>": "<text>"}`` as files. Raises ``UploadRejected``."""
    if not isinstance(files, Mapping) or not files:
        raise UploadRejected.one("", '"files" must be an object of {"<path>": "<text>"}')
    collector = _Collector(limits)
    for raw, text in files.items():
        collector.count_entry()
        if not isinstance(raw, str) or not isinstance(text, str):
            raise UploadRejected.one(str(raw), "each file must be a path with text content")
        collector.add(raw, text.encode("utf-8", "surrogatepass"))
    return collector.finish()


def read_directory(root: Path, limits: Limits) -> dict[str, bytes]:
    """The files under a folder (a checkout, say), ``.git`` skipped. Raises ``UploadRejected``."""
    collector = _Collector(limits)
    for folder, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for entry in [*dirnames, *sorted(filenames)]:
            collector.count_entry()
            full = Path(folder, entry)
            relative = full.relative_to(root).as_posix()
            if full.is_symlink():
                raise UploadRejected.one(relative, "links are not allowed")
            if entry in dirnames:
                continue
            if not full.is_file():
                raise UploadRejected.one(relative, "special entries are not allowed")
            path = collector.claim(relative)
            with full.open("rb") as stream:
                collector.read(path, stream)
    return collector.finish()


def sniff(head: bytes) -> str | None:
    """``"zip"``, ``"tar.gz"`` or ``"json"`` from an upload's first bytes; None if unknown."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head.lstrip()[:1] == b"{":
        return "json"
    return None


def _write_zip(files: Iterable[tuple[str, bytes]], folder: str) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path, content in sorted(files):
            info = zipfile.ZipInfo(folder + path, date_time=_FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(info, content, compresslevel=6)
    return buffer


def build_zip(files: Iterable[tuple[str, bytes]], *, folder: str = "") -> bytes:
    """A deterministic zip: entries sorted by path, fixed timestamps and modes.

    ``folder`` (e.g. ``"my-skill/"``) prefixes every entry; empty puts the files at the root.
    The same files always give the same bytes (for a given zlib), hence the same digest.
    """
    return _write_zip(files, folder).getvalue()


def zip_sha256(files: Iterable[tuple[str, bytes]], *, folder: str = "") -> str:
    """``sha256(build_zip(files, folder=folder))`` without a second copy of the zip."""
    buffer = _write_zip(files, folder)
    with buffer.getbuffer() as view:
        return hashlib.sha256(view).hexdigest()
