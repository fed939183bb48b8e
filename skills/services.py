"""Writing the registry: imports and moderation. Every change refreshes the read caches.

Exceptions::

    UploadRejected (skills.archives)   400: the upload is refused, nothing stored; ``.problems``
    SkillNameTaken                     409: a skill of that name belongs to another account
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from django.db import IntegrityError, transaction

from accounts.models import Account
from skills import registry
from skills.archives import (
    Limits,
    UploadRejected,
    read_json_files,
    read_tar_gz,
    read_zip,
    sniff,
    zip_sha256,
)
from skills.bundle import SkillBundle, bundles_from_files
from skills.models import Blob, Skill, SkillFile, SkillVersion, Visibility

_BLOB_BATCH_BYTES = 4 * 1024 * 1024  # bound the size of one INSERT of blobs


class SkillNameTaken(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"the skill name {name!r} belongs to another account")
        self.name = name


@dataclass
class ParsedUpload:
    files: dict[str, bytes]
    visibility: str | None = None


@dataclass
class ImportedSkill:
    name: str
    version: int
    files: list[str]
    warnings: list[str] = field(default_factory=list)
    digest: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "files": self.files,
            "warnings": self.warnings,
            "digest": f"sha256:{self.digest}",
        }


def _visibility(value: object) -> str | None:
    if value in (None, ""):
        return None
    if value not in Visibility.values:
        raise UploadRejected.one("", "visibility must be 'public' or 'private'")
    return str(value)


def upload_parse(
    *, stream: IO[bytes], visibility: str | None = None, limits: Limits | None = None
) -> ParsedUpload:
    """Read a zip, a tar.gz or a JSON ``{"files": …}`` body. Raises ``UploadRejected``.

    The kind is sniffed from the first bytes (a ``.skill`` file is a zip), so a wrong
    ``Content-Type`` does no harm. ``stream`` must be seekable.
    """
    limits = limits or Limits.from_settings()
    head = stream.read(8)
    stream.seek(0)
    kind = sniff(head)
    if kind == "zip":
        return ParsedUpload(read_zip(stream, limits), _visibility(visibility))
    if kind == "tar.gz":
        return ParsedUpload(read_tar_gz(stream, limits), _visibility(visibility))
    if kind == "json":
        try:
            body = json.load(stream)
        except (ValueError, UnicodeDecodeError):
            raise UploadRejected.one("", "the body is not valid JSON") from None
        except RecursionError:  # json's C decoder recurses per nesting level
            raise UploadRejected.one("", "the JSON body is nested too deeply") from None
        if not isinstance(body, dict):
            raise UploadRejected.one("", 'the JSON body must be {"files": {…}}')
        return ParsedUpload(
            read_json_files(body.get("files"), limits),
            _visibility(body.get("visibility", visibility)),
        )
    raise UploadRejected.one(
        "", 'the body must be a zip, a tar.gz or JSON {"files": {"<path>": "<text>"}}'
    )


def _is_text(content: bytes) -> bool:
    if b"\x00" in content:
        return False
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass
class _Prepared:
    """A bundle with everything computed before the transaction (hashing, zips)."""

    bundle: SkillBundle
    shas: dict[str, str]
    digest: str
    zip_sha256: str
    archive_sha256: str


def _prepare(bundle: SkillBundle) -> _Prepared:
    shas = {path: hashlib.sha256(data).hexdigest() for path, data in bundle.files.items()}
    items = list(bundle.files.items())
    return _Prepared(
        bundle=bundle,
        shas=shas,
        digest=bundle.digest,
        zip_sha256=zip_sha256(items, folder=f"{bundle.name}/"),
        archive_sha256=zip_sha256(items),
    )


def _store_blobs(prepared: Iterable[_Prepared]) -> None:
    wanted: dict[str, bytes] = {}
    for item in prepared:
        for path, sha in item.shas.items():
            wanted.setdefault(sha, item.bundle.files[path])
    present = set(Blob.objects.filter(pk__in=list(wanted)).values_list("pk", flat=True))
    batch: list[Blob] = []
    batch_bytes = 0
    for sha, content in wanted.items():
        if sha in present:
            continue
        batch.append(
            Blob(sha256=sha, size=len(content), is_text=_is_text(content), content=content)
        )
        batch_bytes += len(content)
        if batch_bytes >= _BLOB_BATCH_BYTES:
            Blob.objects.bulk_create(batch, ignore_conflicts=True)
            batch, batch_bytes = [], 0
    if batch:
        Blob.objects.bulk_create(batch, ignore_conflicts=True)


def _import_locked(
    *, account: Account, prepared: list[_Prepared], visibility: str | None
) -> list[ImportedSkill]:
    names = [item.bundle.name for item in prepared]
    existing = {s.name: s for s in Skill.objects.select_for_update().filter(name__in=names)}
    for name, skill in existing.items():
        if skill.account_id != account.pk:
            raise SkillNameTaken(name)
    _store_blobs(prepared)
    results: list[ImportedSkill] = []
    for item in prepared:
        bundle = item.bundle
        skill = existing.get(bundle.name)
        if skill is None:
            skill = Skill.objects.create(
                account=account,
                name=bundle.name,
                visibility=visibility or Visibility.PUBLIC,
                description=bundle.description,
            )
        elif visibility and skill.visibility != visibility:
            # Without an explicit visibility a new version keeps the skill's: a private skill
            # must not turn public because someone re-imported it without the parameter.
            skill.visibility = visibility
            skill.save(update_fields=["visibility", "updated_at"])
        skill.last_number += 1
        skill.save(update_fields=["last_number"])
        version = SkillVersion.objects.create(
            skill=skill,
            number=skill.last_number,
            frontmatter=bundle.frontmatter,
            description=bundle.description,
            license=bundle.text_field("license")[:500],
            compatibility=bundle.text_field("compatibility")[:1000],
            metadata=bundle.metadata,
            allowed_tools=bundle.text_field("allowed-tools"),
            warnings=bundle.warnings,
            digest=item.digest,
            zip_sha256=item.zip_sha256,
            archive_sha256=item.archive_sha256,
            file_count=len(bundle.files),
            total_size=sum(len(data) for data in bundle.files.values()),
        )
        SkillFile.objects.bulk_create(
            SkillFile(version=version, path=path, blob_id=sha, size=len(bundle.files[path]))
            for path, sha in sorted(item.shas.items())
        )
        skill.refresh_latest()
        registry.invalidate_on_commit(skill)
        results.append(
            ImportedSkill(
                name=bundle.name,
                version=version.number,
                files=sorted(bundle.files),
                warnings=list(bundle.warnings),
                digest=item.digest,
            )
        )
    return results


def skills_import(
    *, account: Account, files: dict[str, bytes], visibility: str | None = None
) -> list[ImportedSkill]:
    """Store every skill found in ``files`` as a new immutable version, all or nothing.

    ``visibility`` applies to the imported skills (None: public for a new skill, unchanged for an
    existing one). Raises ``UploadRejected`` (400) or ``SkillNameTaken`` (409); either way
    nothing is stored.
    """
    bundles = bundles_from_files(files)
    prepared = [_prepare(bundle) for bundle in bundles]
    for attempt in range(2):
        try:
            with transaction.atomic():
                return _import_locked(account=account, prepared=prepared, visibility=visibility)
        except IntegrityError:
            # Another import created one of these names between our lock and our insert; the
            # retry sees it (and answers 409 if it is another account's).
            if attempt:
                raise
    raise AssertionError("unreachable")


def skill_update(
    *, skill: Skill, visibility: str | None = None, hidden: bool | None = None
) -> None:
    """Moderation: change a skill's visibility or hide it; every process sees it at once."""
    fields = ["updated_at"]
    if visibility is not None:
        skill.visibility = _visibility(visibility) or skill.visibility
        fields.append("visibility")
    if hidden is not None:
        skill.hidden = hidden
        fields.append("hidden")
    with transaction.atomic():
        skill.save(update_fields=fields)
        registry.invalidate_on_commit(skill)


