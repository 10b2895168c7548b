"""The server's credentials never serve a tenant's URI.

A tenant may name a location in a few of MLflow's requests (a model version's ``source``, some
trace tags). MLflow reads what such a location names with the server's own credentials, so a
location is the tenant's only when it is one of its own MLflow objects:

- :func:`check_source` — what a tenant may name: ``runs:/…``, ``models:/…`` and
  ``mlflow-artifacts:/…`` of its own workspace; nothing with a host, no ``..``, no other scheme.
- :class:`RepositoryFence` — defence in depth under every check above it: in the server
  process, every artifact repository MLflow builds (``get-artifact`` of a model version, a
  logged model's or a trace's files, what ``runs:/`` and ``models:/`` resolve to, a deployment's
  model download) must lie inside the request tenant's own storage: the ``tenant-s3``
  destination (bound to the tenant by its ``for_workspace``) or, for another destination,
  ``<destination>/workspaces/<tenant>/``. ``s3``, ``s3a``, ``gs``, ``http(s)``, ``file``,
  ``hdfs`` … anywhere else are refused, whatever stored them.
- :func:`server_scratch` — the one local exception: a temporary directory the server creates
  for its own download (a deployment's model), while that download is in progress in the same
  context. MLflow re-reads downloaded files through the registry (``Model.load`` builds a local
  repository on the MLmodel file it downloaded); such a destination is the server's, never a
  location a tenant named, so it is allowed exactly there and nowhere else on the disk.

MLflow internals used here, through ``mlflow_hooks.artifacts``: the artifact repository
registry (the one every ``get_artifact_repository`` goes through; MLflow applies its own host
policy there for the same reason) and the proxied-artifact repository getter.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import unicodedata
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, PERMISSION_DENIED
from mlflow.utils.workspace_context import get_request_workspace

from mlflow_tenant_plugins.artifacts.paths import SCHEME as TENANT_S3
from mlflow_tenant_plugins.artifacts.paths import WORKSPACES_DIR, parse_uri

SOURCE_SCHEMES = ("runs", "models", "mlflow-artifacts")
ALLOWED = (
    "name a location of your own tenant as runs:/RUN_ID/PATH, models:/NAME/VERSION "
    "(or models:/MODEL_ID) or mlflow-artifacts:/PATH"
)
_LOCAL = ("", "file")
_MAX_UNQUOTE = 8
# Real paths of the temporary directories the server made for downloads in this context.
_SCRATCH: ContextVar[tuple[str, ...]] = ContextVar("mlt_server_scratch", default=())


def refuse(uri: object, why: str, code: int = INVALID_PARAMETER_VALUE) -> MlflowException:
    return MlflowException(f"location {uri!r} refused: {why}; {ALLOWED}", code)


def _decoded(uri: str) -> str:
    """``uri`` with every layer of %-encoding removed (a reader may decode any number)."""
    for _ in range(_MAX_UNQUOTE):
        unquoted = urllib.parse.unquote(uri)
        if unquoted == uri:
            return uri
        uri = unquoted
    raise refuse(uri, "too many layers of percent-encoding")


def check_text(uri: object, code: int = INVALID_PARAMETER_VALUE) -> str:
    """Refuse what any reader could resolve elsewhere: ``.``/``..`` segments, backslashes,
    control or invisible characters, query or fragment — in the URI or any decoding of it."""
    if not isinstance(uri, str) or not uri:
        raise refuse(uri, "a location must be a non-empty string", code)
    for form in dict.fromkeys((uri, _decoded(uri), unicodedata.normalize("NFKC", _decoded(uri)))):
        if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in form):
            raise refuse(uri, "control or invisible characters", code)
        if "\\" in form or "?" in form or "#" in form:
            raise refuse(uri, "backslash, query or fragment", code)
        path = urllib.parse.urlsplit(form).path
        if any(seg in (".", "..") for seg in path.split("/")):
            raise refuse(uri, "relative path segments ('.' or '..')", code)
    return uri


def _workspace_of(path: str) -> str | None:
    """The workspace a ``workspaces/<name>/…`` path names, None for an unprefixed path."""
    segments = [s for s in path.split("/") if s]
    if not segments or segments[0] != WORKSPACES_DIR:
        return None
    return segments[1] if len(segments) > 1 else ""


def check_source(uri: object, workspace: str | None) -> str:
    """What a tenant in ``workspace`` may name as a location; returns its scheme or raises
    INVALID_PARAMETER_VALUE. Whether the run or model exists in the workspace is the caller's
    to check (MLflow resolves ``runs:/`` and ``models:/`` in the request's workspace)."""
    uri = check_text(uri)
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme not in SOURCE_SCHEMES or not uri.startswith(f"{parsed.scheme}:/"):
        raise refuse(uri, f"the scheme {parsed.scheme or '(none)'!r} is not allowed")
    if parsed.netloc or uri.startswith(f"{parsed.scheme}://"):
        raise refuse(uri, "a location may not name a host or another registry")
    if parsed.scheme == "mlflow-artifacts":
        named = _workspace_of(_decoded(parsed.path))
        if named is not None and named != workspace:
            raise refuse(uri, "it is another tenant's storage", PERMISSION_DENIED)
    return parsed.scheme


def _local_path(uri: str) -> str:
    from mlflow.utils.file_utils import local_file_uri_to_path

    return os.path.normpath(os.path.abspath(local_file_uri_to_path(uri)))


def _within(uri: str, root: str) -> bool:
    """Whether ``uri`` is ``root`` or lies under it (same scheme and host)."""
    u, r = urllib.parse.urlsplit(uri), urllib.parse.urlsplit(root)
    if u.scheme.lower() in _LOCAL and r.scheme.lower() in _LOCAL:
        path, base = _local_path(uri), _local_path(root)
        return path == base or path.startswith(base.rstrip(os.sep) + os.sep)
    if (u.scheme.lower(), u.netloc) != (r.scheme.lower(), r.netloc):
        return False
    path, base = posixpath.normpath("/" + u.path), posixpath.normpath("/" + r.path)
    return path == base or path.startswith(base.rstrip("/") + "/")


@contextmanager
def server_scratch(prefix: str = "mlt-download-") -> Iterator[str]:
    """A new temporary directory for the server's own download; until the block ends, in this
    context only, the fence lets MLflow build local repositories inside it (and nowhere else)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        token = _SCRATCH.set((*_SCRATCH.get(), os.path.realpath(tmp)))
        try:
            yield tmp
        finally:
            _SCRATCH.reset(token)


def in_server_scratch(uri: str) -> bool:
    """Whether ``uri`` is a local path (no host) inside a directory :func:`server_scratch` made
    in this context; symbolic links resolved, so a link inside cannot lead out."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme.lower() not in _LOCAL or parsed.netloc or not _SCRATCH.get():
        return False
    path = os.path.realpath(_local_path(uri))
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep)
               for root in _SCRATCH.get())


