"""API requests per tenant, for statements: counted in memory by every worker (an ASGI
middleware inside the tenant middleware, which has fixed the request's workspace to the
checked tenant) and added to the month's meter every ``metering_flush_seconds``. Additive, so
workers and instances never double-count; what a worker counted since its last flush is lost
if it is killed (at most a few seconds of requests)."""

from __future__ import annotations

import atexit
import logging
import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from mlflow_tenant_plugins.tenancy import meters as m
from mlflow_tenant_plugins.wire import WORKSPACE_HEADER

_logger = logging.getLogger(__name__)
_HEADER = WORKSPACE_HEADER.lower().encode("latin-1")


class RequestCounter:
    def __init__(self, meters: m.Meters, flush_seconds: float):
        self.meters = meters
        self.flush_seconds = flush_seconds
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlt-request-meter",
                                        daemon=True)

    def count(self, tenant: str) -> None:
        with self._lock:
            self._counts[tenant] += 1

    def flush(self) -> int:
        with self._lock:
            counts, self._counts = self._counts, Counter()
        now = datetime.now(UTC)
        for tenant, n in counts.items():
            try:
                self.meters.add_count(tenant, m.API_REQUESTS, n, now)
            except Exception:
                _logger.warning("metering: could not record %d requests of %s", n, tenant,
                                exc_info=True)
        return sum(counts.values())

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def start(self) -> RequestCounter:
        self._thread.start()
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.flush()


class RequestMeter:
    """Counts each request that reaches MLflow with a tenant workspace (authenticated: the
    tenant middleware outside this one refused the rest)."""

    def __init__(self, app: Any, counter: RequestCounter):
        self.app = app
        self.counter = counter

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            for name, value in scope.get("headers") or ():
                if name == _HEADER and value:
                    self.counter.count(value.decode("latin-1"))
                    break
        await self.app(scope, receive, send)
