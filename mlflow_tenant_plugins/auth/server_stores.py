"""The MLflow server's own stores, as its request handlers use them.

MLflow private names used here (checked against MLflow 3.17.2):
``mlflow.server.handlers._get_tracking_store`` and
``mlflow.server.handlers._get_model_registry_store``. They return the workspace-aware stores the
server was started with (backend URI, artifact root), memoized per process; every call below
goes through MLflow's public store methods and honours the request's workspace.
"""

from __future__ import annotations

from typing import Any


def tracking_store() -> Any:
    from mlflow.server import handlers

    return handlers._get_tracking_store()


def registry_store() -> Any:
    from mlflow.server import handlers

    return handlers._get_model_registry_store()
