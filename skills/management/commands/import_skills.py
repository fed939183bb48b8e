"""``manage.py import_skills PATH|URL --account EMAIL``: import from a folder or an archive."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import IO, Any

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Account
from skills.archives import Limits, UploadRejected, read_directory
from skills.models import Visibility
from skills.services import ParsedUpload, SkillNameTaken, skills_import, upload_parse


def _download(url: str, into: IO[bytes]) -> None:
    """Stream ``url`` into ``into``, refusing bodies over the upload limit."""
    limit = settings.SKILLS_MAX_UPLOAD_BYTES
    received = 0
    with httpx.stream("GET", url, follow_redirects=True, timeout=60) as response:
        if response.status_code != 200:
            raise CommandError(f"GET {url} answered {response.status_code}")
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > limit:
                raise CommandError(f"{url} is bigger than {limit} bytes (SKILLS_MAX_UPLOAD_BYTES)")
            into.write(chunk)
    into.seek(0)


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

    def handle(self, *args: Any, **options: Any) -> None:
        account = Account.objects.filter(email__iexact=options["account"]).first()
        if account is None:
            raise CommandError(f"no account with the email {options['account']!r}")
        source: str = options["source"]
        try:
            with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
                upload = self._read(source, spool, options["visibility"])
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

    def _read(self, source: str, spool: IO[bytes], visibility: str | None) -> ParsedUpload:
        if source.startswith(("http://", "https://")):
            _download(source, spool)
            return upload_parse(stream=spool, visibility=visibility)
        path = Path(source)
        if path.is_dir():
            return ParsedUpload(read_directory(path, Limits.from_settings()), visibility)
        if not path.is_file():
            raise CommandError(f"{source} is neither a folder, a file nor an http(s) URL")
        with path.open("rb") as stream:
            return upload_parse(stream=stream, visibility=visibility)
