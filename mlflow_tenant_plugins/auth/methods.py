"""The authentication methods beyond API keys, by the name ``auth_methods`` uses.

A method is ``method(headers, client_addr) -> Identity | Refusal | None``: None when the
request carries none of its credentials (the next method may try). Each is on only when
listed in the ``auth_methods`` setting.

What the methods share lives here: a result cache whose entries each expire at the earlier
of the staleness bound and the credential's own end of validity, and the mapping of an
externally asserted identity (ALB OIDC claims, a trusted proxy's headers) onto the registry.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from cachetools import TLRUCache
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.auth.authenticator import Method, Refusal
from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.tenancy import TenantRegistry
from mlflow_tenant_plugins.tenancy.entities import Identity
from mlflow_tenant_plugins.tenancy.registry import validate_principal_name
from mlflow_tenant_plugins.tenancy.roles import Role

_logger = logging.getLogger(__name__)
T = TypeVar("T")

NO_TENANT = Refusal("this identity is not bound to an active tenant")
BUSY = Refusal("too many credential checks are in flight on this server; retry shortly",
               retry_after=1)
# Outbound verification calls (STS replays, ALB key fetches) one method may have in flight per
# worker. A caller sending fresh signatures or unknown kids can hold at most these threads;
# beyond them callers are told to retry (503) instead of queueing behind the slow calls.
MAX_OUTBOUND_CHECKS = 4


class OutboundGate:
    """A non-blocking bound on concurrent outbound calls of one authentication method."""

    def __init__(self, limit: int = MAX_OUTBOUND_CHECKS):
        self._slots = threading.BoundedSemaphore(limit)

    def try_enter(self) -> bool:
        return self._slots.acquire(blocking=False)

    def leave(self) -> None:
        self._slots.release()


def digest(*parts: str) -> str:
    """A cache key for credentials: their SHA-256, never the credentials themselves."""
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


class MethodCache:
    """Results per credential digest. ``compute`` returns ``(value, max_age)``: the entry
    lives ``min(ttl, max_age)`` seconds (``max_age`` None: the TTL; 0: not cached), so a
    token or signature is never trusted from the cache past its own expiry."""

    def __init__(self, ttl_seconds: float, maxsize: int = 50_000):
        self.ttl = max(ttl_seconds, 0.0)
        self._cache: TLRUCache = TLRUCache(
            maxsize=maxsize, ttu=lambda _key, value, _now: value[1], timer=time.monotonic)
        self._lock = threading.Lock()

    def get(self, key: str, compute: Callable[[], tuple[T, float | None]]) -> T:
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit[0]
        value, max_age = compute()
        age = self.ttl if max_age is None else min(self.ttl, max_age)
        if age > 0:
            with self._lock:
                self._cache[key] = (value, time.monotonic() + age)
        return value


def parse_role(value: object, source: str) -> Role | Refusal:
    try:
        return Role(str(value).strip().lower())
    except ValueError:
        return Refusal(f"{source} is not a role (valid: {', '.join(r.value for r in Role)})")


def external_identity(registry: TenantRegistry, principal: str, tenant: str | None,
                      role: Role, method: str) -> Identity | Refusal:
    """The identity an authority we trust (the ALB, the proxy) asserts, provisioned on
    first sight: the principal gets a basic-auth user and the asserted role in the tenant,
    so MLflow's engine authorizes it like any other principal.

    Without a tenant the principal's single existing binding is used (or, for a platform
    admin, none). Refusals do not say whether the tenant exists.
    """
    try:
        validate_principal_name(principal)
    except MlflowException:
        return Refusal(f"the {method} identity is not a valid principal name")
    admin = registry.is_platform_admin(principal)
    bindings = registry.bindings_of(principal)
    if tenant is None:
        if admin:
            return Identity(principal, None, None, True, method)
        if len(bindings) == 1:
            (only, its_role), = bindings.items()
            return Identity(principal, only, its_role, False, method)
        return Refusal(f"the {method} identity names no tenant")
    if bindings.get(tenant) != role:
        try:
            if not registry.get_tenant(tenant).active:
                return NO_TENANT
            registry.bind(principal, tenant, role)
        except MlflowException:
            return NO_TENANT
        except Exception:
            # Another worker provisioning the same principal at the same moment loses a
            # unique-constraint race; what it wanted is then in place.
            if registry.bindings_of(principal).get(tenant) != role:
                raise
        _logger.info("provisioned %s principal %s as %s in tenant %s",
                     method, principal, role.value, tenant)
    return Identity(principal, tenant, role, admin, method)


def build_methods(settings: Settings, registry: TenantRegistry) -> dict[str, Method]:
    """Methods are built only when enabled, so an unused one costs nothing; a method whose
    settings are incomplete stops the server at start with what to set."""
    enabled = set(settings.auth_methods)
    cache = MethodCache(settings.auth_cache_ttl_seconds)
    methods: dict[str, Method] = {}
    if "oidc" in enabled:
        from mlflow_tenant_plugins.auth.oidc import AlbOidcMethod

        methods["oidc"] = AlbOidcMethod(settings, registry, cache)
    if "proxy" in enabled:
        from mlflow_tenant_plugins.auth.proxy import TrustedProxyMethod

        methods["proxy"] = TrustedProxyMethod(settings, registry, cache)
    if "iam" in enabled:
        from mlflow_tenant_plugins.auth.iam import IamMethod

        methods["iam"] = IamMethod(settings, registry, cache)
    return methods

