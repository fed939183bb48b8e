"""The read side of the registry: what the skills site serves, cached so a read costs no query.

- **refs** (mutable, per name, in the shared cache ``skills:ref:<name>``): who owns the skill,
  whether it is public, its latest version and its pinnable version numbers. Moderation, imports
  and deletes (the account's cascade included: ``forget_deleted_skill``) overwrite the entry once
  their transaction commits, and ``hepgg.lib.sharedcache`` makes every process drop its copy
  before its next read; readers only fill an empty slot, so a slow reader cannot put back a
  stale one.
- **versions** (immutable manifests, per process): files, digests, frontmatter.
- **blobs and zips** (content-addressed, per process, bounded in bytes): never stale.
- **listings** (the indexes, in the shared cache): dropped on every change, short TTL.

Sync functions are for sync views and services; ``a*`` twins run on the event loop with no
thread hop on a warm cache (the ORM only runs, in a thread, on a miss).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection, transaction

from hepgg.lib import sharedcache
from skills.archives import build_zip
from skills.models import Blob, Skill, SkillFile, SkillVersion, Visibility

REF_TTL = 3600
MISSING_TTL = 60
LIST_TTL = 300
_PUBLIC_LIST = "skills:list:public"


def _ref_key(name: str) -> str:
    return f"skills:ref:{name}"


def _account_list_key(account_id: int) -> str:
    return f"skills:list:account:{account_id}"


def off_loop(load: Callable[..., Any]) -> Callable[..., Any]:
    """``load`` for ``sync_to_async``: reads may run outside Django's request cycle (see
    ``skills.asgi``), so first drop a broken or expired connection as ``request_started`` would.
    Never inside a transaction (a test's, say): that connection is in use, not stale."""

    def run(*args: Any, **kwargs: Any) -> Any:
        # Only persistent connections (CONN_MAX_AGE > 0) age or break between loads; with 0,
        # close_old_connections would reconnect on every miss.
        if connection.settings_dict.get("CONN_MAX_AGE") and not connection.in_atomic_block:
            close_old_connections()
        return load(*args, **kwargs)

    return sync_to_async(run)


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    sha256: str
    size: int
    is_text: bool


@dataclass(frozen=True)
class Ref:
    """The mutable facts about a name, as the shared cache holds them."""

    skill_id: int
    account_id: int
    public: bool
    latest: int  # version id
    numbers: dict[str, int]  # version number (as text) -> version id, unhidden versions only

    def readable_by(self, account_id: int | None) -> bool:
        return self.public or (account_id is not None and account_id == self.account_id)

    def version_id(self, number: int | None) -> int | None:
        return self.latest if number is None else self.numbers.get(str(number))


@dataclass(frozen=True)
class Version:
    """An immutable version's manifest: everything but file contents."""

    id: int
    name: str
    number: int
    description: str
    license: str
    compatibility: str
    allowed_tools: str
    metadata: dict[str, Any]
    frontmatter: dict[str, Any]
    warnings: list[str]
    digest: str
    zip_sha256: str
    archive_sha256: str
    created_at: str
    files: tuple[FileEntry, ...]
    _by_path: dict[str, FileEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_path", {entry.path: entry for entry in self.files})

    def file(self, path: str) -> FileEntry | None:
        return self._by_path.get(path)

    @property
    def skill_md(self) -> FileEntry:
        return self._by_path["SKILL.md"]

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.files)


# --- process-local LRU caches ---------------------------------------------------------------


class _LRU:
    """A thread-safe LRU bounded by a total cost (bytes for blobs, 1 per manifest)."""

    def __init__(self, capacity: Callable[[], int], *, max_share: int = 8) -> None:
        self._capacity = capacity
        self._max_share = max_share  # no entry may take more than capacity / max_share
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._cost = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Any, value: Any, cost: int = 1) -> None:
        capacity = self._capacity()
        if cost > capacity // self._max_share:  # one huge entry must not flush everything else
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._cost -= old[1]
            self._items[key] = (value, cost)
            self._cost += cost
            while self._cost > capacity and self._items:
                _, (_, dropped) = self._items.popitem(last=False)
                self._cost -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._cost = 0


_versions = _LRU(lambda: 256 * 1024)  # cost: files per manifest
_blobs = _LRU(lambda: settings.SKILLS_BLOB_CACHE_BYTES)
_rendered = _LRU(lambda: 16 * 1024 * 1024)  # rendered HTML of SKILL.md bodies, by version id
# Built zips, apart from blobs: a large skill's zip (over an eighth of the blob cache) would
# never be kept there and was rebuilt on every request.
_zips = _LRU(lambda: settings.SKILLS_ZIP_CACHE_BYTES, max_share=2)
_zip_builds_in_flight: dict[tuple[str, str], asyncio.Future[bytes]] = {}
zip_builds = 0  # zips built by this process (observability, and the tests)


