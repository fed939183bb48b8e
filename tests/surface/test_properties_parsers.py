"""Property tests (Hypothesis) for the parsers we own on the skills side and for the log filter:
SKILL.md frontmatter, archive and path validation, and ``hepgg.lib.redaction``."""

from __future__ import annotations

import io
import json
import logging
import tarfile
import urllib.parse
import zipfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from accounts.tokens import Kind, generate
from hepgg.lib.redaction import RedactSecretsFilter, redact
from skills.archives import Limits, UploadRejected, normalize_path, read_tar_gz, read_zip
from skills.bundle import bundles_from_files, parse_frontmatter

PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = Limits(max_files=50, max_unpacked_bytes=1_000_000, max_file_bytes=500_000)


# -- SKILL.md frontmatter -----------------------------------------------------------------------
_yaml_scalar = st.one_of(
    st.text(max_size=30),
    st.sampled_from([".inf", "-.inf", ".nan", "~", "2026-01-01", "1e400", "0x1F", "!!binary aGk="]),
    st.integers(),
)


@PROPERTIES
@given(st.binary(max_size=400))
def test_frontmatter_of_any_bytes_parses_or_is_rejected_with_a_problem(content: bytes) -> None:
    try:
        parse_frontmatter("SKILL.md", content)
    except UploadRejected as exc:
        assert exc.problems and exc.problems[0].path == "SKILL.md"


@PROPERTIES
@given(st.dictionaries(st.sampled_from(["name", "description", "license", "x"]), _yaml_scalar))
@example({"name": "ok", "description": "fine", "x": ".inf"})
@example({"name": "ok", "description": "fine", "x": "-.inf"})
def test_accepted_frontmatter_is_always_storable_as_json(fields: dict[str, object]) -> None:
    source = "".join(f"{key}: {value}\n" for key, value in fields.items())
    try:
        data = parse_frontmatter("SKILL.md", f"---\n{source}---\nbody\n".encode())
    except UploadRejected:
        return
    json.dumps(data, allow_nan=False)  # what a JSON column (PostgreSQL jsonb) accepts


@PROPERTIES
@given(st.dictionaries(st.text(max_size=20), st.binary(max_size=100), max_size=6))
def test_any_set_of_files_becomes_bundles_or_a_rejection(files: dict[str, bytes]) -> None:
    try:
        bundles_from_files(files)
    except UploadRejected as exc:
        assert exc.problems


# -- archives and paths -------------------------------------------------------------------------
@PROPERTIES
@given(st.text(max_size=60))
def test_a_normalised_path_is_relative_clean_and_stable(raw: str) -> None:
    try:
        path = normalize_path(raw)
    except UploadRejected:
        return
    parts = path.split("/")
    assert not path.startswith("/") and "\\" not in path and ".." not in parts
    assert "" not in parts and "." not in parts
    assert normalize_path(path) == path


@PROPERTIES
@given(st.binary(max_size=2000))
def test_any_bytes_read_as_a_zip_or_tar_give_files_or_a_rejection(body: bytes) -> None:
    for reader in (read_zip, read_tar_gz):
        try:
            files = reader(io.BytesIO(body), LIMITS)
        except UploadRejected as exc:
            assert exc.problems
        else:
            assert all(isinstance(v, bytes) for v in files.values())


@PROPERTIES
@given(
    st.dictionaries(
        st.text(
            st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
            min_size=1,
            max_size=30,
        ),
        st.binary(max_size=50),
        max_size=8,
    )
)
def test_archives_with_any_member_names_never_escape_their_root(files: dict[str, bytes]) -> None:
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    tarred = io.BytesIO()
    import gzip

    with gzip.GzipFile(fileobj=tarred, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    for reader, body in ((read_zip, zipped), (read_tar_gz, tarred)):
        body.seek(0)
        try:
            result = reader(body, LIMITS)
        except UploadRejected:
            continue
        for path in result:
            assert normalize_path(path) == path


# -- log redaction ------------------------------------------------------------------------------
def _secret(kind: Kind) -> str:
    return generate(kind).value


_context = st.text(max_size=12)


def _encodings(text: str) -> list[str]:
    """The forms a secret takes in what we log: plain, in JSON, URL-encoded, repr of bytes."""
    return [
        text,
        json.dumps({"value": text}),
        json.dumps(text, ensure_ascii=True),
        urllib.parse.quote(text),
        urllib.parse.quote(text, safe=""),
        repr(text.encode()),
        repr(text.encode("utf-16-le", "surrogatepass")[:0] + text.encode()),
        repr(text),
    ]


@PROPERTIES
@given(st.sampled_from(list(Kind)), _context, _context, st.data())
@example(Kind.SKILLS, "\xab", "", None)  # repr(b"\xab" + key): "\\xab<key>", a hex char before
@example(Kind.SKILLS, "/skills/k/", "/x", None)  # quote(safe=""): "%2Fk%2F<key>", F before
@example(Kind.SKILLS, "é", "", None)  # ensure_ascii JSON: "\\u00e9<key>"
@example(Kind.SKILLS, "", "0", None)  # a hex character right after the key
def test_no_secret_survives_redaction_in_any_position_or_encoding(
    kind: Kind, before: str, after: str, data: st.DataObject | None
) -> None:
    secret = _secret(kind)
    body = secret[len(secret) - 40 :]  # what must never be seen: past the display prefix
    for logged in _encodings(before + secret + after):
        cleaned = redact(logged)
        assert body not in cleaned, f"{kind.value} survived in {logged!r} -> {cleaned!r}"


@pytest.mark.parametrize("kind", list(Kind))
def test_the_log_filter_masks_secrets_in_arguments_and_tracebacks(kind: Kind) -> None:
    secret = _secret(kind)
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "got %r", (secret.encode(),), None)
    try:
        raise ValueError(f"bad {secret}")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    RedactSecretsFilter().filter(record)
    assert secret[-30:] not in record.getMessage()
    assert secret[-30:] not in (record.exc_text or "")
