"""Under which IAM role, and with what network, SageMaker runs a tenant's model.

A tenant's model is arbitrary Python, and its container holds the execution role's
credentials (SageMaker serves them to it). One role for every tenant would let any tenant's
model read every other tenant's packages, so the role ARN is a template: ``{tenant}`` is
replaced by the tenant, each tenant's role reads only its own package prefix
(``deploy/iam/tenant-sagemaker-execution-role-policy.json``). A shared role (no ``{tenant}``)
is accepted only when every model runs with SageMaker's ``EnableNetworkIsolation`` (the
container has no network, so the credentials are of no use to it): the artifacts part's
``role-per-tenant`` mode follows the same rule for storage.

Misconfiguration is a 400 that names the setting, not a 500: MLflow's client retries a 5xx
for minutes, and a missing setting does not heal by itself.
"""

from __future__ import annotations

import re

from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.config import Settings

ISOLATION_MODES = ("per-deployment", "always")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")


def platform_config_error(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(
        f"deployments are not configured on this platform: {message} (a platform setting: "
        "ask your platform admin)")


def _isolation_mode(settings: Settings) -> str:
    mode = settings.deploy_network_isolation
    if mode not in ISOLATION_MODES:
        raise platform_config_error(
            f"deploy_network_isolation is {mode!r}; expected one of {', '.join(ISOLATION_MODES)}")
    return mode


def execution_role_arn(settings: Settings, tenant: str) -> str:
    """The tenant's execution role ARN, or a 400 naming ``deploy_execution_role_arn``."""
    template = settings.deploy_execution_role_arn
    if not template:
        raise platform_config_error(
            "deploy_execution_role_arn is not set; set it to the tenants' SageMaker execution "
            "role, e.g. arn:aws:iam::ACCOUNT:role/mlflow-sagemaker-{tenant}")
    if "{tenant}" not in template and _isolation_mode(settings) != "always":
        raise platform_config_error(
            f"deploy_execution_role_arn {template!r} names one role for every tenant, whose "
            "credentials each tenant's model would hold; put {tenant} in it (one role per "
            "tenant) or set deploy_network_isolation = \"always\"")
    arn = template.replace("{tenant}", tenant)
    if not _ROLE_ARN.fullmatch(arn):
        raise platform_config_error(
            f"deploy_execution_role_arn {template!r} does not give an IAM role ARN for tenant "
            f"'{tenant}' (got {arn!r})")
    return arn


def network_isolation(settings: Settings, requested: bool | None, current: bool = False) -> bool:
    """Whether the model runs without network: the deployment's ``network_isolation`` (an
    update keeps ``current`` unless it says otherwise), forced on by ``always``."""
    if _isolation_mode(settings) == "always":
        if requested is False:
            raise MlflowException.invalid_parameter_value(
                "network_isolation=false is not allowed: this platform runs every model with "
                "network isolation")
        return True
    return current if requested is None else requested
