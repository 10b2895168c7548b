"""The long-running halves of create and update, run in a background thread (or inline).

Every step that makes something pushes how to unmake it onto an :class:`Undo` stack first or
right after; a failure anywhere runs the stack backwards, gives back the call's reservations
and leaves a ``Failed`` record with the reason, so nothing is half-created.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.artifacts.fence import server_scratch
from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.deployments import alarms, scaling
from mlflow_tenant_plugins.deployments import names as n
from mlflow_tenant_plugins.deployments.aws import AwsClients, describe, is_not_found
from mlflow_tenant_plugins.deployments.model_source import ModelRef, ModelResolver
from mlflow_tenant_plugins.deployments.roles import execution_role_arn
from mlflow_tenant_plugins.deployments.status import OperationRecord
from mlflow_tenant_plugins.deployments.storage import (
    DeploymentStorage,
    PackageLocation,
    make_tarball,
)
from mlflow_tenant_plugins.tenancy.usage import UsageLedger

_logger = logging.getLogger(__name__)


class DeployFailed(MlflowException):
    """SageMaker reported the endpoint Failed, or an update was rolled back."""


class Undo:
    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], Any]]] = []

    def push(self, what: str, fn: Callable[[], Any]) -> None:
        self._steps.append((what, fn))

    def drop_last(self) -> None:
        self._steps.pop()

    def run(self) -> list[str]:
        """Undo everything, newest first; returns what could not be undone."""
        failed = []
        while self._steps:
            what, fn = self._steps.pop()
            try:
                fn()
            except Exception as exc:
                if not is_not_found(exc):
                    _logger.warning("rollback step %r failed: %s", what, describe(exc))
                    failed.append(f"{what} ({describe(exc)})")
        return failed


@dataclass
class Plan:
    """Everything one create or update will make, decided before anything is made."""

    tenant: str
    names: n.Names
    deploy_id: str
    model: ModelRef | None  # None: update keeps the current package
    instance_type: str
    instance_count: int
    min_instances: int
    max_instances: int
    target: float
    scale_in_cooldown: int
    scale_out_cooldown: int
    thresholds: dict[str, Any]
    env: dict[str, str]
    tags: dict[str, str]
    topic_arn: str | None
    reserved_instances: int  # instances this call reserved (create: max; update: the increase)
    # update only
    # SageMaker updates blue/green (its default too): the new fleet runs beside the old until
    # traffic has moved, so the update holds the new fleet's instances for its duration.
    surge_instances: int = 0

    @property
    def held_instances(self) -> int:
        """Instances this call holds in the ledger while it runs."""
        return self.reserved_instances + self.surge_instances
    strategy: str = "replace"
    network_isolation: bool = False
    deployment_config: dict | None = None
    exclude_retained: list[str] = field(default_factory=list)
    current: dict[str, Any] = field(default_factory=dict)


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": str(v)[:256]} for k, v in tags.items() if v not in (None, "")]


class Operations:
    """The steps that make, change and unmake SageMaker resources; handed exactly what they
    use (AWS clients, package storage and records, the ledger, the model resolver, the
    settings, and how to find the serving image), never the service."""

    def __init__(self, *, aws: AwsClients, storage: DeploymentStorage, ledger: UsageLedger,
                 resolver: ModelResolver, settings: Settings, image_uri: Callable[[], str]):
        self.aws = aws
        self.storage = storage
        self.ledger = ledger
        self.resolver = resolver
        self.settings = settings
        self.image_uri = image_uri
        self.stop = threading.Event()

    # -- shared steps ----------------------------------------------------------------------
    def _package(self, plan: Plan, undo: Undo) -> tuple[PackageLocation, int]:
        """Download the model, tar it, upload it under the platform's package root (outside
        every tenant's artifact prefix, see :mod:`.storage`)."""
        assert plan.model is not None
        with server_scratch(prefix="mlt-package-") as tmp:
            model_dir = self.resolver.download(plan.model, os.path.join(tmp, "model"),
                                                   plan.tenant)
            tarball = os.path.join(tmp, "model.tar.gz")
            size = make_tarball(model_dir, tarball)
            loc = self.storage.package_location(plan.tenant, plan.names.deployment,
                                                    plan.deploy_id)
            undo.push("delete package", lambda: self.storage.delete_object(loc))
            self.storage.upload_package(tarball, loc, plan.tenant, plan.names.deployment)
        return loc, size

    def _resource_tags(self, plan: Plan, extra: dict[str, str] | None = None) -> dict[str, str]:
        tags = {
            **plan.tags,
            n.TAG_TENANT: plan.tenant,
            n.TAG_DEPLOYMENT: plan.names.deployment,
            n.TAG_DEPLOY_ID: plan.deploy_id,
        }
        if plan.model is not None:
            tags[n.TAG_MODEL_URI] = plan.model.model_uri
            tags[n.TAG_RUN_ID] = plan.model.run_id or ""
            tags[n.TAG_FLAVOR] = plan.model.flavor
        tags.update(extra or {})
        return tags

    def _model_and_config(self, plan: Plan, package_uri: str, flavor: str, undo: Undo) -> str:
        sm = self.aws.sagemaker
        model_name = plan.names.model(plan.deploy_id)
        config_name = plan.names.config(plan.deploy_id)
        from mlflow.environment_variables import MLFLOW_DEPLOYMENT_FLAVOR_NAME
        from mlflow.models.container import SERVING_ENVIRONMENT

        env = {**plan.env, MLFLOW_DEPLOYMENT_FLAVOR_NAME.name: flavor,
               SERVING_ENVIRONMENT: "SageMaker"}
        tags = _tag_list(self._resource_tags(plan))
        undo.push(f"delete model {model_name}", lambda: sm.delete_model(ModelName=model_name))
        sm.create_model(
            ModelName=model_name,
            PrimaryContainer={"Image": self.image_uri(), "ModelDataUrl": package_uri,
                              "Environment": env},
            ExecutionRoleArn=execution_role_arn(self.settings, plan.tenant),
            EnableNetworkIsolation=plan.network_isolation,
            Tags=tags,
        )
        undo.push(f"delete endpoint config {config_name}",
                  lambda: sm.delete_endpoint_config(EndpointConfigName=config_name))
        sm.create_endpoint_config(
            EndpointConfigName=config_name,
            ProductionVariants=[{
                "VariantName": n.VARIANT,
                "ModelName": model_name,
                "InstanceType": plan.instance_type,
                "InitialInstanceCount": plan.instance_count,
                "InitialVariantWeight": 1.0,
            }],
            Tags=tags,
        )
        return config_name

    def wait_settled(self, endpoint: str, deadline: float) -> dict:
        """Poll until the endpoint is neither Creating nor Updating (or the deadline passes)."""
        poll = max(0.05, self.settings.deploy_poll_seconds)
        while True:
            desc = self.aws.sagemaker.describe_endpoint(EndpointName=endpoint)
            status = desc["EndpointStatus"]
            if status not in ("Creating", "Updating", "SystemUpdating", "RollingBack"):
                return desc
            if time.monotonic() >= deadline:
                raise DeployFailed(
                    f"endpoint still {status} after {self.settings.deploy_timeout_seconds:g}s"
                )
            if self.stop.wait(poll):
                raise DeployFailed("the server is shutting down")

    def delete_endpoint(self, endpoint: str) -> None:
        """Delete, waiting (bounded) first if it is mid-transition (AWS refuses then)."""
        try:
            self.wait_settled(endpoint, time.monotonic() + 600)
        except DeployFailed:
            pass
        self.aws.sagemaker.delete_endpoint(EndpointName=endpoint)

    def _alarms_and_scaling(self, plan: Plan, undo: Undo) -> None:
        cw, aas = self.aws.cloudwatch, self.aws.autoscaling
        created: list[str] = []
        undo.push("delete alarms", lambda: alarms.delete_alarms(cw, created))
        alarms.put_alarms(cw, plan.names, plan.thresholds, plan.topic_arn, created)
        undo.push("deregister scaling", lambda: scaling.deregister(aas, plan.names))
        scaling.register(aas, plan.names, plan.min_instances, plan.max_instances)
        scaling.put_policy(aas, plan.names, plan.target, plan.scale_in_cooldown,
                           plan.scale_out_cooldown)

    def _fail(self, plan: Plan, operation: str, exc: BaseException, undo: Undo) -> None:
        reason = describe(exc)
        leftovers = undo.run()
        if plan.held_instances:
            self.ledger.release(plan.tenant, "instances", plan.held_instances)
        if operation == "create":
            self.ledger.release(plan.tenant, "endpoints", 1)
        record = OperationRecord.for_plan(plan, operation, "Failed").failed(reason, leftovers)
        try:
            self.storage.put_record(plan.tenant, plan.names.deployment, record.to_dict())
        except Exception as rec_exc:  # the reason is in the log at least
            _logger.error("could not record failure of %s: %s", plan.names.endpoint,
                          describe(rec_exc))
        _logger.warning("%s of %s/%s failed and was rolled back: %s", operation, plan.tenant,
                        plan.names.deployment, reason)

    # -- create ----------------------------------------------------------------------------
    def run_create(self, plan: Plan) -> None:
        undo = Undo()
        sm = self.aws.sagemaker
        deadline = time.monotonic() + self.settings.deploy_timeout_seconds
        try:
            loc, size = self._package(plan, undo)
            config_name = self._model_and_config(plan, loc.uri, plan.model.flavor, undo)
            endpoint = plan.names.endpoint
            tags = self._resource_tags(plan, {
                n.TAG_PACKAGE: loc.uri, n.TAG_PACKAGE_BYTES: str(size),
                n.TAG_RESERVED_INSTANCES: str(plan.max_instances),
            })
            undo.push(f"delete endpoint {endpoint}", lambda: self.delete_endpoint(endpoint))
            sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=config_name,
                               Tags=_tag_list(tags))
            desc = self.wait_settled(endpoint, deadline)
            if desc["EndpointStatus"] != "InService":
                raise DeployFailed(
                    f"endpoint {desc['EndpointStatus']}: "
                    f"{desc.get('FailureReason') or 'no reason given by SageMaker'}"
                )
            self._alarms_and_scaling(plan, undo)
            self.storage.delete_record(plan.tenant, plan.names.deployment)
        except BaseException as exc:
            self._fail(plan, "create", exc, undo)
            raise

    # -- update ----------------------------------------------------------------------------
    def run_update(self, plan: Plan) -> None:
        undo = Undo()
        sm, aas, cw = self.aws.sagemaker, self.aws.autoscaling, self.aws.cloudwatch
        cur = plan.current
        endpoint = plan.names.endpoint
        deadline = time.monotonic() + self.settings.deploy_timeout_seconds
        try:
            if plan.model is not None:
                loc, size = self._package(plan, undo)
                package, package_bytes, flavor = loc.uri, size, plan.model.flavor
            else:
                package, package_bytes = cur["package"], cur["package_bytes"]
                flavor = cur["flavor"]
            config_name = self._model_and_config(plan, package, flavor, undo)
            if cur.get("scaling") and cur["instance_type"] != plan.instance_type:
                # AWS refuses to change the instance type of an autoscaled variant.
                old = cur["scaling"]
                undo.push("restore scaling", lambda: self._restore_scaling(plan, old))
                scaling.deregister(aas, plan.names)
            args: dict[str, Any] = {
                "EndpointName": endpoint, "EndpointConfigName": config_name,
                "RetainAllVariantProperties": True,
            }
            if plan.exclude_retained:
                args["ExcludeRetainedVariantProperties"] = [
                    {"VariantPropertyType": p} for p in plan.exclude_retained
                ]
            if plan.deployment_config:
                args["DeploymentConfig"] = plan.deployment_config
            sm.update_endpoint(**args)
            undo.push("switch endpoint back", lambda: self._switch_back(plan, deadline))
            desc = self.wait_settled(endpoint, deadline)
            if desc["EndpointStatus"] != "InService" or desc["EndpointConfigName"] != config_name:
                undo.drop_last()  # SageMaker already kept or restored the old config
                raise DeployFailed(desc.get("FailureReason") or
                                   f"endpoint {desc['EndpointStatus']} after the update")
            old_thresholds = cur["thresholds"]
            undo.push("restore alarms", lambda: alarms.put_alarms(
                cw, plan.names, old_thresholds, plan.topic_arn, []))
            alarms.put_alarms(cw, plan.names, plan.thresholds, plan.topic_arn, [])
            if cur.get("scaling"):
                old = cur["scaling"]
                undo.push("restore scaling", lambda: self._restore_scaling(plan, old))
            scaling.register(aas, plan.names, plan.min_instances, plan.max_instances)
            scaling.put_policy(aas, plan.names, plan.target, plan.scale_in_cooldown,
                               plan.scale_out_cooldown)
            new_tags = self._resource_tags(plan, {
                n.TAG_PACKAGE: package, n.TAG_PACKAGE_BYTES: str(package_bytes),
                n.TAG_RESERVED_INSTANCES: str(plan.max_instances),
                n.TAG_MODEL_URI: plan.model.model_uri if plan.model else cur["model_uri"],
                n.TAG_RUN_ID: (plan.model.run_id if plan.model else cur["run_id"]) or "",
                n.TAG_FLAVOR: flavor,
            })
            arn = desc["EndpointArn"]
            sm.delete_tags(ResourceArn=arn, TagKeys=list(new_tags))
            sm.add_tags(ResourceArn=arn, Tags=_tag_list(new_tags))
        except BaseException as exc:
            self._fail(plan, "update", exc, undo)
            raise
        # Past the point of no return: the new config serves and the old fleet is gone.
        # Clean up the old generation.
        ledger = self.ledger
        ledger.release(plan.tenant, "instances", plan.surge_instances)
        if plan.max_instances < cur["reserved_instances"]:
            ledger.release(plan.tenant, "instances",
                           cur["reserved_instances"] - plan.max_instances)
        cleanup = Undo()
        cleanup.push("delete old model", lambda: sm.delete_model(ModelName=cur["model_name"]))
        cleanup.push("delete old config",
                     lambda: sm.delete_endpoint_config(EndpointConfigName=cur["config_name"]))
        if plan.model is not None and cur["package"]:
            old = PackageLocation.from_uri(cur["package"])
            cleanup.push("delete old package", lambda: self.storage.delete_object(old))
        cleanup.run()
        self.storage.delete_record(plan.tenant, plan.names.deployment)

    def _switch_back(self, plan: Plan, deadline: float) -> None:
        self.wait_settled(plan.names.endpoint, deadline + 600)
        self.aws.sagemaker.update_endpoint(
            EndpointName=plan.names.endpoint, EndpointConfigName=plan.current["config_name"],
            RetainAllVariantProperties=True,
        )
        self.wait_settled(plan.names.endpoint, time.monotonic() + 3600)

    def _restore_scaling(self, plan: Plan, old: dict[str, Any]) -> None:
        aas = self.aws.autoscaling
        scaling.register(aas, plan.names, old["min_instances"], old["max_instances"])
        if old.get("policy"):
            scaling.put_policy(aas, plan.names, old["target_invocations_per_instance"],
                               old["scale_in_cooldown_seconds"], old["scale_out_cooldown_seconds"])
