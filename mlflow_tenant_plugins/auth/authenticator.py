"""One authentication step per request, whatever the method, answered from a short cache;
and the factory that builds the methods the ``auth_methods`` setting turns on.

Every method turns request headers into an :class:`Identity` or a refusal. Results are cached
per credential digest for ``auth_cache_ttl_seconds`` (the documented staleness bound: a
revoked key or a suspended tenant is refused by every worker and instance within it), so the
several calls MLflow's engine makes per request, and the requests that follow, cost a dict
lookup. Digests, never credentials, are the cache keys.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from mlflow_tenant_plugins.auth.base import NO_CREDENTIALS, Method, Refusal
from mlflow_tenant_plugins.auth.keys import KeyMethod
from mlflow_tenant_plugins.auth.ttl_cache import TtlCache
from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.tenancy import TenantRegistry
from mlflow_tenant_plugins.tenancy.entities import Identity

_logger = logging.getLogger(__name__)


class Authenticator:
    """The enabled methods, tried in the order ``methods`` names them: the first that finds
    its credentials decides. A refusal always says which method refused."""

    def __init__(self, registry: TenantRegistry, ttl_seconds: float, methods: list[str],
                 extra_methods: Mapping[str, Method] | None = None):
        self.registry = registry
        available: dict[str, Method] = {"key": KeyMethod(registry, TtlCache(ttl_seconds)),
                                        **(extra_methods or {})}
        unknown = [m for m in methods if m not in available]
        if unknown:
            raise ValueError(
                f"unknown auth method(s) {unknown}; available: {sorted(available)}"
            )
        self._methods = [(m, available[m]) for m in methods]

    def authenticate(self, headers: Mapping[str, str], client_addr: str | None
                     ) -> Identity | Refusal:
        for name, method in self._methods:
            try:
                result = method(headers, client_addr)
            except Exception:  # a broken method must fail closed, never open
                _logger.exception("authentication method failed; refusing the request")
                return Refusal("authentication failed", method=name)
            if isinstance(result, Refusal) and not result.method:
                return dataclasses.replace(result, method=name)
            if result is not None:
                return result
        return NO_CREDENTIALS


def build_methods(settings: Settings, registry: TenantRegistry) -> dict[str, Method]:
    """The methods beyond API keys, by the name ``auth_methods`` uses. Built only when
    enabled, so an unused one costs nothing (its module is not even imported); a method whose
    settings are incomplete stops the server at start with what to set."""
    enabled = set(settings.auth_methods)
    cache = TtlCache(settings.auth_cache_ttl_seconds)
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
