"""Shared fixtures live in ``tests/fixtures/``: one module per real part the tests use."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.aws",
    "tests.fixtures.servers",
    "tests.fixtures.sagemaker",
]
