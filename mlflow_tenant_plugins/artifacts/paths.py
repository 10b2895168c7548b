"""Artifact paths to S3 keys: the one place that decides whether a path stays in a tenant's prefix.

Every path a caller hands the repository goes through :meth:`TenantScope.key` before any S3 call.
A path is refused (``INVALID_PARAMETER_VALUE``, HTTP 400) when any reading of it could leave the
tenant's prefix — by S3 (keys are literal), by a proxy or HTTP stack that decodes ``%xx`` or
folds ``\\`` into ``/``, by a filesystem that strips trailing dots (Windows), or by Unicode
normalisation (``．．`` is ``..`` under NFKC). Refusing the whole family, rather than normalising,
means there is no second decoder whose view differs from ours.

The resulting key must still lie under the tenant's fence, ``ROOT/workspaces/<tenant>/``; that
final check is independent of the parsing above (defence in depth).
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass

from mlflow.exceptions import MlflowException

SCHEME = "tenant-s3"
WORKSPACES_DIR = "workspaces"  # MLflow's own segment for per-workspace artifact roots
DEFAULT_WORKSPACE = "default"  # MLflow's shared workspace: never a tenant
MAX_KEY_BYTES = 1024  # S3's limit for an object key (UTF-8)

_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_DRIVE = re.compile(r"^[A-Za-z]:")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# MLflow's workspace-name pattern, matched with fullmatch: ``re.match(... $)`` as MLflow's own
# validator uses it also accepts a trailing newline.
_TENANT = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_TENANT_RESERVED = {WORKSPACES_DIR, "api", "ajax-api", "static-files", DEFAULT_WORKSPACE}
# Control, format (bidi overrides, zero-width), surrogate and line/paragraph separator characters.
_FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def refuse(path: object, why: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(f"invalid artifact path {path!r}: {why}")


def _check_form(original: str, form: str) -> None:
    for ch in form:
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            raise refuse(original, f"control or invisible character U+{ord(ch):04X}")
    for ch, name in (("\\", "backslash"), ("#", "'#'"), ("?", "'?'")):
        if ch in form:
            raise refuse(original, f"{name} is not allowed")
    if _PERCENT_ESCAPE.search(form):
        raise refuse(original, "percent-encoded characters are not allowed")
    if form.startswith("/"):
        raise refuse(original, "absolute paths are not allowed")
    segments = form.split("/")
    if segments[-1] == "" and len(segments) > 1:
        segments.pop()  # one trailing '/' names a directory
    for segment in segments:
        if segment == "":
            raise refuse(original, "empty path segment")
        if segment.rstrip(". ") == "":
            raise refuse(original, f"path segment {segment!r} is not allowed")
        if _DRIVE.match(segment):  # a Windows drive ("C:", "c:x") re-roots a joined path
            raise refuse(original, f"path segment {segment!r} looks like a drive")


def check_relative(path: str | None) -> str:
    """The path (without a trailing '/') if it is a safe relative artifact path, else raise."""
    if path is None or path == "":
        return ""
    if not isinstance(path, str):
        raise refuse(path, "must be a string")
    for form in dict.fromkeys((path, unicodedata.normalize("NFKC", path))):
        _check_form(path, form)
    return path.removesuffix("/")


def check_tenant(name: str) -> str:
    if (
        not isinstance(name, str)
        or not 2 <= len(name) <= 63
        or not _TENANT.fullmatch(name)
        or name in _TENANT_RESERVED
    ):
        raise MlflowException.invalid_parameter_value(f"{name!r} is not a valid tenant name")
    return name


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


@dataclass(frozen=True)
class Location:
    """A parsed ``tenant-s3://BUCKET/ROOT[/workspaces/<tenant>[/SUB]]`` URI."""

    bucket: str
    root: str
    tenant: str | None = None
    sub: str = ""


