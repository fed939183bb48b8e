"""The skills site's views: thin, each one a lookup in ``skills.registry`` and a response.

Every read view takes an optional ``key`` (the ``/k/<key>/`` capability prefix). A wrong, revoked
or malformed key resolves to nothing and gets the same 404 as a missing skill; the lookup is by
the key's SHA-256 (``accounts.credentials``), so no comparison of secrets can leak timing.
Reads are async and make no query on a warm cache; the import is sync (it is all database).
"""

from __future__ import annotations

import tempfile
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from accounts.credentials import resolve
from accounts.models import Account
from accounts.tokens import Kind
from hepgg.lib import authfailures
from hepgg.lib.bodylimit import BodyLimit, body_limit
from skills import registry, rendering, responses
from skills.archives import UploadRejected
from skills.registry import Version
from skills.services import SkillNameTaken, skills_import, upload_parse

_READ = ["GET", "HEAD"]
_UPLOAD_CHUNK = 256 * 1024


async def _reader(key: str | None, request: HttpRequest) -> tuple[bool, int | None]:
    """``(ok, account_id)`` of the request's capability; ok is False for a bad key. A wrong key
    counts as a failed authentication of the client (slowed, then not even looked up)."""
    if key is None:
        return True, None
    client = authfailures.client_of_meta(request.META)
    if authfailures.blocked("skills", client) is not None:
        return False, None
    # ``resolve`` off the loop rather than ``aresolve``: the latter's ``database_sync_to_async``
    # closes the connection it runs on, which breaks a request served inside a transaction
    # (the test client's). One thread hop, on capability URLs only.
    identity = await registry.off_loop(resolve)(key, Kind.SKILLS)
    if identity is None:
        await authfailures.afailed("skills", client)
        return False, None
    return True, identity.account_id


def _split_ref(ref: str) -> tuple[str, int | None]:
    name, _, number = ref.partition("@")
    return name, int(number) if number else None


async def _version(ref: str, key: str | None, request: HttpRequest) -> Version | None:
    ok, account_id = await _reader(key, request)
    if not ok:
        return None
    name, number = _split_ref(ref)
    return await registry.alookup(name, number, account_id)


def _wants_html(request: HttpRequest) -> bool:
    return request.get_preferred_type(["text/markdown", "text/plain", "text/html"]) == "text/html"


async def _file_response(
    request: HttpRequest,
    version: Version,
    path: str,
    *,
    ref: str,
    key: str | None,
    vary_accept: bool = False,
) -> HttpResponse:
    entry = version.file(path)
    if entry is None:
        return responses.not_found(key=key)
    content = None if request.method == "HEAD" else await registry.ablob_get(entry.sha256)
    basename = path.rsplit("/", 1)[-1]
    return responses.raw(
        request,
        content,
        sha256=entry.sha256,
        size=entry.size,
        content_type=responses.media_type(path, is_text=entry.is_text),
        download_name=None if entry.is_text else basename,
        key=key,
        immutable="@" in ref,
        vary_accept=vary_accept,
    )


@require_http_methods(_READ)
async def raw_file(
    request: HttpRequest, ref: str, path: str, key: str | None = None, space: str | None = None
) -> HttpResponse:
    """``/<name>[@<version>]/<path>`` (and the same under ``/.well-known/<space>/``): raw bytes."""
    version = await _version(ref, key, request)
    if version is None:
        return responses.not_found(key=key)
    return await _file_response(request, version, path, ref=ref, key=key)


@require_http_methods(_READ)
async def skill_page(request: HttpRequest, ref: str, key: str | None = None) -> HttpResponse:
    """``/<name>`` and ``/<name>/``: the SKILL.md, or an HTML page for a browser."""
    version = await _version(ref, key, request)
    if version is None:
        return responses.not_found(key=key)
    if not _wants_html(request):
        return await _file_response(
            request, version, "SKILL.md", ref=ref, key=key, vary_accept=True
        )
    html = registry.rendered_get(version.id)
    if html is None:
        text = (await registry.ablob_get(version.skill_md.sha256)).decode()
        html = rendering.skill_md_html(text)
        registry.rendered_put(version.id, html)
    ref_state = await registry.aref_get(version.name)
    numbers = sorted((int(n) for n in ref_state.numbers), reverse=True) if ref_state else []
    root = responses.site_root(request, key)
    site = request.build_absolute_uri(root)
    return responses.page(
        request,
        render_to_string(
            "skills/skill.html",
            {
                "version": version,
                "skill_html": html,
                "root": root,
                "site": site,
                "pinned": "@" in ref,
                "numbers": numbers,
                "private": ref_state is not None and not ref_state.public,
                "files": version.files,
            },
        ),
        key=key,
    )


@require_http_methods(_READ)
async def archive_zip(request: HttpRequest, ref: str, key: str | None = None) -> HttpResponse:
    """``/<name>[@<version>].zip``: the bundle under a single top folder ``<name>/``."""
    return await _zip(request, ref, key, root=False)


@require_http_methods(_READ)
async def archive_root(
    request: HttpRequest, ref: str, key: str | None = None, space: str | None = None
) -> HttpResponse:
    """``/.well-known/<space>/<name>[@<version>].zip``: the discovery archive, files at root."""
    return await _zip(request, ref, key, root=True)


