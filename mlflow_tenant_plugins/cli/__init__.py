"""The admin CLI ``mlflow-tenants``: tenants, quotas, keys, members and usage.

Every verb takes ``--json``. Bad input ends with one line ``error: …`` on stderr and exit
status 2, never a traceback, so a script can tell a refused request (2) from a broken platform
(1). MLflow is imported only once a verb needs the registry: it takes seconds to import.
"""

from __future__ import annotations

# Importing the verb modules attaches their commands to ``cli``.
from mlflow_tenant_plugins.cli import access, billing, jobs, schema, tenants, usage  # noqa: F401
from mlflow_tenant_plugins.cli.common import ROLE_CHOICES
from mlflow_tenant_plugins.cli.root import cli, main

__all__ = ["ROLE_CHOICES", "cli", "main"]
