"""Shared fixtures live in ``tests/fixtures/``: one module per real part the tests use."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.registry",
    "tests.fixtures.aws",
    "tests.fixtures.artifacts",
    "tests.fixtures.servers",
    "tests.fixtures.sagemaker",
]

_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _isolate_mlflow_uris() -> Iterator[None]:
    """MLflow keeps the tracking and registry URIs process-wide (``set_registry_uri`` also
    writes MLFLOW_REGISTRY_URI into the environment), so one test's setting would silently
    redirect the next test's client. Put both back as they were after every test."""
    saved = {k: os.environ.get(k) for k in _URI_ENV}
    yield
    import mlflow

    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])