class RepositoryFence:
    """Which URIs the server may build an artifact repository for, in the current request."""

    def __init__(self, destination: str | None):
        self.destination = destination.rstrip("/") if destination else None
        self._tenant_s3 = bool(destination) and destination.startswith(f"{TENANT_S3}:")

    def check(self, uri: str) -> None:
        """Raise PERMISSION_DENIED unless ``uri`` is the request tenant's own storage."""
        check_text(uri, PERMISSION_DENIED)
        parsed = urllib.parse.urlsplit(uri)
        scheme = parsed.scheme.lower()
        workspace = get_request_workspace()
        if scheme in ("runs", "models"):  # resolved in the request's workspace, then re-checked
            if parsed.netloc or uri.startswith(f"{parsed.scheme}://"):
                raise refuse(uri, "it names another registry", PERMISSION_DENIED)
            return
        if scheme == "mlflow-artifacts":  # the server calls itself, as no tenant
            named = _workspace_of(_decoded(parsed.path))
            if parsed.netloc or not workspace or named not in (None, workspace):
                raise refuse(uri, "it is not this tenant's storage", PERMISSION_DENIED)
            return
        if self.destination and self._tenant_s3 and scheme == TENANT_S3:
            self._check_tenant_s3(uri, workspace)
            return
        if in_server_scratch(uri):  # the server's own download destination, not a source
            return
        if self.destination and workspace and not self._tenant_s3:
            if _within(uri, f"{self.destination}/{WORKSPACES_DIR}/{workspace}"):
                return
        raise refuse(uri, "the server reads only the request tenant's own storage",
                     PERMISSION_DENIED)

    def _check_tenant_s3(self, uri: str, workspace: str | None) -> None:
        dest, loc = parse_uri(self.destination), parse_uri(uri)
        if (loc.bucket, loc.root) != (dest.bucket, dest.root):
            raise refuse(uri, "it is outside the platform's artifact store", PERMISSION_DENIED)
        if loc.tenant is None and uri.rstrip("/") == self.destination:
            return  # the destination itself: bound per request by ``for_workspace``
        if loc.tenant is None or loc.tenant != workspace:
            raise refuse(uri, "it is not this tenant's storage", PERMISSION_DENIED)


def install(destination: str | None) -> RepositoryFence:
    """Fence MLflow's artifact repository registry in this (server) process. Idempotent."""
    from mlflow_tenant_plugins.mlflow_hooks import artifacts as mlflow_artifacts

    registry = mlflow_artifacts.artifact_repository_registry()
    current = registry.get_artifact_repository
    if getattr(current, "tenant_fence", None) is not None:
        return current.tenant_fence
    if destination and not destination.startswith(f"{TENANT_S3}:"):
        # Built once per process, before the fence: MLflow's proxied-artifact repository on the
        # destination root, which MLflow itself scopes to ``workspaces/<request workspace>``.
        mlflow_artifacts.proxied_artifact_repository()
    fence = RepositoryFence(destination)

    def fenced(artifact_uri: str, *args, **kwargs):
        fence.check(artifact_uri)
        return current(artifact_uri, *args, **kwargs)

    fenced.tenant_fence = fence
    registry.get_artifact_repository = fenced
    return fence


def check_tenant_uri(uri: str, tenant: str) -> None:
    """A resolved model location the platform downloads for ``tenant`` (deployments): the
    tenant's ``runs:/``, ``models:/``, ``mlflow-artifacts:/`` or its own ``tenant-s3`` prefix.

    Only with workspaces on, where tenants exist (the tenant-auth server refuses to start
    without them); MLflow's single-workspace stores have no tenant's storage to tell apart."""
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES

    if not MLFLOW_ENABLE_WORKSPACES.get():
        return
    if urllib.parse.urlsplit(uri if isinstance(uri, str) else "").scheme == TENANT_S3:
        check_text(uri, PERMISSION_DENIED)
        if parse_uri(uri).tenant != tenant:
            raise refuse(uri, "it is not this tenant's storage", PERMISSION_DENIED)
        return
    try:
        check_source(uri, tenant)
    except MlflowException as exc:
        raise MlflowException(exc.message, PERMISSION_DENIED) from None
