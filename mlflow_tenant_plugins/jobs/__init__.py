"""Tenants' experiments run by the platform: ``mlflow run -b tenant-sagemaker``.

Client side (loaded on a tenant's machine; nothing server-side imported): ``backend`` (the
``mlflow.project_backend`` entry point), ``package`` (the project's files as one archive),
``api`` (the REST calls) and ``runner`` (what runs inside the job). Shared by both ends:
``spec``. Server side: ``service``, ``routes``, ``local`` and ``sagemaker`` (the executors),
``reconcile``.
"""