def clear_local() -> None:
    """Forget every process-local cache (tests)."""
    _versions.clear()
    _blobs.clear()
    _rendered.clear()
    _zips.clear()


# --- refs -----------------------------------------------------------------------------------


def _load_ref(name: str) -> dict[str, Any]:
    skill = (
        Skill.objects.filter(name=name, hidden=False, latest_version__isnull=False)
        .values("id", "account_id", "visibility", "latest_version_id")
        .first()
    )
    if skill is None:
        return {"missing": True}
    numbers = SkillVersion.objects.filter(skill_id=skill["id"], hidden=False).values_list(
        "number", "id"
    )
    return {
        "skill_id": skill["id"],
        "account_id": skill["account_id"],
        "public": skill["visibility"] == Visibility.PUBLIC,
        "latest": skill["latest_version_id"],
        "numbers": {str(number): vid for number, vid in numbers},
    }


def _ref(cached: dict[str, Any]) -> Ref | None:
    return None if cached.get("missing") else Ref(**cached)


def _ttl(cached: dict[str, Any]) -> int:
    return MISSING_TTL if cached.get("missing") else REF_TTL


def ref_get(name: str) -> Ref | None:
    return _ref(sharedcache.fetch(_ref_key(name), lambda: _load_ref(name), _ttl))


async def aref_get(name: str) -> Ref | None:
    return _ref(await sharedcache.afetch(_ref_key(name), lambda: off_loop(_load_ref)(name), _ttl))


def invalidate_on_commit(skill: Skill) -> None:
    """After the current transaction commits, publish the skill's new state everywhere."""
    name, account_id = skill.name, skill.account_id

    keys = (_ref_key(name), _PUBLIC_LIST, _account_list_key(account_id))

    def publish() -> None:
        fresh = _load_ref(name)
        sharedcache.set(_ref_key(name), fresh, _ttl(fresh))
        sharedcache.delete(*keys[1:])

    # Now, so that this transaction's own reads see the change, and again once it commits, so
    # that no reader who loaded the old rows meanwhile keeps them in the cache.
    sharedcache.delete(*keys)
    transaction.on_commit(publish)


def forget_deleted_skill(sender: type[Skill], instance: Skill, **_: Any) -> None:
    """``post_delete`` of a skill, however it is deleted (the account's cascade included): the
    invariant "a deleted skill is served from no cache" (connected in ``SkillsConfig.ready``)."""
    invalidate_on_commit(instance)


# --- versions, blobs, zips ------------------------------------------------------------------


def _load_version(version_id: int) -> Version | None:
    row = (
        SkillVersion.objects.filter(pk=version_id)
        .values(
            "id",
            "skill__name",
            "number",
            "description",
            "license",
            "compatibility",
            "allowed_tools",
            "metadata",
            "frontmatter",
            "warnings",
            "digest",
            "zip_sha256",
            "archive_sha256",
            "created_at",
        )
        .first()
    )
    if row is None:
        return None
    files = tuple(
        FileEntry(path, sha, size, is_text)
        for path, sha, size, is_text in SkillFile.objects.filter(version_id=version_id)
        .order_by("path")
        .values_list("path", "blob_id", "size", "blob__is_text")
    )
    return Version(
        id=row["id"],
        name=row["skill__name"],
        number=row["number"],
        description=row["description"],
        license=row["license"],
        compatibility=row["compatibility"],
        allowed_tools=row["allowed_tools"],
        metadata=row["metadata"],
        frontmatter=row["frontmatter"],
        warnings=row["warnings"],
        digest=row["digest"],
        zip_sha256=row["zip_sha256"],
        archive_sha256=row["archive_sha256"],
        created_at=row["created_at"].isoformat(),
        files=files,
    )


def version_get(version_id: int) -> Version | None:
    version = _versions.get(version_id)
    if version is None:
        version = _load_version(version_id)
        if version is not None:
            _versions.put(version_id, version, len(version.files) + 1)
    return version


async def aversion_get(version_id: int) -> Version | None:
    version = _versions.get(version_id)
    if version is None:
        version = await off_loop(version_get)(version_id)
    return version


def lookup(name: str, number: int | None, account_id: int | None) -> Version | None:
    """The version ``name[@number]`` that a reader (``account_id`` of a capability URL) may see."""
    ref = ref_get(name)
    if ref is None or not ref.readable_by(account_id):
        return None
    version_id = ref.version_id(number)
    return None if version_id is None else version_get(version_id)


