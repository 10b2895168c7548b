"""Who a running job is when it logs to the tracking server: never more than its tenant's
editor, and never a long-lived secret.

- ``local``: a key made for this job alone (principal ``key:<id>``, editor in the job's
  tenant), expiring with the job's maximum runtime plus a grace, revoked when the job ends.
  It lives only in the subprocess's environment.
- ``sagemaker``: the tenant's execution role (``jobs_execution_role_arn`` with ``{tenant}``),
  bound to that tenant as editor, authenticates with the AWS IAM method: the job signs
  ``sts:GetCallerIdentity`` with the role's temporary credentials, which SageMaker gives the
  container. Nothing secret is in the job's environment or in ``DescribeTrainingJob``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE

from mlflow_tenant_plugins.tenancy import Role
from mlflow_tenant_plugins.tenancy.job_records import JobRecord

# A local job's key outlives the job's maximum runtime by this much (the runner ends its run
# after the project's code returns); it is revoked as soon as the job ends.
KEY_GRACE_SECONDS = 600


def local_key(registry) -> Callable[[JobRecord], dict[str, str]]:
    def make(job: JobRecord) -> dict[str, str]:
        record, secret = registry.create_key(
            job.tenant, Role.EDITOR, description=f"job {job.job_id} (run {job.run_id})",
            expires_in=timedelta(seconds=job.max_runtime_seconds + KEY_GRACE_SECONDS))
        return {"MLFLOW_TRACKING_TOKEN": secret, "key_id": record.key_id}

    return make


def role_template(settings) -> str:
    template = settings.jobs_execution_role_arn or settings.deploy_execution_role_arn
    if "{tenant}" not in template:
        raise MlflowException(
            "SageMaker jobs need one execution role per tenant: set jobs_execution_role_arn "
            "(or deploy_execution_role_arn) to an ARN with {tenant}", INVALID_STATE)
    return template


def execution_role(registry, settings) -> Callable[[JobRecord], dict[str, str]]:
    from mlflow_tenant_plugins.tenancy.iam_bindings import IamBindings, normalize_arn

    if "iam" not in settings.auth_methods or not settings.server_id:
        raise MlflowException(
            "SageMaker jobs log with their execution role's AWS IAM identity: add 'iam' to "
            "auth_methods and set server_id", INVALID_STATE)
    bindings = IamBindings(registry)

    def make(job: JobRecord) -> dict[str, str]:
        arn = role_template(settings).format(tenant=job.tenant)
        if bindings.lookup(normalize_arn(arn)).get(job.tenant) is None:
            bindings.bind(job.tenant, arn, Role.EDITOR)
        return {"MLT_JOB_AUTH": "aws-iam", "MLT_JOB_TENANT": job.tenant,
                "MLT_JOB_SERVER_ID": settings.server_id,
                "MLT_JOB_STS_ENDPOINT": settings.sts_endpoint,
                "AWS_REGION": settings.aws_region, "AWS_DEFAULT_REGION": settings.aws_region}

    return make
