"""``manage.py import_skills PATH|URL --account EMAIL``: import from a folder or an archive.

A URL is fetched by ``hepgg.lib.download``: https only (``--allow-http``), public addresses only
(``--allow-private-network`` for loopback and private ones), every redirect checked, at most
``SKILLS_MAX_UPLOAD_BYTES`` counted as they arrive, within ``--timeout`` seconds in all; errors
never show the URL's userinfo or query string.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Account
from hepgg.lib.download import DownloadPolicy, DownloadRefused, download
from skills.archives import Limits, UploadRejected, read_directory
from skills.models import Visibility
from skills.services import ParsedUpload, SkillNameTaken, skills_import, upload_parse


class Command(BaseCommand):
    help = (
        "Import skills (every folder holding a SKILL.md) from a folder, a zip/.skill/tar.gz/JSON "
        "file, or an http(s) URL of one, as new versions owned by --account."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", help="a folder, an archive file, or an http(s) URL")
        parser.add_argument("--account", required=True, help="the owning account's email")
        parser.add_argument("--visibility", choices=Visibility.values, default=None)
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
        parser.add_argument(
            "--allow-http", action="store_true", help="fetch an http:// URL (default: https only)"
        )
        parser.add_argument(
            "--allow-private-network",
            action="store_true",
            help="fetch from loopback and private addresses (default: public addresses only)",
        )
        parser.add_argument(
            "--timeout", type=float, default=60.0, help="seconds for the whole download"
        )
        parser.add_argument("--ca-file", help="a CA bundle to verify https with")

    def handle(self, *args: Any, **options: Any) -> None:
        account = Account.objects.filter(email__iexact=options["account"]).first()
        if account is None:
            raise CommandError(f"no account with the email {options['account']!r}")
        source: str = options["source"]
        try:
            with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
                upload = self._read(source, spool, options)
            imported = skills_import(
                account=account, files=upload.files, visibility=upload.visibility
            )
        except UploadRejected as exc:
            lines = "\n".join(f"  {p.path or '(upload)'}: {p.message}" for p in exc.problems)
            raise CommandError(f"nothing imported:\n{lines}") from None
        except SkillNameTaken as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps({"skills": [item.as_dict() for item in imported]}))
            return
        for item in imported:
            self.stdout.write(f"{item.name}@{item.version} ({len(item.files)} files)")
            for warning in item.warnings:
                self.stdout.write(f"  warning: {warning}")

    def _read(self, source: str, spool: IO[bytes], options: dict[str, Any]) -> ParsedUpload:
        visibility: str | None = options["visibility"]
        if "://" in source:
            policy = DownloadPolicy(
                max_bytes=settings.SKILLS_MAX_UPLOAD_BYTES,
                timeout=options["timeout"],
                allow_http=options["allow_http"],
                allow_private=options["allow_private_network"],
                ca_file=options["ca_file"],
            )
            try:
                download(source, spool, policy)
            except DownloadRefused as exc:
                raise CommandError(f"nothing imported: {exc}") from None
            return upload_parse(stream=spool, visibility=visibility)
        path = Path(source)
        if path.is_dir():
            return ParsedUpload(read_directory(path, Limits.from_settings()), visibility)
        if not path.is_file():
            raise CommandError(f"{source} is neither a folder, a file nor a URL")
        with path.open("rb") as stream:
            return upload_parse(stream=stream, visibility=visibility)
