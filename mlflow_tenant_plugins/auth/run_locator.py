"""Where a run lives, for MLflow's engine, without loading the whole run every request.

Gap in MLflow's basic-auth engine (3.17): every run-scoped request (get-run, log-metric,
log-batch, set-tag, …) is authorized by ``_run_requirement``, which calls the tracking store's
full ``get_run`` — params, metrics, tags, dataset inputs — only to read ``run.info.experiment_id``.
Under load that query is a third of the server's time (profiled with py-spy; see
``benchmarks/auth_overhead.py``). The engine already caches experiment -> workspace; the missing
link is run -> experiment.

A run never changes experiment, so per worker we remember ``(workspace, run id) -> experiment id``
(LRU, bounded) and hand the engine's lookups a run that carries only that. The key includes the
request's workspace because the workspace-aware store answers ``get_run`` only for runs of the
current workspace: the cache never answers where the store would have said "does not exist".
Unknown runs raise as before and are not cached. Nothing about *who may act* is cached here:
the experiment's workspace and the caller's grants are still resolved on every request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache
from mlflow.utils import workspace_context


@dataclass(frozen=True)
class RunLocation:
    """The part of a run's info the engine reads. Any other attribute is an AttributeError,
    so a future engine that reads more fails loudly (a test fails) instead of reading stale data."""

    run_id: str
    experiment_id: str


@dataclass(frozen=True)
class LocatedRun:
    info: RunLocation


class RunLocations:
    def __init__(self, maxsize: int = 100_000):
        self._cache: LRUCache = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()

    def locate(self, store: Any, run_id: str) -> LocatedRun:
        key = (workspace_context.get_request_workspace(), run_id)
        with self._lock:
            experiment_id = self._cache.get(key)
        if experiment_id is None:
            experiment_id = store.get_run(run_id).info.experiment_id  # unknown ids raise
            with self._lock:
                self._cache[key] = experiment_id
        return LocatedRun(RunLocation(run_id, experiment_id))


class RunLocatingStore:
    """The tracking store as the engine sees it: ``get_run`` answers from the locations,
    everything else is the store itself."""

    def __init__(self, store: Any, locations: RunLocations):
        self._store = store
        self._locations = locations

    def get_run(self, run_id: str) -> LocatedRun:
        return self._locations.locate(self._store, run_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def install(engine: Any = None, locations: RunLocations | None = None) -> None:
    """Point the engine's tracking-store accessor at the locating store (``engine``: MLflow's
    basic-auth module by default). MLflow's handlers keep the real store. Idempotent."""
    from mlflow_tenant_plugins.mlflow_hooks.basic_auth import wrap_engine_tracking_store

    found = locations or RunLocations()

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def locating_store(*args: Any, **kwargs: Any) -> RunLocatingStore:
            return RunLocatingStore(original(*args, **kwargs), found)

        return locating_store

    wrap_engine_tracking_store(wrap, "run_locating", engine)
