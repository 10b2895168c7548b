"""The edge: one canonical request, before anything else reads it.

Three parsers read each request header here — this package's middleware (an ASGI header
list), MLflow's native FastAPI routes (the *first* value), and MLflow's Flask app behind a WSGI
bridge (values of one name joined with commas; ``X_MLFLOW_WORKSPACE`` and
``X-MLFLOW-WORKSPACE`` land on the same WSGI key). When they can disagree, a check made by one
is not the check the others rely on. So the outermost middleware refuses, on every route,
authenticated or not, any request whose meaning depends on the parser:

- an identity or workspace header (``Authorization``, ``X-MLFLOW-WORKSPACE``, each enabled
  authentication method's headers, ``Content-Length``, ``Transfer-Encoding``, ``Host``) sent
  more than once, or empty (an empty workspace header, which MLflow's UI sends before a
  workspace is chosen, means none: the tenant middleware replaces it with the checked one);
- two header names that fold to one WSGI name (``x_mlflow_workspace`` beside
  ``x-mlflow-workspace``), or an underscore spelling of a protected header on its own;
- a body over the configured limit (artifact uploads have their own, larger one): refused
  with 413 before MLflow buffers it, counted as it streams when no length is declared.

Refusals are MLflow-format JSON: 400 ``INVALID_PARAMETER_VALUE`` and 413
``REQUEST_LIMIT_EXCEEDED``, each saying what to change.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mlflow_tenant_plugins.wire import WORKSPACE_HEADER

# Headers whose value decides who is calling, where it acts, or how the body is framed.
BASE_SINGLE_HEADERS = ("authorization", WORKSPACE_HEADER.lower(), "content-length",
                       "transfer-encoding", "host")
ARTIFACT_UPLOAD_MARKER = "/mlflow-artifacts/artifacts/"
# Sent empty by MLflow's own UI (no workspace chosen yet). Once, it is unambiguous: the tenant
# middleware drops every client spelling of it and adds the one it checked.
BLANK_MEANS_ABSENT = frozenset({"x-mlflow-workspace"})


@dataclass(frozen=True)
class EdgeLimits:
    max_body_bytes: int
    max_upload_bytes: int


def _fold(name: bytes) -> str:
    return name.decode("latin-1").lower().replace("_", "-")


def ambiguity(headers: Iterable[tuple[bytes, bytes]], single: frozenset[str]) -> str | None:
    """Why this header list means different things to different parsers, or None."""
    raw_by_folded: dict[str, set[bytes]] = {}
    counts: dict[str, int] = {}
    empty: set[str] = set()
    for raw, value in headers:
        folded = _fold(raw)
        raw_by_folded.setdefault(folded, set()).add(raw.lower())
        counts[folded] = counts.get(folded, 0) + 1
        if not value.strip():
            empty.add(folded)
    for folded, raws in raw_by_folded.items():
        if len(raws) > 1:
            return (f"header names {sorted(r.decode('latin-1') for r in raws)} mean the same "
                    "header; send it once, spelled with '-'")
        if folded in single:
            if b"_" in next(iter(raws)):
                return f"send the {folded} header spelled with '-', not '_'"
            if counts[folded] > 1:
                return f"the {folded} header was sent {counts[folded]} times; send it once"
            if folded in empty and folded not in BLANK_MEANS_ABSENT:
                return f"the {folded} header is empty; send a value or leave it out"
    return None


def _is_upload(scope: dict) -> bool:
    return scope.get("method") == "PUT" and ARTIFACT_UPLOAD_MARKER in scope.get("path", "")


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for raw, value in headers:
        if raw.lower() == b"content-length":
            return int(value) if value.strip().isdigit() else -1
    return None


async def send_json(send: Callable, status: int, error_code: str, message: str,
                    extra: list | None = None) -> None:
    payload = json.dumps({"error_code": error_code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(payload)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class _BodyTooLarge(Exception):
    pass


class EdgeMiddleware:
    """Outermost middleware of the tenant-auth app (see the module docstring)."""

    def __init__(self, app, *, single_headers: Iterable[str], limits: EdgeLimits):
        self.app = app
        self.single = frozenset(h.lower().replace("_", "-") for h in single_headers)
        self.limits = limits

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        problem = ambiguity(headers, self.single)
        if problem:
            await send_json(send, 400, "INVALID_PARAMETER_VALUE", f"ambiguous request: {problem}")
            return
        upload = _is_upload(scope)
        limit = self.limits.max_upload_bytes if upload else self.limits.max_body_bytes
        declared = _declared_length(headers)
        if declared == -1:
            await send_json(send, 400, "INVALID_PARAMETER_VALUE",
                            "the Content-Length header is not a number")
            return
        if declared is not None and declared > limit:
            await self._too_large(send, limit, upload)
            return
        await self._bounded(scope, receive, send, limit, upload)

    async def _bounded(self, scope, receive, send, limit: int, upload: bool) -> None:
        """Count the body as it streams; past ``limit`` the app's next read fails, whatever
        it answers is dropped, and the caller gets the 413."""
        received = 0
        exceeded = False
        started = False

        async def counting_receive():
            nonlocal received, exceeded
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message) -> None:
            nonlocal started
            if exceeded:
                return
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            # Once the body was cut off, whatever the app raised is that cut (possibly wrapped
            # in an exception group by a task group on the way out): answer the 413.
            if not exceeded:
                raise
        if exceeded and not started:
            await self._too_large(send, limit, upload)

    @staticmethod
    async def _too_large(send: Callable, limit: int, upload: bool) -> None:
        what = "an artifact upload" if upload else "a request body"
        hint = (" (upload large files in parts: MLflow's multipart upload does this for "
                "files over MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE)" if upload else "")
        await send_json(send, 413, "REQUEST_LIMIT_EXCEEDED",
                        f"{what} may be at most {limit} bytes{hint}",
                        [(b"connection", b"close")])
