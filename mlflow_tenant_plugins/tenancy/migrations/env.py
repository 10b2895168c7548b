"""Alembic environment for the tenant registry (version table ``alembic_version_tenants``)."""

from alembic import context

from mlflow_tenant_plugins.tenancy.db import VERSION_TABLE
from mlflow_tenant_plugins.tenancy.models import Base

engine = context.config.attributes["connection_engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
