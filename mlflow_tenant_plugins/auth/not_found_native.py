"""The 404 of :mod:`mlflow_tenant_plugins.auth.not_found`, for MLflow's native FastAPI routes.

MLflow's engine authorizes its FastAPI routes in its own middleware, outside Flask, and denies
(403) when the object a request addresses cannot be found. Two such routes address objects:
the proxied artifact download/upload (``…/mlflow-artifacts/artifacts/<experiment>/<run>/…``,
after an optional ``workspaces/<name>/``) and OTLP span export (``/v1/traces``, experiment in
the ``x-mlflow-experiment-id`` header). On the engine's 403 we look the experiment (and the run)
up in the request's workspace, off the event loop, and answer the store's own 404 when it is not
there — the same for a missing object as for another tenant's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import anyio
from mlflow.exceptions import MlflowException
from mlflow.utils.workspace_context import ServerWorkspaceContext

from mlflow_tenant_plugins.auth.not_found import Lookup, missing_object
from mlflow_tenant_plugins.mlflow_hooks.server import tracking_store
from mlflow_tenant_plugins.wire import WORKSPACE_HEADER

_logger = logging.getLogger(__name__)

_ARTIFACT = re.compile(r"/(?:ajax-)?api/2\.0/mlflow-artifacts/artifacts/(?:workspaces/[^/]+/)?"
                       r"(?P<experiment>[^/]+)(?:/(?P<run>[0-9a-f]{32})(?:/|$))?")
_WS_HEADER = WORKSPACE_HEADER.lower().encode()
_OTLP_HEADER = b"x-mlflow-experiment-id"


def native_lookups(path: str, headers: list[tuple[bytes, bytes]]) -> list[Lookup]:
    store = tracking_store
    if path.endswith("/v1/traces"):
        named = [v.decode("latin-1").strip() for k, v in headers if k.lower() == _OTLP_HEADER]
        return [lambda: store().get_experiment(named[0])] if len(named) == 1 else []
    if (m := _ARTIFACT.search(path)) is None:
        return []
    experiment_id, run_id = m.group("experiment"), m.group("run")
    lookups: list[Lookup] = [lambda: store().get_experiment(experiment_id)]
    if run_id:
        lookups.append(lambda: store().get_run(run_id))
    return lookups


def _missing_in(workspace: str, lookups: list[Lookup]) -> MlflowException | None:
    with ServerWorkspaceContext(workspace):
        return missing_object(lookups)


class NativeNotFound:
    """ASGI middleware (inside the tenant middleware, which sets the workspace header)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers", []))
        lookups = native_lookups(scope.get("path", ""), headers)
        named = [v.decode("latin-1") for k, v in headers if k.lower() == _WS_HEADER]
        if not lookups or len(named) != 1:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self._on_403(send, named[0], lookups))

    @staticmethod
    def _on_403(send: Callable, workspace: str, lookups: list[Lookup]) -> Callable:
        held: dict | None = None
        chunks: list[bytes] = []

        async def wrapped(message: dict) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] == 403:
                held = message
                return
            if held is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return  # the refusal's body is replaced or re-sent whole below
            try:
                missing = await anyio.to_thread.run_sync(_missing_in, workspace, lookups)
            except Exception:
                _logger.exception("looking up the object of a refused request failed")
                missing = None
            if missing is None:
                await send(held)
                await send({"type": "http.response.body", "body": b"".join(chunks)})
                return
            body = missing.serialize_as_json().encode()
            await send({"type": "http.response.start", "status": 404, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        return wrapped
