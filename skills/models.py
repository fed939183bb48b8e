"""The skills registry: skills, their immutable versions, and content-addressed blobs.

A ``Skill`` belongs to one account and owns its name site-wide (URLs are ``/<name>``). Each
import appends a ``SkillVersion`` (numbered 1, 2, …) that is never edited afterwards, only hidden
or deleted by moderation. A version is a set of ``SkillFile`` rows, each naming a ``Blob`` by its
SHA-256, so identical files are stored once across every version and every skill.
"""

from __future__ import annotations

import uuid

from django.db import models

from accounts.models import Account


class Visibility(models.TextChoices):
    PUBLIC = "public", "public"
    PRIVATE = "private", "private (capability URL only)"


class Blob(models.Model):
    """File content, stored once per SHA-256 and shared by every version that holds it."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    size = models.PositiveBigIntegerField()
    # Decided once from the bytes: UTF-8 without NUL is served as text, anything else as a download.
    is_text = models.BooleanField()
    content = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.sha256[:12]}… ({self.size} bytes)"


class SkillQuerySet(models.QuerySet):
    def visible(self) -> SkillQuerySet:
        """Skills the site serves at all (moderation has not hidden them)."""
        return self.filter(hidden=False, latest_version__isnull=False)

    def public(self) -> SkillQuerySet:
        return self.visible().filter(visibility=Visibility.PUBLIC)

    def readable_by(self, account_id: int | None) -> SkillQuerySet:
        """Public skills, plus the private ones of ``account_id`` (a capability URL's account)."""
        if account_id is None:
            return self.public()
        return self.visible().filter(
            models.Q(visibility=Visibility.PUBLIC) | models.Q(account_id=account_id)
        )


class Skill(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="skills")
    name = models.CharField(max_length=64, unique=True)
    visibility = models.CharField(
        max_length=10, choices=Visibility.choices, default=Visibility.PUBLIC
    )
    hidden = models.BooleanField(default=False, help_text="Hidden by moderation: served nowhere.")
    # The newest version that moderation has not hidden; kept by ``Skill.refresh_latest``.
    latest_version = models.ForeignKey(
        "SkillVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    description = models.TextField(blank=True, help_text="The latest version's description.")
    # The highest version number ever given: deleted versions' numbers are never reused.
    last_number = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SkillQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_public(self) -> bool:
        return self.visibility == Visibility.PUBLIC

    def refresh_latest(self) -> None:
        """Point ``latest_version`` at the newest unhidden version (None when there is none)."""
        latest = self.versions.filter(hidden=False).order_by("-number").first()
        self.latest_version = latest
        self.description = latest.description if latest else self.description
        self.save(update_fields=["latest_version", "description", "updated_at"])


class SkillVersion(models.Model):
    """One immutable import of a skill. Unpinned URLs serve the newest unhidden version."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    skill = models.ForeignKey(Skill, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    # The SKILL.md frontmatter as parsed (every key), and the open spec's fields pulled out of it.
    frontmatter = models.JSONField(default=dict)
    description = models.TextField()
    license = models.CharField(max_length=500, blank=True)
    compatibility = models.CharField(max_length=1000, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    allowed_tools = models.TextField(blank=True)
    warnings = models.JSONField(default=list, blank=True)
    # sha256 over the bundle's manifest: the lines "<file sha256>  <path>\n", sorted by path,
    # exactly what `sha256sum` prints for the unpacked files (see ``skills.bundle.bundle_digest``).
    digest = models.CharField(max_length=64)
    # sha256 of the two zips built from this version (deterministic, so stable for its lifetime):
    # ``<name>.zip`` with the top folder ``<name>/``, and the discovery archive with files at root.
    zip_sha256 = models.CharField(max_length=64)
    archive_sha256 = models.CharField(max_length=64)
    file_count = models.PositiveIntegerField()
    total_size = models.PositiveBigIntegerField()
    hidden = models.BooleanField(default=False, help_text="Hidden by moderation: not served.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["skill__name", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["skill", "number"], name="one_number_per_version")
        ]

    def __str__(self) -> str:
        return f"{self.skill.name}@{self.number}"


class SkillFile(models.Model):
    version = models.ForeignKey(SkillVersion, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=1024)
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="+")
    size = models.PositiveBigIntegerField()

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(fields=["version", "path"], name="one_file_per_path")
        ]

    def __str__(self) -> str:
        return self.path
