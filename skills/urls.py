"""The skills site, relative to its root: the root of a ``SKILLS_HOSTS`` host, else ``/skills/``.

Every read path also exists under ``k/<key>/`` (a skills access key: the account's private skills
included), where ``POST import`` adds skills too.
"""

from __future__ import annotations

from django.urls import include, path, register_converter

from skills import views


class RefConverter:
    """``name`` or ``name@version``; names cannot hold a dot, so ``.zip`` never belongs to one."""

    regex = r"[a-z0-9-]{1,64}(?:@[0-9]{1,9})?"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class KeyConverter(RefConverter):
    # Any segment: a malformed key must reach the view and get the site's one 404.
    regex = r"[^/]{1,200}"


class SpaceConverter(RefConverter):
    regex = r"skills|agent-skills"


register_converter(RefConverter, "ref")
register_converter(KeyConverter, "key")
register_converter(SpaceConverter, "space")

site = [
    path("", views.site_index),
    path("llms.txt", views.llms_txt),
    path("index.json", views.index_json),
    path(".well-known/skills/index.json", views.legacy_index),
    path(".well-known/agent-skills/index.json", views.discovery_index),
    path(".well-known/<space:space>/<ref:ref>.zip", views.archive_root),
    path(".well-known/<space:space>/<ref:ref>/<path:path>", views.raw_file),
    path("<ref:ref>.zip", views.archive_zip),
    path("<ref:ref>", views.skill_page),
    path("<ref:ref>/", views.skill_page),
    path("<ref:ref>/<path:path>", views.raw_file),
]

urlpatterns = [
    path("k/<key:key>/import", views.skill_import),
    path("k/<key:key>/", include(site)),
    *site,
]