async def _zip(request: HttpRequest, ref: str, key: str | None, *, root: bool) -> HttpResponse:
    version = await _version(ref, key, request)
    if version is None:
        return responses.not_found(key=key)
    sha = version.archive_sha256 if root else version.zip_sha256
    etag_hit = request.headers.get("If-None-Match", "").find(sha) >= 0
    content = None if etag_hit else await registry.azip_get(version, root=root)
    return responses.raw(
        request,
        content,
        sha256=sha,
        size=None if content is None else len(content),
        content_type="application/zip",
        download_name=f"{ref}.zip",
        key=key,
        immutable="@" in ref,
    )


async def _listing(key: str | None, request: HttpRequest) -> tuple[bool, list[dict]]:
    ok, account_id = await _reader(key, request)
    if not ok:
        return False, []
    return True, await registry.alisting(account_id)


@require_http_methods(_READ)
async def site_index(request: HttpRequest, key: str | None = None) -> HttpResponse:
    """``/``: the markdown index, or an HTML page with search for a browser."""
    ok, entries = await _listing(key, request)
    if not ok:
        return responses.not_found(key=key)
    if not _wants_html(request):
        return _markdown_index(request, key, entries, vary_accept=True)
    site = responses.site_url(request, key)
    query = request.GET.get("q", "").strip()
    if query:
        folded = query.casefold()
        entries = [
            e
            for e in entries
            if folded in e["name"].casefold() or folded in e["description"].casefold()
        ]
    return responses.page(
        request,
        render_to_string(
            "skills/index.html",
            {
                "entries": entries,
                "query": query,
                "root": responses.site_root(request, key),
                "site": site,
                "private": key is not None,
            },
        ),
        key=key,
    )


@require_http_methods(_READ)
async def llms_txt(request: HttpRequest, key: str | None = None) -> HttpResponse:
    ok, entries = await _listing(key, request)
    if not ok:
        return responses.not_found(key=key)
    return _markdown_index(request, key, entries)


def _markdown_index(
    request: HttpRequest, key: str | None, entries: list[dict], *, vary_accept: bool = False
) -> HttpResponse:
    """The markdown index that ``/`` (for agents) and ``/llms.txt`` both serve."""
    site = responses.site_url(request, key)
    body = rendering.index_markdown(site_url=site, entries=entries, private=key is not None)
    return responses.text(
        request, body, content_type=responses.MARKDOWN, key=key, vary_accept=vary_accept
    )


@require_http_methods(_READ)
async def index_json(request: HttpRequest, key: str | None = None) -> HttpResponse:
    ok, entries = await _listing(key, request)
    if not ok:
        return responses.not_found(key=key)
    site = responses.site_url(request, key)
    return responses.json_body(
        request, rendering.index_json(site_url=site, entries=entries), key=key
    )


@require_http_methods(_READ)
async def legacy_index(request: HttpRequest, key: str | None = None) -> HttpResponse:
    ok, entries = await _listing(key, request)
    if not ok:
        return responses.not_found(key=key)
    return responses.json_body(request, rendering.legacy_index(entries), key=key)


@require_http_methods(_READ)
async def discovery_index(request: HttpRequest, key: str | None = None) -> HttpResponse:
    ok, entries = await _listing(key, request)
    if not ok:
        return responses.not_found(key=key)
    return responses.json_body(request, rendering.discovery_index(entries), key=key)


def _upload_too_large(limit: int, kwargs: dict[str, Any]) -> HttpResponse:
    problems = [{"path": "", "message": f"the body is bigger than {limit} bytes (the limit)"}]
    return responses.errors(413, problems, key=kwargs.get("key"))


@body_limit(BodyLimit(lambda: settings.SKILLS_MAX_UPLOAD_BYTES, _upload_too_large))
@csrf_exempt  # a capability URL, not a cookie session: there is no ambient authority to forge
@require_POST
def skill_import(request: HttpRequest, key: str) -> HttpResponse:
    """``POST /k/<key>/import``: a zip, a tar.gz or JSON files; 201, 400, 409 or 413.

    Behind a server, ``body_limit`` refuses a body over the limit while it arrives, before Django
    reads it; the checks here remain for callers that bypass ASGI (the test client).
    """
    client = authfailures.client_of_meta(request.META)
    wait = authfailures.blocked("skills", client)
    identity = resolve(key, Kind.SKILLS) if wait is None else None
    if identity is None:
        if wait is None:
            wait = authfailures.failed("skills", client).retry_after
        if wait is None:
            return responses.not_found(key=key)
        problem = {"path": "", "message": f"too many wrong keys; retry after {wait} seconds"}
        response = responses.errors(429, [problem], key=None)
        response["Retry-After"] = str(wait)
        return response
    limit = settings.SKILLS_MAX_UPLOAD_BYTES
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > limit:
        return _upload_too_large(limit, {"key": key})
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as body:
        received = 0
        while chunk := request.read(_UPLOAD_CHUNK):
            received += len(chunk)
            if received > limit:
                return _upload_too_large(limit, {"key": key})
            body.write(chunk)
        body.seek(0)
        try:
            upload = upload_parse(stream=body, visibility=request.GET.get("visibility"))
            account = Account.objects.get(pk=identity.account_id)
            imported = skills_import(
                account=account, files=upload.files, visibility=upload.visibility
            )
        except UploadRejected as exc:
            return responses.errors(400, [p.as_dict() for p in exc.problems], key=key)
        except SkillNameTaken as exc:
            return responses.errors(
                409, [{"path": f"{exc.name}/SKILL.md", "message": str(exc)}], key=key
            )
    return responses.created({"skills": [item.as_dict() for item in imported]}, key=key)