def skill_delete(*, skill: Skill) -> None:
    """Delete a skill with all its versions (its name becomes free); prune orphan blobs.

    The caches follow by ``registry.forget_deleted_skill`` (a ``post_delete`` receiver, so that
    the account's cascade is covered too)."""
    with transaction.atomic():
        skill.delete()
        blobs_prune()


def skill_version_update(*, version: SkillVersion, hidden: bool) -> None:
    """Hide or show one version; unpinned URLs move to the newest version still shown."""
    with transaction.atomic():
        version.hidden = hidden
        version.save(update_fields=["hidden"])
        version.skill.refresh_latest()
        registry.invalidate_on_commit(version.skill)


def skill_version_delete(*, version: SkillVersion) -> None:
    """Delete one version for good (its number is never reused); prune orphan blobs."""
    skill = version.skill
    with transaction.atomic():
        if skill.latest_version_id == version.pk:
            skill.latest_version = None
            skill.save(update_fields=["latest_version"])
        version.delete()
        skill.refresh_latest()
        registry.invalidate_on_commit(skill)
        blobs_prune()


def blobs_prune() -> int:
    """Delete blobs no version refers to any more; returns how many."""
    orphans = Blob.objects.exclude(pk__in=SkillFile.objects.values("blob_id"))
    count, _ = orphans.delete()
    return count
