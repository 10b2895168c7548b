"""What every authentication method shares: the method protocol, the refusal, the digest that
keys the caches, and the bound on outbound verification calls.

A method turns request headers into an :class:`Identity`, a :class:`Refusal`, or None when
the request carries none of its credentials (the next method may try). Each lives in a module
of its own (``keys``, ``oidc``, ``proxy``, ``iam``) and is built by ``authenticator``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from mlflow_tenant_plugins.tenancy.entities import Identity


@dataclass(frozen=True)
class Refusal:
    """Why a request is not authenticated: one line, the same for unknown, revoked, expired
    or suspended credentials, so a refusal does not reveal whether a tenant or key exists."""

    reason: str
    # Seconds after which to retry, for a refusal that is about the server, not the caller
    # (too many credential checks in flight): answered 503 with Retry-After, not 401.
    retry_after: int = 0
    # The method that refused ("key", "iam", "oidc", "proxy"; "none" when no method found
    # credentials): what monitoring counts refusals by. The authenticator fills it in for a
    # method that leaves it empty.
    method: str = ""


NO_METHOD = "none"
NO_CREDENTIALS = Refusal("no credentials: send 'Authorization: Bearer <tenant API key>'",
                         method=NO_METHOD)


class Method(Protocol):
    """``method(headers, client_addr)``: headers with lower-case names; the client address
    as the ASGI server reports it."""

    def __call__(self, headers: Mapping[str, str], client_addr: str | None, /
                 ) -> Identity | Refusal | None: ...


def unauthenticated_body(reason: str) -> str:
    """The MLflow-format JSON of a 401."""
    return json.dumps({"error_code": "UNAUTHENTICATED", "message": reason})


def digest(*parts: str) -> str:
    """A cache key for credentials: their SHA-256, never the credentials themselves."""
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


# Outbound verification calls (STS replays, ALB key fetches) one method may have in flight per
# worker. A caller sending fresh signatures or unknown kids can hold at most these threads;
# beyond them callers are told to retry (503) instead of queueing behind the slow calls.
MAX_OUTBOUND_CHECKS = 4


def busy(method: str) -> Refusal:
    """The refusal of a method whose outbound checks are all in flight: retry shortly."""
    return Refusal("too many credential checks are in flight on this server; retry shortly",
                   retry_after=1, method=method)


class OutboundGate:
    """A non-blocking bound on concurrent outbound calls of one authentication method."""

    def __init__(self, limit: int = MAX_OUTBOUND_CHECKS):
        self._slots = threading.BoundedSemaphore(limit)

    def try_enter(self) -> bool:
        return self._slots.acquire(blocking=False)

    def leave(self) -> None:
        self._slots.release()