def parse_uri(uri: str) -> Location:
    """Split a tenant-s3 URI at its first ``workspaces/<tenant>`` pair: what comes before is the
    root, the pair names the tenant. ROOT may therefore not contain a ``workspaces`` segment."""
    if not isinstance(uri, str) or any(
        unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in uri
    ):  # urlsplit would silently drop tabs and newlines
        raise MlflowException.invalid_parameter_value(f"invalid {SCHEME} URI {uri!r}")
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme != SCHEME:
        raise MlflowException.invalid_parameter_value(f"not a {SCHEME}:// URI: {uri!r}")
    if parsed.query or parsed.fragment or "?" in uri or "#" in uri:
        raise MlflowException.invalid_parameter_value(f"{uri!r}: no query or fragment allowed")
    if not _BUCKET.fullmatch(parsed.netloc):
        raise MlflowException.invalid_parameter_value(f"{uri!r}: invalid bucket name")
    path = check_relative(parsed.path.removeprefix("/"))
    segments = path.split("/") if path else []
    if WORKSPACES_DIR not in segments:
        return Location(parsed.netloc, path)
    i = segments.index(WORKSPACES_DIR)
    if i + 1 >= len(segments):
        raise MlflowException.invalid_parameter_value(f"{uri!r} names no tenant")
    tenant = check_tenant(segments[i + 1])
    return Location(parsed.netloc, _join(*segments[:i]), tenant, _join(*segments[i + 2 :]))


@dataclass(frozen=True)
class TenantScope:
    """What a repository bound to one tenant may touch.

    ``base`` is the key of the repository's ``artifact_uri``: relative paths join onto it. For
    the server's destination repository that is ROOT (MLflow hands it ``workspaces/<t>/...``
    paths); for a repository built on a tenant URI it is a key inside the fence.
    """

    bucket: str
    root: str
    tenant: str
    base: str

    @classmethod
    def of(cls, location: Location, tenant: str | None = None) -> TenantScope:
        tenant = check_tenant(tenant or location.tenant or "")
        if location.tenant is None:
            return cls(location.bucket, location.root, tenant, location.root)
        base = _join(location.root, WORKSPACES_DIR, tenant, location.sub)
        return cls(location.bucket, location.root, tenant, base)

    @property
    def fence(self) -> str:
        """The tenant's prefix, without the trailing '/'."""
        return _join(self.root, WORKSPACES_DIR, self.tenant)

    def contains(self, key: str, strict: bool) -> bool:
        """Whether ``key`` lies under the fence; ``strict`` excludes the fence key itself."""
        return key.startswith(self.fence + "/") or (not strict and key == self.fence)

    def key(self, path: str | None, *, write: bool = False) -> str:
        """The S3 key for ``path`` relative to ``base``; raises unless it stays in the fence.
        Writes need a key strictly inside the prefix (an object, not the prefix itself)."""
        key = _join(self.base, check_relative(path))
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            raise refuse(path, f"the object key would exceed {MAX_KEY_BYTES} bytes")
        if not self.contains(key, strict=write) or posixpath.normpath(key) != key:
            raise refuse(path, f"it is outside the artifact prefix of tenant '{self.tenant}'")
        return key

    def file_key(self, artifact_path: str | None, filename: str) -> str:
        """The key of a file named ``filename`` logged under the directory ``artifact_path``."""
        if not filename or "/" in filename:
            raise refuse(filename, "a file name must be one non-empty path segment")
        return self.key(_join(check_relative(artifact_path), filename), write=True)

    def list_prefix(self, key: str) -> str:
        """The ``Prefix`` for listing under ``key`` (always ends in '/', which is also what a
        ``s3:prefix`` condition on ``<fence>/*`` needs to allow the listing)."""
        return key + "/"

    def relative(self, key: str) -> str:
        """``key`` relative to ``base`` (the inverse of :meth:`key`)."""
        return key[len(self.base) + 1 :] if self.base else key
