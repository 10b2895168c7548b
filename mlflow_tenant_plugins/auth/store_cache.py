"""A bounded-staleness read cache in front of MLflow's basic-auth store.

MLflow's engine looks up the caller's user and role grants several times per request, each
a database query. Principals and their tenant roles change rarely, so per worker we answer
those two lookups from a TTL cache with the same bound as credentials
(``auth_cache_ttl_seconds``): a changed role binding takes effect within it everywhere, and
at once on the worker that made the change (every write through the store clears the cache).
"""

from __future__ import annotations

import threading
from typing import Any

from cachetools import TTLCache

_WRITE_PREFIXES = ("create_", "update_", "delete_", "assign_", "unassign_", "add_", "remove_",
                   "grant_", "revoke_", "set_", "rename_")


class CachedAuthStore:
    def __init__(self, store: Any, ttl_seconds: float, maxsize: int = 20_000):
        self._store = store
        self._cache: TTLCache = TTLCache(maxsize=maxsize, ttl=ttl_seconds)
        self._lock = threading.Lock()

    def _cached(self, key: tuple, compute) -> Any:
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        value = compute()  # exceptions (e.g. unknown user) are not cached
        with self._lock:
            self._cache[key] = value
        return value

    def get_user(self, username: str) -> Any:
        return self._cached(("user", username), lambda: self._store.get_user(username))

    def list_grants(self, user_id: int, workspace: str, resource_types) -> list:
        key = ("grants", user_id, workspace, frozenset(resource_types or ()))
        rows = self._cached(key, lambda: tuple(
            self._store.list_grants(user_id, workspace, resource_types)))
        return list(rows)

    def clear(self) -> None:
        with self._lock:
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
