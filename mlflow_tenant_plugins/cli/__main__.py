"""``python -m mlflow_tenant_plugins.cli``: the same as the console script ``mlflow-tenants``."""

from mlflow_tenant_plugins.cli import main

main()
