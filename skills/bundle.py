"""From uploaded files to validated skill bundles: finding skills, parsing SKILL.md frontmatter.

Pure functions, no database. ``bundles_from_files`` finds every folder holding a SKILL.md (an
outer skill keeps the SKILL.md files nested inside it as plain files, as the ``skills`` CLI does),
parses and checks each one, and returns them with their lenient warnings, or raises
``UploadRejected`` with every strict error found.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from skills.archives import Problem, UploadRejected

SKILL_FILE = "SKILL.md"
NAME_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
MAX_NAME = 64
MAX_DESCRIPTION = 1024
MAX_FRONTMATTER_BYTES = 64 * 1024
SPEC_KEYS = ("name", "description", "license", "compatibility", "metadata", "allowed-tools")
# ``k`` would shadow the capability URLs ``/k/<key>/`` of the skills site.
RESERVED_NAMES = frozenset({"k"})
_MARKUP_RE = re.compile(r"<[A-Za-z!/?]|&[A-Za-z#][A-Za-z0-9]*;")


@dataclass
class SkillBundle:
    """One skill of an upload, validated; ``files`` are relative to the skill's folder."""

    name: str
    folder: str
    files: dict[str, bytes]
    frontmatter: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        return self.frontmatter["description"]

    def text_field(self, key: str) -> str:
        value = self.frontmatter.get(key)
        if value is None:
            return ""
        return value if isinstance(value, str) else yaml.safe_dump(value).strip()

    @property
    def metadata(self) -> dict[str, Any]:
        value = self.frontmatter.get("metadata")
        return value if isinstance(value, dict) else {}

    @property
    def digest(self) -> str:
        return bundle_digest(
            (path, hashlib.sha256(data).hexdigest()) for path, data in self.files.items()
        )


def bundle_digest(files: Any) -> str:
    """sha256 of the manifest ``"<sha256>  <path>\\n"`` sorted by path: what ``sha256sum`` prints.

    ``files`` is an iterable of ``(path, sha256 hex)``; reproduce it from an unpacked skill with
    ``find . -type f | cut -c3- | LC_ALL=C sort | xargs sha256sum | sha256sum``.
    """
    manifest = "".join(f"{sha}  {path}\n" for path, sha in sorted(files))
    return hashlib.sha256(manifest.encode()).hexdigest()


class _NoAliasLoader(yaml.SafeLoader):
    """``safe_load`` without anchors and aliases: they can expand exponentially once stored."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(None, None, "aliases are not allowed", event.start_mark)
        return super().compose_node(parent, index)


def _json_safe(value: Any) -> Any:
    """YAML values as JSON: dates become ISO strings, keys strings, bytes refused."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    if isinstance(value, datetime.date | datetime.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        raise ValueError("binary values are not allowed")
    if isinstance(value, float) and not math.isfinite(value):  # NaN and ±inf are not JSON
        return None
    return value


def split_frontmatter(text: str) -> tuple[str, str] | None:
    """``(yaml, body)`` of a document that opens with a ``---`` fenced block, else None."""
    text = text.removeprefix("\ufeff")
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != "---":
        return None
    for index in range(1, len(lines)):
        if lines[index].rstrip() == "---":
            return "".join(lines[1:index]), "".join(lines[index + 1 :])
    return None


