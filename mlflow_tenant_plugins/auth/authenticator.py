"""One authentication step per request, whatever the method, answered from a short cache.

Every method turns request headers into an :class:`Identity` or a refusal. Results are cached
per credential digest for ``auth_cache_ttl_seconds`` (the documented staleness bound: a
revoked key or a suspended tenant is refused by every worker and instance within it), so the
several calls MLflow's engine makes per request, and the requests that follow, cost a dict
lookup. Digests, never credentials, are the cache keys.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cachetools import TTLCache

from mlflow_tenant_plugins.auth.credentials import key_from_headers
from mlflow_tenant_plugins.tenancy import TenantRegistry
from mlflow_tenant_plugins.tenancy.entities import Identity

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """Why a request is not authenticated: one line, the same for unknown, revoked, expired
    or suspended credentials, so a refusal does not reveal whether a tenant or key exists."""

    reason: str
    # Seconds after which to retry, for a refusal that is about the server, not the caller
    # (too many credential checks in flight): answered 503 with Retry-After, not 401.
    retry_after: int = 0


NO_CREDENTIALS = Refusal("no credentials: send 'Authorization: Bearer <tenant API key>'")
INVALID_KEY = Refusal("invalid API key: it is unknown, expired or revoked")

# A method returns None when the request carries none of its credentials, so the next
# method may try; an Identity or a Refusal ends the search.
Method = Callable[[Mapping[str, str], str | None], "Identity | Refusal | None"]


class Authenticator:
    def __init__(self, registry: TenantRegistry, ttl_seconds: float, methods: list[str],
                 extra_methods: Mapping[str, Method] | None = None):
        self.registry = registry
        self._cache: TTLCache = TTLCache(maxsize=50_000, ttl=max(ttl_seconds, 0.001))
        self._lock = threading.Lock()
        available: dict[str, Method] = {"key": self._key_method, **(extra_methods or {})}
        unknown = [m for m in methods if m not in available]
        if unknown:
            raise ValueError(
                f"unknown auth method(s) {unknown}; available: {sorted(available)}"
            )
        self._methods = [available[m] for m in methods]

    def cached(self, cache_key: str, compute: Callable[[], Identity | Refusal]
               ) -> Identity | Refusal:
        """``compute()`` once per ``cache_key`` per TTL (methods use this for their lookups)."""
        with self._lock:
            hit = self._cache.get(cache_key)
        if hit is not None:
            return hit
        result = compute()
        with self._lock:
            self._cache[cache_key] = result
        return result

    def authenticate(self, headers: Mapping[str, str], client_addr: str | None
                     ) -> Identity | Refusal:
        for method in self._methods:
            try:
                result = method(headers, client_addr)
            except Exception:  # a broken method must fail closed, never open
                _logger.exception("authentication method failed; refusing the request")
                return Refusal("authentication failed")
            if result is not None:
                return result
        return NO_CREDENTIALS

    def _key_method(self, headers: Mapping[str, str], _addr: str | None
                    ) -> Identity | Refusal | None:
        key = key_from_headers(headers)
        if key is None:
            return None
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.cached("key:" + digest, lambda: self.registry.verify_key(key) or INVALID_KEY)
