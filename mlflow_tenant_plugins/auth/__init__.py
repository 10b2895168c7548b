"""Who is calling: credentials -> an :class:`~mlflow_tenant_plugins.tenancy.entities.Identity`.

Plugged into MLflow's basic-auth engine through its ``authorization_function``; MLflow's
engine then authorizes every route from the workspace roles the registry keeps in step.
"""