def parse_frontmatter(path: str, content: bytes) -> dict[str, Any]:
    """The frontmatter of a SKILL.md as a JSON-safe dict. Raises ``UploadRejected``."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise UploadRejected.one(path, "SKILL.md is not UTF-8 text") from None
    parts = split_frontmatter(text)
    if parts is None:
        raise UploadRejected.one(
            path, "SKILL.md must open with YAML frontmatter between two '---' lines"
        )
    source = parts[0]
    if len(source.encode()) > MAX_FRONTMATTER_BYTES:
        raise UploadRejected.one(path, "the frontmatter is longer than 64 KiB")
    try:
        data = yaml.load(source, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
        data = _json_safe(data)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UploadRejected.one(path, f"the frontmatter is not valid YAML: {detail}") from None
    if not isinstance(data, dict):
        raise UploadRejected.one(path, "the frontmatter must be a YAML mapping (key: value)")
    return data


def _check(path: str, folder: str, frontmatter: dict[str, Any]) -> tuple[list[Problem], list[str]]:
    """Strict errors and lenient warnings of one SKILL.md's frontmatter."""
    errors: list[Problem] = []
    warnings: list[str] = []
    name = frontmatter.get("name")
    if name is None:
        errors.append(Problem(path, "the frontmatter has no 'name'"))
    elif not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME or not NAME_RE.fullmatch(name):
        errors.append(
            Problem(
                path,
                "'name' must be 1-64 characters of lowercase letters, digits and single "
                "hyphens between them",
            )
        )
    elif name in RESERVED_NAMES:
        errors.append(Problem(path, f"the name {name!r} is reserved by the skills site"))
    description = frontmatter.get("description")
    if not isinstance(description, str) or not description.strip():
        errors.append(Problem(path, "the frontmatter has no 'description'"))
    elif len(description) > MAX_DESCRIPTION:
        errors.append(Problem(path, "'description' is longer than 1024 characters"))
    elif _MARKUP_RE.search(description):
        warnings.append("the description contains markup; it is shown as plain text")
    if isinstance(name, str) and folder and folder.rsplit("/", 1)[-1] != name:
        warnings.append(
            f"the folder is named {folder.rsplit('/', 1)[-1]!r} but the frontmatter says "
            f"name: {name}; the name wins"
        )
    for key in frontmatter:
        if key not in SPEC_KEYS:
            warnings.append(f"the frontmatter key {key!r} is not in the Agent Skills spec")
    if "metadata" in frontmatter and not isinstance(frontmatter["metadata"], dict):
        warnings.append("'metadata' should be a mapping of keys to values")
    return errors, warnings


def skill_roots(paths: list[str]) -> list[str]:
    """Folders holding a SKILL.md, outermost first; "" is the upload's top."""
    candidates = sorted(
        (
            path.rsplit("/", 1)[0] if "/" in path else ""
            for path in paths
            if path.rsplit("/", 1)[-1] == SKILL_FILE
        ),
        key=lambda folder: (folder.count("/") if folder else -1, folder),
    )
    roots: list[str] = []
    for folder in candidates:
        if not any(root == "" or folder.startswith(root + "/") for root in roots):
            roots.append(folder)
    return roots


def bundles_from_files(files: dict[str, bytes]) -> list[SkillBundle]:
    """Every skill in an upload, validated. Raises ``UploadRejected`` with all strict errors."""
    roots = skill_roots(list(files))
    if not roots:
        raise UploadRejected.one("", "no SKILL.md found: a skill is a folder holding a SKILL.md")
    grouped: dict[str, dict[str, bytes]] = {root: {} for root in roots}
    for path, content in files.items():
        for root in roots:
            if root == "":
                grouped[root][path] = content
                break
            if path.startswith(root + "/"):
                grouped[root][path[len(root) + 1 :]] = content
                break
        # Files outside every skill folder (a repository's README, say) are not imported.
    problems: list[Problem] = []
    bundles: list[SkillBundle] = []
    for root in roots:
        skill_md_path = f"{root}/{SKILL_FILE}" if root else SKILL_FILE
        try:
            frontmatter = parse_frontmatter(skill_md_path, grouped[root][SKILL_FILE])
        except UploadRejected as exc:
            problems.extend(exc.problems)
            continue
        errors, warnings = _check(skill_md_path, root, frontmatter)
        problems.extend(errors)
        if not errors:
            bundles.append(
                SkillBundle(frontmatter["name"], root, grouped[root], frontmatter, warnings)
            )
    seen: dict[str, str] = {}
    for bundle in bundles:
        if bundle.name in seen:
            problems.append(
                Problem(
                    f"{bundle.folder}/{SKILL_FILE}",
                    f"two skills in one upload are named {bundle.name!r} "
                    f"(the other is in {seen[bundle.name] or 'the top folder'!r})",
                )
            )
        seen[bundle.name] = bundle.folder
    if problems:
        raise UploadRejected(problems)
    return bundles
