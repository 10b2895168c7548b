"""A trusted proxy's identity headers (user, tenant, role), honoured only from its address.

From any other address the headers are ignored, as if absent: a client that reaches the
server directly cannot claim an identity by sending them. The address checked is the one
the ASGI server reports. uvicorn (``mlflow server``'s default) rewrites it from
``X-Forwarded-For`` when the peer is in its ``--forwarded-allow-ips`` (default 127.0.0.1), so
behind a proxy on the same host that sends ``X-Forwarded-For`` the check would see the end
user's address and refuse: start such a server with
``--uvicorn-opts --no-proxy-headers``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping

from cachetools import LRUCache

from mlflow_tenant_plugins.auth.base import Refusal, digest
from mlflow_tenant_plugins.auth.external import external_identity, parse_role, provisions
from mlflow_tenant_plugins.auth.ttl_cache import TtlCache
from mlflow_tenant_plugins.config import ConfigError, Settings
from mlflow_tenant_plugins.tenancy import TenantRegistry
from mlflow_tenant_plugins.tenancy.entities import Identity
from mlflow_tenant_plugins.tenancy.roles import Role
from mlflow_tenant_plugins.wire import WORKSPACE_HEADER

_logger = logging.getLogger(__name__)

METHOD = "proxy"
PRINCIPAL_PREFIX = "proxy:"  # keeps asserted names apart from key and admin principals
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(addresses: tuple[str, ...]) -> tuple[Network, ...]:
    """Exact IPs (as /32 or /128) and CIDRs; anything else stops the server at start."""
    networks = []
    for entry in addresses:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"proxy_addresses: {entry!r} is not an IP address or CIDR") from None
    return tuple(networks)


def is_trusted(client_addr: str | None, networks: tuple[Network, ...]) -> bool:
    if not client_addr:
        return False
    try:
        addr = ipaddress.ip_address(client_addr.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)


class TrustedProxyMethod:
    def __init__(self, settings: Settings, registry: TenantRegistry, cache: TtlCache):
        self.networks = parse_networks(settings.proxy_addresses)
        if not self.networks:
            raise ConfigError("auth method 'proxy' needs proxy_addresses "
                              "(MLFLOW_TENANT_PROXY_ADDRESSES): the proxy's IPs or CIDRs")
        self.user_header = settings.proxy_user_header.lower()
        self.tenant_header = settings.proxy_tenant_header.lower()
        self.role_header = settings.proxy_role_header.lower()
        self.registry = registry
        self.cache = cache
        self.provision = provisions(settings)
        self._warned: LRUCache = LRUCache(maxsize=256)

    def __call__(self, headers: Mapping[str, str], client_addr: str | None
                 ) -> Identity | Refusal | None:
        user = headers.get(self.user_header)
        if user is None:
            return None
        if not is_trusted(client_addr, self.networks):
            self._warn_once(client_addr)
            return None
        user = user.strip()
        if not user:
            return Refusal(f"the proxy sent an empty {self.user_header} header", method=METHOD)
        tenant = (headers.get(self.tenant_header) or "").strip() or None
        role_value = (headers.get(self.role_header) or "").strip() or Role.VIEWER.value
        requested = (headers.get(WORKSPACE_HEADER.lower()) or "").strip() or None
        key = "proxy:" + digest(user, tenant or "", role_value, requested or "")
        return self.cache.get(key, lambda: self._identity(user, tenant, role_value, requested))

    def _identity(self, user: str, tenant: str | None, role_value: str,
                  requested: str | None = None) -> Identity | Refusal:
        role = parse_role(role_value, f"the proxy's {self.role_header} header", METHOD)
        if isinstance(role, Refusal):
            return role
        return external_identity(self.registry, PRINCIPAL_PREFIX + user, tenant, role, METHOD,
                                 provision=self.provision, requested=requested)

    def _warn_once(self, client_addr: str | None) -> None:
        if client_addr not in self._warned:
            self._warned[client_addr] = True
            _logger.warning("ignoring trusted-proxy headers from %s: not in proxy_addresses",
                            client_addr)
