"""Experiment ``"0"`` means the caller's own default experiment, inside a tenant.

MLflow's client, when code sets no experiment, sends experiment id ``"0"``: the ``default``
workspace's experiment, which no tenant may use (MLflow's engine refuses it). In front of
MLflow we rewrite that id, for a tenant caller acting in its own tenant, to the id of its
tenant's ``Default`` experiment (:mod:`mlflow_tenant_plugins.tenancy.default_experiment`),
wherever MLflow reads an experiment id from a request:

- query parameters ``experiment_id`` / ``experiment_ids`` of ``/mlflow/`` API routes;
- in JSON bodies of ``/mlflow/`` routes: the top-level ``experiment_id`` / ``experiment_ids``
  and trace locations (``…trace_location.mlflow_experiment.experiment_id``, ``locations[]``);
- GraphQL (the UI): ``variables.input.experimentId`` / ``experimentIds``;
- the ``x-mlflow-experiment-id`` header of OTLP ``/v1/traces`` (spans of traces).

Why here, as ASGI, and not in a Flask hook: one rewrite then serves Flask routes and native
FastAPI routes alike, and everything behind it — MLflow's authorization and its handlers —
reads one and the same request (the validators and handlers parse the body separately).
The rewritten id is only ever an experiment of the caller's own workspace, which MLflow's
engine then authorizes as any other request. The first request that names ``"0"`` (or asks
for the experiment named ``Default`` by name) creates the tenant's ``Default`` if missing;
from then on searches and the UI list show the same experiment ``"0"`` serves. A tenant that
never uses ``"0"`` gets no experiment it did not ask for.

This middleware must sit inside the tenant middleware: it trusts the authentication result
that one leaves in the scope, and the workspace header that one checked (or filled in).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import anyio

from mlflow_tenant_plugins.auth.middleware import AUTH_RESULT_SCOPE_KEY
from mlflow_tenant_plugins.tenancy.default_experiment import (
    DEFAULT_EXPERIMENT_NAME,
    MLFLOW_DEFAULT_EXPERIMENT_ID,
    DefaultExperiments,
)
from mlflow_tenant_plugins.tenancy.entities import Identity
from mlflow_tenant_plugins.wire import WORKSPACE_HEADER

_logger = logging.getLogger(__name__)

_ZERO = MLFLOW_DEFAULT_EXPERIMENT_ID
_WS_HEADER = WORKSPACE_HEADER.lower().encode()
_OTLP_HEADER = b"x-mlflow-experiment-id"
_ID_PARAMS = ("experiment_id", "experiment_ids")
_BODY_LIMIT = 4 * 1024 * 1024  # larger JSON bodies pass unchanged (none of these routes)

# Where an experiment id sits in a JSON body ("*" = every element of a list).
_EXPERIMENT = ("mlflow_experiment", "experiment_id")
_JSON_PATHS: tuple[tuple[str, ...], ...] = (
    ("experiment_id",),
    ("experiment_ids",),
    ("trace_info", "trace_location", *_EXPERIMENT),
    ("trace", "trace_info", "trace_location", *_EXPERIMENT),
    ("assessment", "trace_location", *_EXPERIMENT),
    ("locations", "*", *_EXPERIMENT),
)
_GRAPHQL_PATHS = (("variables", "input", "experimentId"),
                  ("variables", "input", "experimentIds"))


def _swap(value: Any, new_id: str) -> tuple[Any, bool]:
    """``"0"`` (or ``0``, or a list holding it) with ``new_id`` in its place."""
    if isinstance(value, list):
        swapped = [_swap(v, new_id) for v in value]
        return [v for v, _ in swapped], any(c for _, c in swapped)
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value) == _ZERO:
        return new_id, True
    return value, False


def _names_zero(node: Any, path: tuple[str, ...]) -> bool:
    """Whether ``"0"`` sits at ``path`` (read only)."""
    if not path:
        return _swap(node, "")[1]
    head, rest = path[0], path[1:]
    if head == "*":
        return isinstance(node, list) and any(_names_zero(item, rest) for item in node)
    return isinstance(node, dict) and head in node and _names_zero(node[head], rest)


def _rewrite_path(node: Any, path: tuple[str, ...], new_id: str) -> bool:
    if not path:
        return False
    head, rest = path[0], path[1:]
    if head == "*":
        return any([_rewrite_path(item, rest, new_id) for item in node]) \
            if isinstance(node, list) else False
    if not isinstance(node, dict) or head not in node:
        return False
    if not rest:
        node[head], changed = _swap(node[head], new_id)
        return changed
    return _rewrite_path(node[head], rest, new_id)


def _load(body: bytes) -> dict | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None  # MLflow answers the malformed body itself
    return doc if isinstance(doc, dict) else None


def rewrite_json(body: bytes, paths: tuple[tuple[str, ...], ...], new_id: str) -> bytes | None:
    """The body with ``"0"`` replaced at ``paths``, or None when nothing names it."""
    doc = _load(body)
    if doc is None:
        return None
    changed = [_rewrite_path(doc, p, new_id) for p in paths]
    return json.dumps(doc).encode() if any(changed) else None


def _names_zero_in_query(query: bytes) -> bool:
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return any(k in _ID_PARAMS and v == _ZERO for k, v in pairs)


def rewrite_query(query: bytes, new_id: str) -> bytes | None:
    if not _names_zero_in_query(query):
        return None
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return urlencode([(k, new_id if k in _ID_PARAMS and v == _ZERO else v)
                      for k, v in pairs]).encode("latin-1")


def _asks_default_by_name(path: str, query: bytes) -> bool:
    return path.endswith("/mlflow/experiments/get-by-name") and (
        ("experiment_name", DEFAULT_EXPERIMENT_NAME)
        in parse_qsl(query.decode("latin-1"), keep_blank_values=True))


def _tenant_workspace(scope: dict) -> str | None:
    """The workspace, when the caller is a tenant principal acting in its own tenant."""
    identity = scope.get(AUTH_RESULT_SCOPE_KEY)
    if not isinstance(identity, Identity) or identity.tenant is None:
        return None
    named = [v for k, v in scope.get("headers", []) if k.lower() == _WS_HEADER]
    if len(named) != 1 or named[0].decode("latin-1").strip() != identity.tenant:
        return None
    return identity.tenant


def _body_paths(scope: dict) -> tuple[tuple[str, ...], ...] | None:
    if scope.get("method") not in ("POST", "PATCH", "DELETE", "PUT"):
        return None
    content_type = dict(scope.get("headers", [])).get(b"content-type", b"")
    if not content_type.startswith(b"application/json"):
        return None
    path = scope.get("path", "")
    if path.endswith("/graphql"):
        return _GRAPHQL_PATHS
    return _JSON_PATHS if "/mlflow/" in path else None


async def _read_body(receive: Callable) -> tuple[bytes, bool]:
    """The whole body if it fits the limit (``True``), else what was read (``False``)."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
        if more and size > _BODY_LIMIT:
            return b"".join(chunks), False
    return b"".join(chunks), True


