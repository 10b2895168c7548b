"""The lookups MLflow's engine makes on every request, answered from per-worker caches:
run -> experiment (immutable, keyed by workspace) and workspace resolution (bounded
staleness). In-process, with fake stores that count their calls; the server-level proof
that nothing crosses tenants with the caches on is tests/test_isolation_matrix.py."""

from __future__ import annotations

import contextvars
import time
from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.utils import workspace_context

from mlflow_tenant_plugins.auth import run_locator
from mlflow_tenant_plugins.auth.store_cache import CachedWorkspaceStore


class FakeTrackingStore:
    """Runs per workspace, as the workspace-aware store answers: a run of another workspace
    does not exist."""

    def __init__(self, runs: dict[tuple[str, str], str]):
        self.runs = runs
        self.get_run_calls = 0

    def get_run(self, run_id: str):
        self.get_run_calls += 1
        key = (workspace_context.get_request_workspace(), run_id)
        if key not in self.runs:
            raise MlflowException(f"Run '{run_id}' not found", RESOURCE_DOES_NOT_EXIST)
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id, experiment_id=self.runs[key]),
                               data=SimpleNamespace(metrics={"m": 1.0}))

    def get_experiment(self, experiment_id: str) -> str:
        return f"experiment {experiment_id}"


def in_workspace(workspace: str, fn):
    def call():
        workspace_context.set_server_request_workspace(workspace)
        return fn()

    return contextvars.copy_context().run(call)


@pytest.fixture
def engine():
    store = FakeTrackingStore({("acme", "r1"): "7", ("globex", "r2"): "9"})
    module = SimpleNamespace(_get_tracking_store=lambda: store)
    run_locator.install(module)
    return module, store


def test_engine_loads_a_run_once_per_workspace_to_learn_its_experiment(engine):
    module, store = engine
    for _ in range(5):
        run = in_workspace("acme", lambda: module._get_tracking_store().get_run("r1"))
        assert (run.info.run_id, run.info.experiment_id) == ("r1", "7")
    assert store.get_run_calls == 1


def test_a_run_is_not_found_from_another_workspace_even_once_remembered(engine):
    module, _store = engine
    in_workspace("acme", lambda: module._get_tracking_store().get_run("r1"))
    with pytest.raises(MlflowException) as info:
        in_workspace("globex", lambda: module._get_tracking_store().get_run("r1"))
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_unknown_runs_raise_every_time_and_are_not_remembered(engine):
    module, store = engine
    for _ in range(3):
        with pytest.raises(MlflowException):
            in_workspace("acme", lambda: module._get_tracking_store().get_run("nope"))
    assert store.get_run_calls == 3


def test_located_run_carries_only_its_location(engine):
    module, _store = engine
    run = in_workspace("acme", lambda: module._get_tracking_store().get_run("r1"))
    with pytest.raises(AttributeError):
        _ = run.data
    with pytest.raises(AttributeError):
        _ = run.info.status


def test_every_other_store_call_reaches_the_store_and_install_is_idempotent(engine):
    module, _store = engine
    accessor = module._get_tracking_store
    run_locator.install(module)
    assert module._get_tracking_store is accessor
    assert module._get_tracking_store().get_experiment("7") == "experiment 7"


def test_the_locations_are_bounded():
    store = FakeTrackingStore({("acme", f"r{i}"): str(i) for i in range(10)})
    locations = run_locator.RunLocations(maxsize=4)
    for i in range(10):
        in_workspace("acme", lambda i=i: locations.locate(store, f"r{i}"))
    in_workspace("acme", lambda: locations.locate(store, "r0"))
    assert store.get_run_calls == 11  # r0 was evicted and loaded again


class FakeWorkspaceStore:
    def __init__(self):
        self.names = {"acme"}
        self.reads = 0

    def get_workspace(self, name: str):
        self.reads += 1
        if name not in self.names:
            raise MlflowException(f"Workspace '{name}' not found", RESOURCE_DOES_NOT_EXIST)
        return SimpleNamespace(name=name)

    def delete_workspace(self, name: str) -> None:
        self.names.discard(name)


def test_workspace_resolution_is_cached_within_the_bound_and_cleared_by_writes():
    store = FakeWorkspaceStore()
    cached = CachedWorkspaceStore(store, ttl_seconds=0.3)
    for _ in range(5):
        assert cached.get_workspace("acme").name == "acme"
    assert store.reads == 1
    time.sleep(0.4)
    cached.get_workspace("acme")
    assert store.reads == 2  # past the bound: read again
    cached.delete_workspace("acme")  # a write through the cache clears it at once
    with pytest.raises(MlflowException):
        cached.get_workspace("acme")


def test_unknown_workspaces_are_never_cached():
    store = FakeWorkspaceStore()
    cached = CachedWorkspaceStore(store, ttl_seconds=60)
    for _ in range(3):
        with pytest.raises(MlflowException):
            cached.get_workspace("globex")
    store.names.add("globex")
    assert cached.get_workspace("globex").name == "globex"
