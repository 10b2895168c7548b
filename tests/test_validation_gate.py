"""The deploy gate wired into the deployment service (against the patched SageMaker emulator):
a tenant with ``require_validation`` deploys a registered model whose training run passed
validation, and is refused — 400, naming the run and what is missing, nothing made — for one
whose run never validated its data, on create and on update."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.validation import validate
from tests.fixtures.sagemaker import MODEL_CODE

RULES = {"columns": {"x": {"dtype": "float64", "greater_than_or_equal_to": 0}}}


def _train(deploy_env, tenant: str, tmp_path, validated: bool) -> str:
    """Register a model from a run that did (or did not) validate its data."""
    code = tmp_path / "doubler.py"
    code.write_text(MODEL_CODE)
    name = f"m-{tenant}-{'checked' if validated else 'unchecked'}"
    mlflow.set_tracking_uri(deploy_env.registry.database_uri)
    mlflow.set_registry_uri(deploy_env.registry.database_uri)
    try:
        exp = mlflow.set_experiment(f"gate-{tenant}").experiment_id
        with mlflow.start_run(experiment_id=exp) as run:
            if validated:
                validate(pd.DataFrame({"x": [0.5, 2.0]}), RULES, name="train")
            mlflow.pyfunc.log_model(name="model", python_model=str(code),
                                    registered_model_name=name, pip_requirements=["mlflow"])
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    return run.info.run_id


def test_service_deploys_validated_models_only_for_a_tenant_that_requires_it(
    deploy_env, tmp_path
):
    tenant = deploy_env.tenant()
    deploy_env.registry.update_tenant(tenant, require_validation=True)
    unchecked = _train(deploy_env, tenant, tmp_path, validated=False)
    _train(deploy_env, tenant, tmp_path, validated=True)
    svc = deploy_env.service()

    with pytest.raises(MlflowException) as exc:
        svc.create(tenant, "churn", f"models:/m-{tenant}-unchecked/1")
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE"
    assert f"training run {unchecked} has no data validation" in exc.value.message
    assert deploy_env.leftovers(tenant) == {}

    svc.create(tenant, "churn", f"models:/m-{tenant}-checked/1")
    svc.wait_for_jobs(30)
    assert svc.get(tenant, "churn")["status"] == "InService"

    with pytest.raises(MlflowException) as exc:
        svc.update(tenant, "churn", f"models:/m-{tenant}-unchecked/1")
    assert f"training run {unchecked} has no data validation" in exc.value.message
    svc.delete(tenant, "churn")
    svc.wait_for_jobs(30)
