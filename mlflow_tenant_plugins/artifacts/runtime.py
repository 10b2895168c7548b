"""What a repository needs besides its URI — settings, per-tenant credentials, the usage
ledger — shared by every repository of a process with the same settings, so that MLflow
building repositories per request does not mean an AssumeRole or a database engine per request.
"""

from __future__ import annotations

import dataclasses
import threading
from functools import cached_property
from typing import TYPE_CHECKING

from mlflow_tenant_plugins.artifacts.credentials import TenantCredentials, kms_key_for
from mlflow_tenant_plugins.artifacts.quota import StorageQuota
from mlflow_tenant_plugins.config import Settings, load_settings

if TYPE_CHECKING:
    from mlflow_tenant_plugins.artifacts.reservations import MultipartReservations
    from mlflow_tenant_plugins.tenancy.usage import UsageLedger

_runtimes: dict[tuple, Runtime] = {}
_lock = threading.Lock()


class Runtime:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.credentials = TenantCredentials(settings)

    @cached_property
    def ledger(self) -> UsageLedger:
        # The server and the admin CLI read one configuration, so they share this database.
        # Imported here: the repository module is loaded in every MLflow client process,
        # which must not pay for SQLAlchemy and the registry it never uses.
        from mlflow_tenant_plugins.tenancy.db import get_engine
        from mlflow_tenant_plugins.tenancy.usage import UsageLedger

        return UsageLedger(get_engine(self.settings.database_uri))

    @cached_property
    def reservations(self) -> MultipartReservations:
        from mlflow_tenant_plugins.artifacts.reservations import MultipartReservations
        from mlflow_tenant_plugins.tenancy.db import get_engine

        return MultipartReservations(get_engine(self.settings.database_uri))

    def warm(self) -> None:
        """Pay the once-per-process costs (database engine, STS client, S3's service model)
        before the first upload does: about a second on the first artifact request otherwise."""
        _ = self.ledger  # creates (and migrates) the database engine
        self.credentials.warm()

    def quota(self, tenant: str) -> StorageQuota:
        return StorageQuota(self.ledger, tenant)

    def kms_key(self, tenant: str) -> str | None:
        return kms_key_for(self.settings, tenant)


def _key(settings: Settings) -> tuple:
    fields = dataclasses.fields(settings)
    return tuple((f.name, getattr(settings, f.name)) for f in fields if f.name != "extra")


def runtime_for(settings: Settings | None = None) -> Runtime:
    """The process's runtime for ``settings``. ``None`` is for the ``tenant-s3`` repository
    MLflow builds from a URI in any process (an entry point: it reads the settings itself);
    the server hands its own, so both find the same runtime."""
    settings = settings or load_settings()
    key = _key(settings)
    with _lock:
        runtime = _runtimes.get(key)
        if runtime is None:
            runtime = _runtimes[key] = Runtime(settings)
        return runtime