async def alookup(name: str, number: int | None, account_id: int | None) -> Version | None:
    ref = await aref_get(name)
    if ref is None or not ref.readable_by(account_id):
        return None
    version_id = ref.version_id(number)
    return None if version_id is None else await aversion_get(version_id)


def blob_get(sha256: str) -> bytes:
    content = _blobs.get(sha256)
    if content is None:
        content = bytes(Blob.objects.values_list("content", flat=True).get(pk=sha256))
        _blobs.put(sha256, content, len(content))
    return content


async def ablob_get(sha256: str) -> bytes:
    content = _blobs.get(sha256)
    if content is None:
        content = await off_loop(blob_get)(sha256)
    return content


def version_contents(version: Version) -> list[tuple[str, bytes]]:
    return [(entry.path, blob_get(entry.sha256)) for entry in version.files]


def _zip_key(version: Version, root: bool) -> tuple[str, str]:
    return ("zip", version.archive_sha256 if root else version.zip_sha256)


def zip_get(version: Version, *, root: bool) -> bytes:
    """The version as a zip: files under ``<name>/``, or at the archive root (``root``)."""
    global zip_builds
    key = _zip_key(version, root)
    content = _zips.get(key)
    if content is None:
        zip_builds += 1
        content = build_zip(version_contents(version), folder="" if root else f"{version.name}/")
        _zips.put(key, content, len(content))
    return content


async def azip_get(version: Version, *, root: bool) -> bytes:
    """``zip_get`` for the event loop. A zip is built once per process however many requests
    ask for it at once (they wait for the one build). Its files are read from the database on
    the shared thread one file per hop (credential look-ups and sync views run between them),
    and deflated on a worker thread of their own, so that a large skill's build never holds
    that thread for longer than one file's read."""
    global zip_builds
    key = _zip_key(version, root)
    content = _zips.get(key)
    if content is not None:
        return content
    building = _zip_builds_in_flight.get(key)
    if building is not None:
        return await asyncio.shield(building)
    future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    _zip_builds_in_flight[key] = future
    try:
        zip_builds += 1
        files = [(entry.path, await ablob_get(entry.sha256)) for entry in version.files]
        folder = "" if root else f"{version.name}/"
        content = await asyncio.to_thread(build_zip, files, folder=folder)
        _zips.put(key, content, len(content))
        future.set_result(content)
        return content
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: no "never retrieved" warning when nobody waited
        raise
    finally:
        _zip_builds_in_flight.pop(key, None)


def rendered_get(version_id: int) -> str | None:
    return _rendered.get(version_id)


def rendered_put(version_id: int, html: str) -> None:
    _rendered.put(version_id, html, len(html))


# --- listings -------------------------------------------------------------------------------


def _load_listing(skills: Any) -> list[dict[str, Any]]:
    rows = list(
        skills.values(
            "name",
            "latest_version_id",
            "latest_version__number",
            "description",
            "latest_version__created_at",
            "latest_version__digest",
            "latest_version__archive_sha256",
            "latest_version__zip_sha256",
        ).order_by("name")
    )
    files: dict[int, list[list[Any]]] = {}
    for version_id, path, size, sha, is_text in (
        SkillFile.objects.filter(version_id__in=[r["latest_version_id"] for r in rows])
        .order_by("version_id", "path")
        .values_list("version_id", "path", "size", "blob_id", "blob__is_text")
    ):
        files.setdefault(version_id, []).append([path, size, sha, is_text])
    return [
        {
            "name": row["name"],
            "description": row["description"],
            "version": row["latest_version__number"],
            "updated_at": row["latest_version__created_at"].isoformat(),
            "digest": row["latest_version__digest"],
            "zip_sha256": row["latest_version__zip_sha256"],
            "archive_sha256": row["latest_version__archive_sha256"],
            "files": files.get(row["latest_version_id"], []),
        }
        for row in rows
    ]


def _cached_listing(key: str, load: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return sharedcache.fetch(key, load, LIST_TTL)


def listing(account_id: int | None) -> list[dict[str, Any]]:
    """The latest version of every skill a reader may see, sorted by name (for the indexes)."""
    entries = _cached_listing(_PUBLIC_LIST, lambda: _load_listing(Skill.objects.public()))
    if account_id is not None:
        private = _cached_listing(
            _account_list_key(account_id),
            lambda: _load_listing(
                Skill.objects.visible().filter(account_id=account_id, visibility=Visibility.PRIVATE)
            ),
        )
        entries = sorted([*entries, *private], key=lambda entry: entry["name"])
    return entries


async def alisting(account_id: int | None) -> list[dict[str, Any]]:
    return await off_loop(listing)(account_id)
