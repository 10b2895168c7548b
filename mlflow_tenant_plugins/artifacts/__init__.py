"""Per-tenant S3 artifacts: the ``tenant-s3://BUCKET/PREFIX`` repository (entry point
``mlflow.artifact_repository``), prefix-scoped credentials, path safety, storage quota and
ledger reconciliation. Stands on ``tenancy``; imports nothing of ``auth``, ``deployments`` or
the server.

- :mod:`.paths` — artifact path to S3 key, refusing anything that leaves the tenant's prefix
- :mod:`.credentials` — per-tenant S3 clients (AssumeRole + session policy, refreshable)
- :mod:`.quota` — reservations against the tenant's ``storage_bytes``
- :mod:`.runtime` — settings, credentials and ledger shared per process
- :mod:`.repository` — ``TenantS3ArtifactRepository`` and ``repository_for_request``
- :mod:`.multipart` — proxied multipart upload, quota charged at completion
- :mod:`.errors` — S3 errors as MLflow errors
- :mod:`.reconcile` — ``reconcile(registry, destination)`` for ``mlflow-tenants usage``
"""
