"""Bounded-staleness read caches in front of the stores MLflow asks on every request.

MLflow's engine looks up the caller's user and role grants several times per request, and
MLflow resolves the request's workspace (``X-MLFLOW-WORKSPACE``) with one more query — each a
database round trip. Principals, their tenant roles and workspaces change rarely, so per worker
we answer those lookups from a TTL cache with the same bound as credentials
(``auth_cache_ttl_seconds``): a change takes effect within it everywhere, and at once on the
worker that made it (every write through a cached store clears its cache). Failed lookups
(unknown user or workspace) raise as before and are never cached.
"""

from __future__ import annotations

from typing import Any

from mlflow_tenant_plugins.auth.ttl_cache import TtlCache

_WRITE_PREFIXES = ("create_", "update_", "delete_", "assign_", "unassign_", "add_", "remove_",
                   "grant_", "revoke_", "set_", "rename_")


class _ReadCache:
    """The wrapped store, with chosen reads cached and every write clearing the cache."""

    def __init__(self, store: Any, ttl_seconds: float, maxsize: int = 20_000):
        self._store = store
        self._cache = TtlCache(ttl_seconds, maxsize=maxsize)

    def clear(self) -> None:
        self._cache.clear()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not (callable(attr) and name.startswith(_WRITE_PREFIXES)):
            return attr

        def write_through(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            finally:
                self.clear()

        return write_through


class CachedAuthStore(_ReadCache):
    """MLflow's basic-auth store: users and their grants."""

    def get_user(self, username: str) -> Any:
        return self._cache.get(("user", username), lambda: self._store.get_user(username))

    def list_grants(self, user_id: int, workspace: str, resource_types) -> list:
        key = ("grants", user_id, workspace, frozenset(resource_types or ()))
        rows = self._cache.get(key, lambda: tuple(
            self._store.list_grants(user_id, workspace, resource_types)))
        return list(rows)


class CachedWorkspaceStore(_ReadCache):
    """MLflow's workspace store, as every request's workspace resolution reads it."""

    def get_workspace(self, workspace_name: str) -> Any:
        return self._cache.get(("workspace", workspace_name),
                               lambda: self._store.get_workspace(workspace_name))


def cache_engine_lookups(ttl_seconds: float) -> None:
    """Put the caches in front of basic-auth's user store and of the workspace store MLflow
    memoizes for request resolution."""
    from mlflow_tenant_plugins.mlflow_hooks import basic_auth, server

    basic_auth.wrap_user_store(lambda store: CachedAuthStore(store, ttl_seconds))
    server.wrap_workspace_store(lambda store: CachedWorkspaceStore(store, ttl_seconds),
                                already=CachedWorkspaceStore)