def _replay(body: bytes, complete: bool, receive: Callable) -> Callable:
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return replayed


def _with_header(headers: list, name: bytes, value: bytes) -> list:
    return [(k, v) for k, v in headers if k.lower() != name] + [(name, value)]


class DefaultExperimentAlias:
    """ASGI middleware: a tenant's experiment ``"0"`` is its own ``Default`` experiment."""

    def __init__(self, app, experiments: DefaultExperiments):
        self.app = app
        self.experiments = experiments

    async def __call__(self, scope, receive, send) -> None:
        workspace = _tenant_workspace(scope) if scope["type"] == "http" else None
        if workspace is not None:
            scope, receive = await self._rewrite(scope, receive, workspace)
        await self.app(scope, receive, send)

    async def _default_id(self, workspace: str) -> str | None:
        """The id (created if missing, off the event loop), or None: then "0" stays refused
        in the tenant, as before, and the failure is logged."""
        known = self.experiments.cached_id(workspace)
        if known is not None:
            return known
        try:
            return await anyio.to_thread.run_sync(self.experiments.id_for, workspace)
        except Exception:
            _logger.exception("default experiment of tenant '%s' unavailable", workspace)
            return None

    async def _rewrite(self, scope: dict, receive: Callable, workspace: str):
        path, query = scope.get("path", ""), scope.get("query_string", b"")
        headers = list(scope.get("headers", []))
        otlp = [v.strip() for k, v in headers if k.lower() == _OTLP_HEADER]
        zero_in_query = "/mlflow/" in path and _names_zero_in_query(query)
        zero_in_header = path.endswith("/v1/traces") and otlp == [b"0"]
        paths, body, complete, zero_in_body = _body_paths(scope), b"", True, False
        original_receive = receive
        if paths is not None:
            body, complete = await _read_body(original_receive)
            receive = _replay(body, complete, original_receive)
            # Every path ends in an experiment key: skip parsing bodies that name none (a
            # log-batch). A key spelled with escapes is not aliased, and stays refused.
            doc = _load(body) if complete and b"xperiment" in body else None
            zero_in_body = doc is not None and any(_names_zero(doc, p) for p in paths)
        if not (zero_in_query or zero_in_header or zero_in_body):
            if _asks_default_by_name(path, query):
                await self._default_id(workspace)  # so the name finds it
            return scope, receive
        new_id = await self._default_id(workspace)
        if new_id is None:
            return scope, receive
        if zero_in_query:
            scope = {**scope, "query_string": rewrite_query(query, new_id)}
        if zero_in_header:
            headers = _with_header(headers, _OTLP_HEADER, new_id.encode())
        if zero_in_body:
            body = rewrite_json(body, paths, new_id)
            headers = _with_header(headers, b"content-length", str(len(body)).encode())
            receive = _replay(body, True, original_receive)
        return {**scope, "headers": headers}, receive
