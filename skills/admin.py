"""Skill moderation in the dashboard: list, search, hide or delete skills and versions, change
visibility, read warnings, and upload skills for an account.

Every change goes through ``skills.services`` so the site's caches follow at once; the admin
never edits a version's content (versions are immutable).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from accounts.models import Account
from hepgg.lib.admin import ReadOnlyInline
from hepgg.lib.bodylimit import BodyLimit, body_limit, plain_too_large
from skills import services
from skills.archives import UploadRejected
from skills.models import Skill, SkillFile, SkillVersion, Visibility


def _upload_limit() -> int:
    """The upload page's body limit: the archive plus the other fields and multipart framing."""
    return settings.SKILLS_MAX_UPLOAD_BYTES + 64 * 1024


class UploadForm(forms.Form):
    account = forms.ModelChoiceField(queryset=Account.objects.all())
    archive = forms.FileField(help_text='A zip (or .skill), a tar.gz, or JSON {"files": {…}}.')
    visibility = forms.ChoiceField(
        choices=[("", "public for new skills, unchanged for existing ones"), *Visibility.choices],
        required=False,
    )


class SkillVersionInline(ReadOnlyInline):
    model = SkillVersion
    fields = [
        "number",
        "description",
        "file_count",
        "total_size",
        "hidden",
        "warning_count",
        "created_at",
    ]
    readonly_fields = fields

    @admin.display(description="warnings")
    def warning_count(self, version: SkillVersion) -> int:
        return len(version.warnings)


