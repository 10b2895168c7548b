"""The one bounded-staleness cache of auth/: credentials, identities and store reads.

Authentication must be cheap per request (MLflow's engine asks several times per request), so
results are answered from memory for at most ``auth_cache_ttl_seconds``: a revoked key, a
suspended tenant or a changed binding takes effect within that bound everywhere. An entry may
live shorter than the bound — never past the credential's own expiry (a token's ``exp``, a
signature's 15 minutes) — and a result the computation marks as not to keep (a transient
failure) is not cached at all. Exceptions propagate and are never cached.

The lookup runs outside the lock: two threads missing the same key at once may both compute,
which costs a duplicate lookup, never a wrong answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import TypeVar

from cachetools import TLRUCache

T = TypeVar("T")


class TtlCache:
    """Values per key, each kept ``min(ttl, max_age)`` seconds (``max_age`` None: the TTL;
    0 or less: not kept)."""

    def __init__(self, ttl_seconds: float, maxsize: int = 50_000,
                 timer: Callable[[], float] = time.monotonic):
        self.ttl = max(float(ttl_seconds), 0.0)
        self._timer = timer
        self._cache: TLRUCache = TLRUCache(
            maxsize=maxsize, ttu=lambda _key, entry, _now: entry[1], timer=timer)
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The cached value, or ``compute()`` kept for the TTL."""
        return self.get_bounded(key, lambda: (compute(), None))

    def get_bounded(self, key: Hashable, compute: Callable[[], tuple[T, float | None]]) -> T:
        """The cached value, or the value of ``compute() -> (value, max_age)`` kept for
        ``min(ttl, max_age)`` seconds."""
        with self._lock:
            entry = self._cache.get(key)
        if entry is not None:
            return entry[0]
        value, max_age = compute()
        age = self.ttl if max_age is None else min(self.ttl, max_age)
        if age > 0:
            with self._lock:
                self._cache[key] = (value, self._timer() + age)
        return value

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)
