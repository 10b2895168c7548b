"""The ``tenant-sagemaker`` deployment target (entry point ``mlflow.deployments``).

MLflow's plugin manager requires this module to expose ``run_local``, ``target_help`` and
exactly one ``BaseDeploymentClient`` subclass, so nothing else that subclasses it may be
imported here. It stays light: the server side (service, routes) is imported only by the
server and by direct mode.
"""

from mlflow_tenant_plugins.deployments.client import TenantSageMakerDeploymentClient
from mlflow_tenant_plugins.deployments.local import run_local
from mlflow_tenant_plugins.deployments.options import help_text

__all__ = ["TenantSageMakerDeploymentClient", "run_local", "target_help"]


def target_help() -> str:
    return f"""\
tenant-sagemaker: deploy MLflow models to SageMaker endpoints through your ML platform, within
your tenant's quotas, with CloudWatch alarms, autoscaling and rollback made for you.

Target URIs
  tenant-sagemaker                    through the platform server at MLFLOW_TRACKING_URI,
                                      authenticated as your tracking client is
                                      (MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_AUTH=tenant)
  tenant-sagemaker:/REGION[/TENANT]   direct mode for platform admins: your own AWS
                                      credentials and the platform config
                                      (MLFLOW_TENANT_CONFIG); tenant from -C tenant=...,
                                      the URI or MLFLOW_WORKSPACE

Models: models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH in your tenant
(direct mode: any URI MLflow can download). Flavor: python_function.

create and update return once the endpoint is InService (printing status and elapsed time),
or at once with -C synchronous=false; a failed deploy is rolled back entirely and `get` shows
why. update keeps the instance count autoscaling chose unless you set instance_count.

Config keys (-C key=value; unknown keys are errors; booleans: true/false/1/0)
{help_text()}

Examples
  mlflow deployments create -t tenant-sagemaker --name churn -m models:/churn/3 \\
      -C instance_type=ml.m5.large -C max_instances=2
  mlflow deployments update -t tenant-sagemaker --name churn -m models:/churn/4 \\
      -C strategy=blue-green -C traffic_routing=canary -C canary_percent=20
  mlflow deployments predict -t tenant-sagemaker --name churn --input-path input.json
  mlflow deployments run-local -t tenant-sagemaker --name churn -m models:/churn/3 -C port=5001
"""