@admin.register(Skill)
class SkillAdmin(admin.ModelAdmin):
    list_display = ["name", "account", "visibility", "hidden", "latest_number", "updated_at"]
    list_filter = ["visibility", "hidden"]
    list_select_related = ["account", "latest_version"]
    search_fields = ["name", "description", "account__email"]
    readonly_fields = [
        "public_id",
        "name",
        "account",
        "description",
        "latest_version",
        "last_number",
        "created_at",
        "updated_at",
    ]
    fields = [*readonly_fields[:4], "visibility", "hidden", *readonly_fields[4:]]
    inlines = [SkillVersionInline]
    actions = ["make_public", "make_private", "hide", "unhide", "delete_skills"]
    change_list_template = "skills/admin/skill_changelist.html"

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # ours prunes blobs and refreshes the caches
        return actions

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # skills arrive by import (the upload page), never typed in

    @admin.display(description="latest")
    def latest_number(self, skill: Skill) -> str:
        return f"v{skill.latest_version.number}" if skill.latest_version else "—"

    def save_model(self, request: HttpRequest, obj: Skill, form: Any, change: bool) -> None:
        services.skill_update(skill=obj, visibility=obj.visibility, hidden=obj.hidden)

    def delete_model(self, request: HttpRequest, obj: Skill) -> None:
        services.skill_delete(skill=obj)

    def _each(
        self, request: HttpRequest, queryset: QuerySet[Skill], verb: str, **change: Any
    ) -> None:
        skills = list(queryset)
        for skill in skills:
            services.skill_update(skill=skill, **change)
        self.message_user(request, f"{verb} {len(skills)} skill(s).", messages.SUCCESS)

    @admin.action(description="Make selected skills public")
    def make_public(self, request: HttpRequest, queryset: QuerySet[Skill]) -> None:
        self._each(request, queryset, "Made public", visibility=Visibility.PUBLIC)

    @admin.action(description="Make selected skills private")
    def make_private(self, request: HttpRequest, queryset: QuerySet[Skill]) -> None:
        self._each(request, queryset, "Made private", visibility=Visibility.PRIVATE)

    @admin.action(description="Hide selected skills (moderation)")
    def hide(self, request: HttpRequest, queryset: QuerySet[Skill]) -> None:
        self._each(request, queryset, "Hid", hidden=True)

    @admin.action(description="Unhide selected skills")
    def unhide(self, request: HttpRequest, queryset: QuerySet[Skill]) -> None:
        self._each(request, queryset, "Unhid", hidden=False)

    @admin.action(description="Delete selected skills and all their versions")
    def delete_skills(self, request: HttpRequest, queryset: QuerySet[Skill]) -> None:
        skills = list(queryset)
        for skill in skills:
            services.skill_delete(skill=skill)
        self.message_user(request, f"Deleted {len(skills)} skill(s).", messages.SUCCESS)

    def get_urls(self) -> list[Any]:
        view = body_limit(BodyLimit(_upload_limit, plain_too_large))(
            self.admin_site.admin_view(self.upload_view)
        )
        upload = path("upload/", view, name="skills_skill_upload")
        return [upload, *super().get_urls()]

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_change_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        form = UploadForm(request.POST or None, request.FILES or None)
        problems: list[dict[str, str]] = []
        if request.method == "POST" and form.is_valid():
            stream = form.cleaned_data["archive"]
            try:
                upload = services.upload_parse(
                    stream=stream, visibility=form.cleaned_data["visibility"] or None
                )
                imported = services.skills_import(
                    account=form.cleaned_data["account"],
                    files=upload.files,
                    visibility=upload.visibility,
                )
            except UploadRejected as exc:
                problems = [p.as_dict() for p in exc.problems]
            except services.SkillNameTaken as exc:
                problems = [{"path": exc.name, "message": str(exc)}]
            else:
                for item in imported:
                    text = f"Imported {item.name} v{item.version} ({len(item.files)} files)"
                    if item.warnings:
                        text += " with warnings: " + "; ".join(item.warnings)
                    self.message_user(
                        request, text, messages.WARNING if item.warnings else messages.SUCCESS
                    )
                return HttpResponseRedirect(reverse("admin:skills_skill_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Upload skills",
            "form": form,
            "problems": problems,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "skills/admin/upload.html", context)


class SkillFileInline(admin.TabularInline):
    model = SkillFile
    fields = ["path", "size", "blob"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SkillVersion)
class SkillVersionAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "account",
        "file_count",
        "total_size",
        "hidden",
        "warning_count",
        "created_at",
    ]
    list_filter = ["hidden", "skill__visibility"]
    list_select_related = ["skill", "skill__account"]
    search_fields = ["skill__name", "description", "skill__account__email"]
    readonly_fields = [
        "public_id",
        "skill",
        "number",
        "description",
        "license",
        "compatibility",
        "allowed_tools",
        "metadata",
        "frontmatter",
        "warning_list",
        "digest",
        "zip_sha256",
        "archive_sha256",
        "file_count",
        "total_size",
        "created_at",
    ]
    fields = [*readonly_fields[:3], "hidden", *readonly_fields[3:]]
    inlines = [SkillFileInline]
    actions = ["hide", "unhide", "delete_versions"]

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="account")
    def account(self, version: SkillVersion) -> str:
        return version.skill.account.email

    @admin.display(description="warnings")
    def warning_count(self, version: SkillVersion) -> int:
        return len(version.warnings)

    @admin.display(description="warnings")
    def warning_list(self, version: SkillVersion) -> str:
        if not version.warnings:
            return "—"
        return format_html(
            "<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((w,) for w in version.warnings))
        )

    def save_model(self, request: HttpRequest, obj: SkillVersion, form: Any, change: bool) -> None:
        services.skill_version_update(version=obj, hidden=obj.hidden)

    def delete_model(self, request: HttpRequest, obj: SkillVersion) -> None:
        services.skill_version_delete(version=obj)

    @admin.action(description="Hide selected versions (moderation)")
    def hide(self, request: HttpRequest, queryset: QuerySet[SkillVersion]) -> None:
        self._set_hidden(request, queryset, hidden=True)

    @admin.action(description="Unhide selected versions")
    def unhide(self, request: HttpRequest, queryset: QuerySet[SkillVersion]) -> None:
        self._set_hidden(request, queryset, hidden=False)

    def _set_hidden(
        self, request: HttpRequest, queryset: QuerySet[SkillVersion], *, hidden: bool
    ) -> None:
        versions = list(queryset.select_related("skill"))
        for version in versions:
            services.skill_version_update(version=version, hidden=hidden)
        verb = "Hid" if hidden else "Unhid"
        self.message_user(request, f"{verb} {len(versions)} version(s).", messages.SUCCESS)

    @admin.action(description="Delete selected versions")
    def delete_versions(self, request: HttpRequest, queryset: QuerySet[SkillVersion]) -> None:
        versions = list(queryset.select_related("skill"))
        for version in versions:
            services.skill_version_delete(version=version)
        self.message_user(request, f"Deleted {len(versions)} version(s).", messages.SUCCESS)
