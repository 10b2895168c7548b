"""Proxied uploads (``PUT /api/2.0/mlflow-artifacts/artifacts/...``) spooled under the quota.

MLflow hands a repository that has ``StreamUploadMixin`` the request body as a stream and,
for one without it, first copies the whole body to a temporary file on the server's disk:
a tenant with 1 KB of quota left could fill the disk before the quota applied. Here the quota
applies before the body is spooled:

- ``Content-Length`` known: it is reserved before the first byte is read; over the quota the
  upload is refused at once (409 ``RESOURCE_EXHAUSTED``) and the body is never stored. A body
  longer than it declared is refused (400).
- Length unknown (chunked): the spool holds quota as it grows (:class:`.quota.GrowingHold`)
  and the upload is refused as soon as it outgrows the tenant's remaining quota. Concurrent
  uploads of one tenant share that bound, so the spools of a tenant never exceed what it may
  store.

The stream carries no headers: :class:`DeclaredBodyLength` (an ASGI middleware the server
installs) keeps the request's ``Content-Length`` in a context variable for the repository.
A global body-size cap (413) is the edge's job, not this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import posixpath
import tempfile
from collections.abc import AsyncIterable, Iterator
from typing import Any, BinaryIO

from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repo import ARTIFACT_STREAM_CHUNK_SIZE, StreamUploadMixin

from mlflow_tenant_plugins.artifacts.quota import GrowingHold

_declared: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "mlt_declared_body_length", default=None
)


class DeclaredBodyLength:
    """ASGI middleware: the ``Content-Length`` of a ``PUT`` for :func:`declared_length`."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "PUT":
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
        length = None
        if len(values) == 1 and values[0].strip().isdigit():
            length = int(values[0])
        token = _declared.set(length)
        try:
            await self.app(scope, receive, send)
        finally:
            _declared.reset(token)


def declared_length() -> int | None:
    """The current request's declared body length (ASGI middleware, or Flask under gunicorn)."""
    length = _declared.get()
    if length is None:
        with contextlib.suppress(ImportError, RuntimeError):
            from flask import has_request_context, request

            if has_request_context():
                length = request.content_length
    return length


class _Spool:
    """One upload's temporary file, never larger than the quota it holds."""

    def __init__(self, hold: GrowingHold, path: str, declared: int | None):
        self.hold, self.path, self.declared = hold, path, declared
        self.size = 0
        if declared is not None:
            hold.grow_to(declared)  # refused here, before a byte of the body is read
        self._file: BinaryIO = open(path, "wb")  # closed by close()

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.declared is not None and self.size > self.declared:
            raise MlflowException.invalid_parameter_value(
                f"the upload is longer than its Content-Length ({self.declared} bytes)"
            )
        self.hold.grow_to(self.size)
        self._file.write(chunk)

    def close(self) -> None:
        self._file.close()


class TenantStreamUploads(StreamUploadMixin):
    """``StreamUploadMixin`` for :class:`.repository.TenantS3ArtifactRepository`: uses its
    ``_require_scope``, ``_quota`` and ``_log_spooled``."""

    @contextlib.contextmanager
    def _spool(
        self, file_name: str, artifact_path: str | None
    ) -> Iterator[tuple[Any, str, _Spool]]:
        scope = self._require_scope()
        name = posixpath.basename(file_name.replace("\\", "/"))
        key = scope.file_key(artifact_path, name)  # path checked before anything is stored
        hold = self._quota(scope).growing()
        try:
            with tempfile.TemporaryDirectory(prefix="mlt-upload-") as tmp:
                spool = _Spool(hold, os.path.join(tmp, name), declared_length())
                try:
                    yield scope, key, spool
                finally:
                    spool.close()
        finally:
            hold.release()  # whatever the write did not take over

    def log_artifact_from_stream(
        self, stream: BinaryIO, artifact_file_name: str, artifact_path: str | None = None
    ) -> None:
        with self._spool(artifact_file_name, artifact_path) as (scope, key, spool):
            while chunk := stream.read(ARTIFACT_STREAM_CHUNK_SIZE):
                spool.add(chunk)
            spool.close()
            self._log_spooled(scope, spool.path, key, spool.hold)

    async def log_artifact_from_async_stream(
        self, chunks: AsyncIterable[bytes], artifact_file_name: str,
        artifact_path: str | None = None,
    ) -> None:
        # Database and disk work off the event loop; the spool is entered in a thread too.
        spooling = self._spool(artifact_file_name, artifact_path)
        scope, key, spool = await asyncio.to_thread(spooling.__enter__)
        try:
            async for chunk in chunks:
                await asyncio.to_thread(spool.add, chunk)
            spool.close()
            await asyncio.to_thread(self._log_spooled, scope, spool.path, key, spool.hold)
        except BaseException as error:
            if not await asyncio.to_thread(spooling.__exit__, type(error), error,
                                           error.__traceback__):
                raise
        else:
            await asyncio.to_thread(spooling.__exit__, None, None, None)
