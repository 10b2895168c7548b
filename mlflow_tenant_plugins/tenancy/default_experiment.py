"""Each tenant's own default experiment, the one code that names no experiment writes to.

MLflow's client sends experiment id ``"0"`` when no experiment is set; that experiment lives in
the ``default`` workspace, which no tenant may use. MLflow's workspace-aware SQL store knows a
per-workspace experiment named ``Default`` but creates it only for the ``default`` workspace, at
startup. We create a tenant's ``Default`` on the tenant's first request to the server (the
server, not the admin CLI, knows the artifact root its experiments must get), through the
store's public ``create_experiment``, and remember its id per worker for a short time.

"The default experiment" of a tenant is the experiment named ``Default`` in its workspace, as
in MLflow's own per-workspace bootstrap: renaming it and creating another ``Default`` moves the
alias to the new one (within ``ttl_seconds`` on every worker).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from cachetools import TTLCache
from mlflow.entities import Experiment
from mlflow.exceptions import MlflowException
from mlflow.utils.workspace_context import ServerWorkspaceContext

DEFAULT_EXPERIMENT_NAME = Experiment.DEFAULT_EXPERIMENT_NAME  # "Default"
MLFLOW_DEFAULT_EXPERIMENT_ID = "0"  # what the stock client sends when none is set


class DefaultExperiments:
    """workspace name -> id of its ``Default`` experiment, created on first use."""

    def __init__(self, store: Callable[[], Any], ttl_seconds: float = 60.0,
                 maxsize: int = 20_000):
        self._store = store
        self._cache: TTLCache = TTLCache(maxsize=maxsize, ttl=ttl_seconds)
        self._lock = threading.Lock()

    def cached_id(self, workspace: str) -> str | None:
        """The id if this worker knows it: no database access (safe on the event loop)."""
        with self._lock:
            return self._cache.get(workspace)

    def id_for(self, workspace: str) -> str:
        """The id, creating the experiment if the workspace has none (blocking: database)."""
        known = self.cached_id(workspace)
        if known is not None:
            return known
        experiment_id = self._find_or_create(workspace)
        with self._lock:
            self._cache[workspace] = experiment_id
        return experiment_id

    def _find_or_create(self, workspace: str) -> str:
        store = self._store()
        with ServerWorkspaceContext(workspace):  # never the process env: threads share it
            found = store.get_experiment_by_name(DEFAULT_EXPERIMENT_NAME)
            if found is not None:
                return found.experiment_id
            try:
                return store.create_experiment(DEFAULT_EXPERIMENT_NAME)
            except MlflowException as exc:
                # Another worker or instance created it first: names are unique per workspace.
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            found = store.get_experiment_by_name(DEFAULT_EXPERIMENT_NAME)
            if found is None:
                raise MlflowException(f"the default experiment of '{workspace}' vanished")
            return found.experiment_id
