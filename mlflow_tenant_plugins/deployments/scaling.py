"""Application Auto Scaling for an endpoint's variant: target tracking on
``SageMakerVariantInvocationsPerInstance``, between min and max instances that the tenant's
quota has already reserved (max is what the reservation holds, so scaling can never take the
tenant past its instance quota).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from mlflow_tenant_plugins.deployments.names import SCALABLE_DIMENSION, Names

NAMESPACE = "sagemaker"


def register(autoscaling: Any, names: Names, min_instances: int, max_instances: int) -> None:
    autoscaling.register_scalable_target(
        ServiceNamespace=NAMESPACE,
        ResourceId=names.scaling_resource_id,
        ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=min_instances,
        MaxCapacity=max_instances,
    )


def put_policy(autoscaling: Any, names: Names, target: float, scale_in_cooldown: int,
               scale_out_cooldown: int) -> None:
    autoscaling.put_scaling_policy(
        PolicyName=names.scaling_policy,
        ServiceNamespace=NAMESPACE,
        ResourceId=names.scaling_resource_id,
        ScalableDimension=SCALABLE_DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(target),
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            },
            "ScaleInCooldown": int(scale_in_cooldown),
            "ScaleOutCooldown": int(scale_out_cooldown),
        },
    )


def _delete_if_present(call: Any, **kwargs: Any) -> None:
    """Delete calls are idempotent: a target or policy that is already gone is fine."""
    try:
        call(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in ("ObjectNotFoundException", "ValidationException"):
            raise


def delete_policy(autoscaling: Any, names: Names) -> None:
    _delete_if_present(
        autoscaling.delete_scaling_policy,
        PolicyName=names.scaling_policy,
        ServiceNamespace=NAMESPACE,
        ResourceId=names.scaling_resource_id,
        ScalableDimension=SCALABLE_DIMENSION,
    )


def deregister(autoscaling: Any, names: Names) -> None:
    """Remove the policy and the target; missing ones are fine (delete is idempotent)."""
    delete_policy(autoscaling, names)
    _delete_if_present(
        autoscaling.deregister_scalable_target,
        ServiceNamespace=NAMESPACE,
        ResourceId=names.scaling_resource_id,
        ScalableDimension=SCALABLE_DIMENSION,
    )


def describe(autoscaling: Any, names: Names) -> dict[str, Any] | None:
    targets = autoscaling.describe_scalable_targets(
        ServiceNamespace=NAMESPACE,
        ResourceIds=[names.scaling_resource_id],
        ScalableDimension=SCALABLE_DIMENSION,
    ).get("ScalableTargets", [])
    if not targets:
        return None
    policies = autoscaling.describe_scaling_policies(
        ServiceNamespace=NAMESPACE,
        ResourceId=names.scaling_resource_id,
        ScalableDimension=SCALABLE_DIMENSION,
    ).get("ScalingPolicies", [])
    out: dict[str, Any] = {
        "min_instances": targets[0]["MinCapacity"],
        "max_instances": targets[0]["MaxCapacity"],
        "policy": None,
    }
    for policy in policies:
        if policy["PolicyName"] == names.scaling_policy:
            cfg = policy.get("TargetTrackingScalingPolicyConfiguration", {})
            out["policy"] = policy["PolicyName"]
            out["target_invocations_per_instance"] = cfg.get("TargetValue")
            out["scale_in_cooldown_seconds"] = cfg.get("ScaleInCooldown")
            out["scale_out_cooldown_seconds"] = cfg.get("ScaleOutCooldown")
    return out
