"""The one TTL cache of auth/ (credentials, identities, store reads) and the authenticator's
refusals, in-process with a fake clock: fast, and exact about when an entry expires."""

from __future__ import annotations

import random
import threading

import pytest

from mlflow_tenant_plugins.auth.authenticator import Authenticator
from mlflow_tenant_plugins.auth.base import NO_CREDENTIALS, Refusal
from mlflow_tenant_plugins.auth.keys import INVALID_KEY
from mlflow_tenant_plugins.auth.store_cache import CachedAuthStore
from mlflow_tenant_plugins.auth.ttl_cache import TtlCache
from mlflow_tenant_plugins.tenancy.entities import Identity
from mlflow_tenant_plugins.tenancy.roles import Role


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counter:
    def __init__(self, value: object = "v", max_age: float | None = None) -> None:
        self.calls, self.value, self.max_age = 0, value, max_age

    def plain(self) -> object:
        self.calls += 1
        return self.value

    def bounded(self) -> tuple[object, float | None]:
        self.calls += 1
        return self.value, self.max_age


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_value_is_computed_once_within_the_ttl_and_again_after_it(clock: Clock) -> None:
    cache, compute = TtlCache(30, timer=clock), Counter()
    for _ in range(3):
        assert cache.get("k", compute.plain) == "v"
    clock.now += 29.9
    cache.get("k", compute.plain)
    assert compute.calls == 1
    clock.now += 0.2
    cache.get("k", compute.plain)
    assert compute.calls == 2


@pytest.mark.parametrize("ttl, max_age", [(30, 5.0), (30, 45.0), (10, None),
                                          (random.uniform(1, 60), random.uniform(0.5, 90))])
def test_an_entry_expires_at_the_earlier_of_the_ttl_and_the_credentials_own_end(
        clock: Clock, ttl: float, max_age: float | None) -> None:
    """A token or signature is never trusted from the cache past its own expiry."""
    cache, compute = TtlCache(ttl, timer=clock), Counter(max_age=max_age)
    life = ttl if max_age is None else min(ttl, max_age)
    cache.get_bounded("k", compute.bounded)
    clock.now += life - 0.01
    cache.get_bounded("k", compute.bounded)
    assert compute.calls == 1
    clock.now += 0.02
    cache.get_bounded("k", compute.bounded)
    assert compute.calls == 2


@pytest.mark.parametrize("max_age", [0, -3.0])
def test_a_result_marked_not_to_keep_is_computed_every_time(clock: Clock, max_age: float) -> None:
    """Transient failures (STS unreachable, the key endpoint down, busy) are not cached."""
    cache, compute = TtlCache(60, timer=clock), Counter(Refusal("retry", method="iam"), max_age)
    for _ in range(3):
        cache.get_bounded("k", compute.bounded)
    assert compute.calls == 3


def test_a_zero_ttl_caches_nothing(clock: Clock) -> None:
    cache, compute = TtlCache(0, timer=clock), Counter()
    cache.get("k", compute.plain)
    cache.get("k", compute.plain)
    assert compute.calls == 2


def test_exceptions_propagate_and_are_not_cached(clock: Clock) -> None:
    cache, calls = TtlCache(60, timer=clock), []

    def failing() -> str:
        calls.append(1)
        raise LookupError("no such user")

    for _ in range(2):
        with pytest.raises(LookupError):
            cache.get("k", failing)
    assert len(calls) == 2
    assert cache.get("k", lambda: "found") == "found"


def test_keys_are_apart_and_clear_forgets_everything(clock: Clock) -> None:
    cache = TtlCache(60, timer=clock)
    assert cache.get("a", lambda: 1) == 1
    assert cache.get("b", lambda: 2) == 2
    assert cache.get("a", lambda: 3) == 1
    cache.clear()
    assert cache.get("a", lambda: 4) == 4


def test_the_cache_is_bounded_in_size(clock: Clock) -> None:
    cache = TtlCache(60, maxsize=10, timer=clock)
    for i in range(100):
        cache.get(i, lambda i=i: i)
    assert len(cache) <= 10
    assert cache.get(99, lambda: "recomputed") == 99  # the most recent ones stay


def test_concurrent_callers_all_get_the_value() -> None:
    cache = TtlCache(60)
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(cache.get("k", lambda: "v")))
               for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == ["v"] * 16


def test_a_write_through_the_cached_store_clears_its_reads() -> None:
    class Store:
        def __init__(self) -> None:
            self.admin = False

        def get_user(self, name: str) -> tuple[str, bool]:
            return name, self.admin

        def update_user_admin(self, name: str, admin: bool) -> None:
            self.admin = admin

    store = Store()
    cached = CachedAuthStore(store, 60)
    assert cached.get_user("alice") == ("alice", False)
    store.admin = True  # changed behind the cache: the bounded staleness holds the old answer
    assert cached.get_user("alice") == ("alice", False)
    cached.update_user_admin("alice", False)
    store.admin = True
    assert cached.get_user("alice") == ("alice", True)


# -- the authenticator: every refusal says which method refused -------------------------------
class FakeRegistry:
    def __init__(self, keys: dict[str, Identity]) -> None:
        self.keys, self.lookups = keys, 0

    def verify_key(self, key: str) -> Identity | None:
        self.lookups += 1
        return self.keys.get(key)


ALICE = Identity("key:alice", "acme", Role.EDITOR, False, "key")


def test_a_key_is_looked_up_once_per_ttl_and_refusals_record_the_key_method() -> None:
    registry = FakeRegistry({"mlt_good": ALICE})
    auth = Authenticator(registry, 60, ["key"])
    for _ in range(3):
        assert auth.authenticate({"authorization": "Bearer mlt_good"}, None) == ALICE
        assert auth.authenticate({"authorization": "Bearer mlt_bad"}, None) == INVALID_KEY
    assert registry.lookups == 2
    assert INVALID_KEY.method == "key"
    assert auth.authenticate({}, None) is NO_CREDENTIALS and NO_CREDENTIALS.method == "none"


def test_a_method_that_leaves_its_refusal_unnamed_or_fails_is_named_by_the_authenticator() -> None:
    def quiet(headers, _addr):
        return Refusal("no") if "x-quiet" in headers else None

    def broken(headers, _addr):
        raise RuntimeError("bug")

    auth = Authenticator(FakeRegistry({}), 60, ["quiet", "broken"],
                         extra_methods={"quiet": quiet, "broken": broken})
    assert auth.authenticate({"x-quiet": "1"}, None) == Refusal("no", method="quiet")
    failed = auth.authenticate({}, None)
    assert (failed.reason, failed.method) == ("authentication failed", "broken")
