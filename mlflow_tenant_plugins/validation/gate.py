"""The deploy gate: a tenant with ``require_validation`` deploys only models whose training run
carries passing validation evidence written by :func:`validate` — the run tag
``mlflow_tenant.validation = pass`` and at least one dataset input tagged ``pass`` — and no
dataset input tagged ``fail``.

Called by the deployment service on the platform server (``DeploymentService._gate``) with
the tenant's workspace active. It reads run tags and inputs only: no pandas, no pandera, no
registry. The refusal is a 400 that names the model, the run and what is missing, and says
how to produce it.

What it proves: the run went through ``validate()`` (or someone with write access to the run
wrote the same tags). It is a guard against deploying an unchecked model by mistake, within a
tenant that trusts its own editors; it is not tamper-proof against them.
"""

from __future__ import annotations

from typing import Any

from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.validation import tags as t

_HOW = ("call mlflow_tenant_plugins.validation.validate(data, rules) inside the training run, "
        "or run 'mlflow-tenants validate DATA --rules RULES --run-id {run}'")


def _refuse(model_uri: str, tenant: str, why: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(
        f"model {model_uri!r} cannot be deployed: tenant '{tenant}' deploys only validated "
        f"models, and {why}"
    )


def _validated_inputs(run: Any) -> list[dict[str, str]]:
    """The run's dataset inputs that ``validate`` logged, with their verdicts."""
    found = []
    for item in (run.inputs.dataset_inputs if run.inputs else []) or []:
        tags = {tag.key: tag.value for tag in item.tags or []}
        if t.STATUS_TAG in tags:
            found.append({"name": item.dataset.name, "digest": item.dataset.digest,
                          "status": tags[t.STATUS_TAG],
                          "rules_digest": tags.get(t.RULES_DIGEST_TAG, ""),
                          "report": tags.get(t.REPORT_TAG, "")})
    return found


def check_run_validated(client: Any, run_id: str | None, *, model_uri: str,
                        tenant: str) -> list[dict[str, str]]:
    """The validated datasets of ``run_id``, or an MlflowException (400) saying what is
    missing. ``client`` is an ``MlflowClient`` that sees the tenant's runs."""
    if not run_id:
        raise _refuse(model_uri, tenant, "the model names no training run to check: log it "
                      "from the MLflow run that validated its training data")
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise _refuse(model_uri, tenant, f"its training run {run_id} was not found") from None
    status = run.data.tags.get(t.STATUS_TAG)
    checked = _validated_inputs(run)
    failed = [c for c in checked if c["status"] != t.PASS]
    if status == t.FAIL or failed:
        detail = "; ".join(f"dataset '{c['name']}' (digest {c['digest']}) failed, report "
                           f"artifact {c['report']}" for c in failed)
        raise _refuse(model_uri, tenant, f"its training run {run_id} failed data validation"
                      f"{': ' + detail if detail else ''}; fix the data and train again")
    if status != t.PASS:
        raise _refuse(model_uri, tenant, f"its training run {run_id} has no data validation: "
                      f"missing the run tag {t.STATUS_TAG}=pass and a validated dataset input; "
                      + _HOW.format(run=run_id))
    if not checked:
        raise _refuse(model_uri, tenant, f"its training run {run_id} is tagged "
                      f"{t.STATUS_TAG}=pass but has no validated dataset input (one logged by "
                      "validate(), tagged with its verdict); " + _HOW.format(run=run_id))
    return checked


def check_deploy(tenant: Any, model: Any, tracking_uri: str | None = None) -> None:
    """The hook the deployment service calls: ``tenant`` has ``name``, ``model`` (a
    ``ModelRef``) has ``model_uri`` and ``run_id``. The caller activates the tenant's
    workspace; ``tracking_uri`` is the store the service resolves models in."""
    from mlflow import MlflowClient

    check_run_validated(MlflowClient(tracking_uri=tracking_uri), model.run_id,
                        model_uri=model.model_uri, tenant=tenant.name)
