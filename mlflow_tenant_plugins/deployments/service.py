"""The deployment service: a tenant's deploys, within its quotas, on the platform's AWS account.

Server-side (the platform's routes, or an admin's direct mode). The tenant is always passed in
explicitly; nothing here reads a request. The synchronous half of create/update validates,
resolves the model, claims the name and reserves quota — so every refusal (400, 403, 404, 409)
comes back at once with nothing made — and the rest runs in a background thread
(:mod:`.operations`). State lives in SageMaker and its tags, plus an operation record in the
registry's own table while an operation runs or after one failed, so any worker can answer
``get`` (never in a place a tenant can write: see :mod:`.storage`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    PERMISSION_DENIED,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_EXHAUSTED,
)

from mlflow_tenant_plugins.billing.budgets import refuse_if_over_budget
from mlflow_tenant_plugins.billing.sampler import EndpointInstances, observe_endpoints
from mlflow_tenant_plugins.config import Settings
from mlflow_tenant_plugins.deployments import alarms, scaling
from mlflow_tenant_plugins.deployments import names as n
from mlflow_tenant_plugins.deployments.aws import AwsClients, is_not_found
from mlflow_tenant_plugins.deployments.model_source import ModelRef, ModelResolver
from mlflow_tenant_plugins.deployments.model_uri import check_model_uri
from mlflow_tenant_plugins.deployments.operations import Operations, Plan, Undo
from mlflow_tenant_plugins.deployments.options import (
    CLIENT_ONLY,
    CREATE,
    UPDATE,
    parse_config,
    validate_deployment_name,
)
from mlflow_tenant_plugins.deployments.queries import (
    DeploymentReader,
    not_found,
    not_in_service,
)
from mlflow_tenant_plugins.deployments.roles import execution_role_arn, network_isolation
from mlflow_tenant_plugins.deployments.status import OperationRecord, live_variant
from mlflow_tenant_plugins.deployments.storage import (
    DeploymentStorage,
    check_kept_package,
    package_root,
)
from mlflow_tenant_plugins.mlflow_hooks.server import tenant_workspace
from mlflow_tenant_plugins.tenancy import TenantRegistry
from mlflow_tenant_plugins.tenancy.deployment_records import DeploymentRecords
from mlflow_tenant_plugins.tenancy.entities import Tenant
from mlflow_tenant_plugins.tenancy.errors import QuotaExceeded
from mlflow_tenant_plugins.tenancy.meters import Meters

_logger = logging.getLogger(__name__)
DEFAULT_INSTANCE_TYPE = "ml.m5.large"


# A check before a deploy, beside the data-validation gate: raises to refuse.
DeployCheck = Callable[[Tenant, ModelRef], None]


class DeploymentService:
    """Create, update and delete (here), get, list and predict (its :class:`DeploymentReader`),
    the long-running steps in :class:`Operations`; each part handed what it uses."""

    def __init__(self, registry: TenantRegistry, settings: Settings, *,
                 aws: AwsClients | None = None, resolver: ModelResolver | None = None,
                 page_size: int = 100, checks: Sequence[DeployCheck] = ()):
        self.registry = registry
        self.settings = settings
        self.aws = aws or AwsClients(settings)
        self.storage = DeploymentStorage(self.aws.s3, settings,
                                         DeploymentRecords(registry.engine))
        self.resolver = resolver or ModelResolver()
        self.reader = DeploymentReader(self.aws, self.storage, page_size)
        self.ops = Operations(aws=self.aws, storage=self.storage, ledger=registry.ledger,
                              resolver=self.resolver, settings=settings,
                              image_uri=self.image_uri)
        self.checks = tuple(checks)
        # The tenant's endpoint instances by type, for metering (also the sampler's).
        self.instances = EndpointInstances(self)
        self._jobs: dict[tuple[str, str], threading.Thread] = {}
        self._image: str | None = None

    # -- read (the reader's) ---------------------------------------------------------------
    def get(self, tenant_name: str, name: str) -> dict:
        return self.reader.get(tenant_name, name)

    def list(self, tenant_name: str) -> list[dict]:
        return self.reader.list(tenant_name)

    def predict(self, tenant_name: str, name: str, body: bytes,
                content_type: str = "application/json") -> tuple[bytes, str]:
        return self.reader.predict(tenant_name, name, body, content_type)

    def owned_endpoints(self, tenant_name: str) -> Iterator[tuple[dict, dict[str, str]]]:
        return self.reader.owned_endpoints(tenant_name)

    # -- helpers ---------------------------------------------------------------------------
    def image_uri(self) -> str:
        if self.settings.deploy_image_uri:
            return self.settings.deploy_image_uri
        if self._image is None:
            import mlflow.version

            account = self.aws.sts.get_caller_identity()["Account"]
            self._image = (f"{account}.dkr.ecr.{self.aws.region}.amazonaws.com/"
                           f"mlflow-pyfunc:{mlflow.version.VERSION}")
        return self._image

    def _tenant(self, name: str) -> Tenant:
        tenant = self.registry.get_tenant(name)
        if not tenant.active:
            raise MlflowException(f"tenant '{name}' is suspended", PERMISSION_DENIED)
        return tenant

    def meter_instances(self, tenant: str) -> None:
        """Instance-hours follow the events: once a create, update or delete has completed
        (or rolled back), the tenant's endpoint instances are observed at once. Best effort:
        a failure is logged, never fails the deploy, and the metering sampler catches up."""
        try:
            observe_endpoints(Meters(self.registry.engine), tenant, self.instances(tenant),
                              datetime.now(UTC))
        except Exception:
            _logger.warning("metering: could not observe the endpoint instances of %s",
                            tenant, exc_info=True)

    def _start(self, tenant: str, name: str, fn: Any, plan: Plan, background: bool) -> None:
        if not background:
            try:
                fn(plan)
            finally:
                self.meter_instances(tenant)
            return

        def run() -> None:
            try:
                fn(plan)
            except BaseException:  # already rolled back and recorded by the operation
                pass
            finally:
                self.meter_instances(tenant)
                self._jobs.pop((tenant, name), None)

        thread = threading.Thread(target=run, name=f"deploy-{tenant}-{name}", daemon=True)
        self._jobs[(tenant, name)] = thread
        thread.start()

    def wait_for_jobs(self, timeout: float = 60.0) -> None:
        """Join the background operations (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        for thread in list(self._jobs.values()):
            thread.join(max(0.0, deadline - time.monotonic()))

    def shutdown(self, timeout: float = 10.0) -> None:
        self.ops.stop.set()
        self.wait_for_jobs(timeout)

    def _gate(self, tenant: Tenant, model: ModelRef) -> None:
        """Checks before a deploy. A tenant with ``require_validation`` deploys only models
        whose training run passed data validation: the gate is
        ``mlflow_tenant_plugins.validation.gate.check_deploy(tenant, model_ref, tracking_uri=)``
        (raises 400 naming the run and what is missing); without it such a tenant cannot
        deploy (fail closed)."""
        if tenant.require_validation:
            try:
                from mlflow_tenant_plugins.validation.gate import check_deploy
            except ImportError:
                raise MlflowException.invalid_parameter_value(
                    f"tenant '{tenant.name}' deploys only validated models, and this platform "
                    "has no data-validation gate installed"
                ) from None
            with tenant_workspace(tenant.name):  # the run is looked up in the tenant's own store
                check_deploy(tenant, model, tracking_uri=self.resolver.tracking_uri)
        for check in self.checks:
            check(tenant, model)

    def _check_platform(self, tenant: str, isolation: bool | None,
                        current: bool = False) -> bool:
        """The platform settings a deploy needs, checked before anything is claimed or made
        (400 naming the setting); returns whether the model runs network-isolated."""
        execution_role_arn(self.settings, tenant)
        package_root(self.settings, tenant)
        return network_isolation(self.settings, isolation, current)

    def _stale_after(self) -> float:
        return self.settings.deploy_timeout_seconds + 900

    @staticmethod
    def _server_config(config: dict[str, Any] | None, command: str) -> dict[str, Any]:
        parsed = parse_config(config, command)
        return {k: v for k, v in parsed.items() if k not in CLIENT_ONLY}

    def _check_instances(self, tenant: Tenant, instance_type: str, count: int, lo: int,
                         hi: int) -> None:
        allowed = tenant.quotas.instance_types
        if instance_type not in allowed:
            raise MlflowException.invalid_parameter_value(
                f"instance type {instance_type} is not allowed for tenant '{tenant.name}'; "
                f"allowed: {', '.join(allowed) or 'none'}"
            )
        if not lo <= count <= hi:
            raise MlflowException.invalid_parameter_value(
                f"instance_count {count} must lie within min_instances {lo} and "
                f"max_instances {hi}"
            )
        limit = tenant.quotas.instances_per_endpoint
        if hi > limit:
            raise MlflowException(
                f"quota exceeded for tenant '{tenant.name}': instances_per_endpoint limit is "
                f"{limit}, this deployment needs {hi} (its max_instances)",
                RESOURCE_EXHAUSTED,
            )

    # -- create ----------------------------------------------------------------------------
    def create(self, tenant_name: str, name: str, model_uri: str, flavor: str | None = None,
               config: dict[str, Any] | None = None, *, background: bool = True) -> dict:
        validate_deployment_name(name)
        check_model_uri(model_uri, self.resolver.allow_any_uri)
        cfg = self._server_config(config, CREATE)
        tenant = self._tenant(tenant_name)
        names = n.Names(tenant.name, name)
        instance_type = cfg.get("instance_type", DEFAULT_INSTANCE_TYPE)
        count = cfg.get("instance_count", cfg.get("min_instances", 1))
        lo = cfg.get("min_instances", min(count, cfg.get("max_instances", count)))
        hi = cfg.get("max_instances", max(lo, count))
        self._check_instances(tenant, instance_type, count, lo, hi)
        refuse_if_over_budget(self.registry, self.settings, tenant, datetime.now(UTC),
                              "a new deployment")
        thresholds = alarms.resolve_thresholds(self.settings, tenant.name, cfg)
        isolated = self._check_platform(tenant.name, cfg.get("network_isolation"))
        model = self.resolver.resolve(model_uri, tenant.name, flavor)
        self._gate(tenant, model)
        if self.reader.owned_endpoint(names) is not None:
            raise MlflowException(f"deployment '{name}' already exists in tenant "
                                  f"'{tenant.name}'", RESOURCE_ALREADY_EXISTS)
        plan = Plan(
            tenant=tenant.name, names=names, deploy_id=n.new_deploy_id(), model=model,
            instance_type=instance_type, instance_count=count, min_instances=lo,
            max_instances=hi,
            target=cfg.get("target_invocations_per_instance",
                           self.settings.deploy_target_invocations_per_instance),
            scale_in_cooldown=cfg.get("scale_in_cooldown_seconds", 300),
            scale_out_cooldown=cfg.get("scale_out_cooldown_seconds", 60),
            thresholds=thresholds, env=cfg.get("env", {}), tags=cfg.get("tags", {}),
            topic_arn=tenant.alarm_topic_arn, reserved_instances=hi,
            network_isolation=isolated,
        )
        record = OperationRecord.for_plan(plan, "create", "Creating")
        self.storage.claim(tenant.name, name, record.to_dict(), "create", self._stale_after())
        undo = Undo()
        undo.push("drop record", lambda: self.storage.delete_record(tenant.name, name))
        ledger = self.registry.ledger
        try:
            if self.reader.owned_endpoint(names) is not None:  # finished just before our claim
                raise MlflowException(f"deployment '{name}' already exists in tenant "
                                      f"'{tenant.name}'", RESOURCE_ALREADY_EXISTS)
            ledger.reserve(tenant.name, "endpoints", 1)
            undo.push("release endpoint", lambda: ledger.release(tenant.name, "endpoints", 1))
            ledger.reserve(tenant.name, "instances", hi)
        except BaseException:
            undo.run()
            raise
        self._start(tenant.name, name, self.ops.run_create, plan, background)
        return record.shown() if background else self.get(tenant.name, name)

    # -- update ----------------------------------------------------------------------------
    def update(self, tenant_name: str, name: str, model_uri: str | None = None,
               flavor: str | None = None, config: dict[str, Any] | None = None, *,
               background: bool = True) -> dict:
        validate_deployment_name(name)
        cfg = self._server_config(config, UPDATE)
        tenant = self._tenant(tenant_name)
        names = n.Names(tenant.name, name)
        found = self.reader.owned_endpoint(names)
        if found is None:
            raise not_found(tenant.name, name)
        desc, tags = found
        if desc["EndpointStatus"] != "InService":
            raise not_in_service(name, desc["EndpointStatus"], "updated")
        current = self._current(names, desc, tags)
        instance_type = cfg.get("instance_type", current["instance_type"])
        old_scaling = current["scaling"] or {}
        count = cfg.get("instance_count", current["instance_count"])
        lo = cfg.get("min_instances", old_scaling.get("min_instances", count))
        hi = cfg.get("max_instances", max(old_scaling.get("max_instances", count), lo))
        count = min(max(count, lo), hi) if "instance_count" not in cfg else count
        self._check_instances(tenant, instance_type, count, lo, hi)
        thresholds = alarms.resolve_thresholds(self.settings, tenant.name, cfg,
                                               previous=current["thresholds"])
        isolated = self._check_platform(tenant.name, cfg.get("network_isolation"),
                                        current["network_isolation"])
        if model_uri:
            check_model_uri(model_uri, self.resolver.allow_any_uri)
        model = self.resolver.resolve(model_uri, tenant.name, flavor) if model_uri else None
        if model is not None:
            self._gate(tenant, model)
        else:
            check_kept_package(self.settings, tenant.name, name, current["package"])
        strategy = cfg.get("strategy", "replace")
        plan = Plan(
            tenant=tenant.name, names=names, deploy_id=n.new_deploy_id(), model=model,
            instance_type=instance_type, instance_count=count, min_instances=lo,
            max_instances=hi,
            target=cfg.get("target_invocations_per_instance",
                           old_scaling.get("target_invocations_per_instance")
                           or self.settings.deploy_target_invocations_per_instance),
            scale_in_cooldown=cfg.get("scale_in_cooldown_seconds",
                                      old_scaling.get("scale_in_cooldown_seconds", 300)),
            scale_out_cooldown=cfg.get("scale_out_cooldown_seconds",
                                       old_scaling.get("scale_out_cooldown_seconds", 60)),
            thresholds=thresholds, env=cfg.get("env", current["env"]),
            tags=cfg.get("tags", current["user_tags"]), topic_arn=tenant.alarm_topic_arn,
            reserved_instances=max(0, hi - current["reserved_instances"]),
            surge_instances=count, strategy=strategy, current=current,
            network_isolation=isolated,
            exclude_retained=["DesiredInstanceCount"] if "instance_count" in cfg else [],
        )
        if strategy == "blue-green":
            plan.deployment_config = self._blue_green(names, cfg)
        record = OperationRecord.for_plan(plan, "update", "Updating")
        self.storage.claim(tenant.name, name, record.to_dict(), "update", self._stale_after())
        try:
            self.registry.ledger.reserve(tenant.name, "instances", plan.held_instances)
        except QuotaExceeded as exc:
            self.storage.delete_record(tenant.name, name)
            raise QuotaExceeded(
                exc.tenant, exc.resource, exc.requested, exc.used, exc.limit,
                note=f"an update runs the new fleet ({plan.surge_instances} instance(s)) beside "
                     "the old one until traffic has moved, and both count against the quota",
            ) from None
        except BaseException:
            self.storage.delete_record(tenant.name, name)
            raise
        self._start(tenant.name, name, self.ops.run_update, plan, background)
        return record.shown() if background else self.get(tenant.name, name)

    @staticmethod
    def _blue_green(names: n.Names, cfg: dict[str, Any]) -> dict:
        routing = cfg.get("traffic_routing", "all-at-once")
        wait = cfg.get("wait_seconds", 300)
        traffic: dict[str, Any] = {"Type": routing.upper().replace("-", "_"),
                                   "WaitIntervalInSeconds": wait}
        step = {"Type": "CAPACITY_PERCENT", "Value": cfg.get("canary_percent", 10)}
        if routing == "canary":
            traffic["CanarySize"] = step
        elif routing == "linear":
            traffic["LinearStepSize"] = step
        return {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": traffic,
                "TerminationWaitInSeconds": cfg.get("termination_wait_seconds", 0),
                "MaximumExecutionTimeoutInSeconds": max(600, 4 * wait + 600),
            },
            "AutoRollbackConfiguration": {
                "Alarms": [{"AlarmName": a} for a in alarms.alarm_names(names)]
            },
        }

    def _current(self, names: n.Names, desc: dict, tags: dict[str, str]) -> dict[str, Any]:
        """What the endpoint runs now, read back from SageMaker, CloudWatch and AAS."""
        variant = live_variant(self.aws.sagemaker, desc)
        model = self.aws.sagemaker.describe_model(ModelName=variant.model_name)
        env = dict(model.get("PrimaryContainer", {}).get("Environment", {}))
        isolated = bool(model.get("EnableNetworkIsolation", False))
        for key in ("MLFLOW_DEPLOYMENT_FLAVOR_NAME", "SERVING_ENVIRONMENT"):
            env.pop(key, None)
        thresholds: dict[str, Any] = {}
        found = {a["AlarmName"]: a for a in self.aws.cloudwatch.describe_alarms(
            AlarmNames=alarms.alarm_names(names)).get("MetricAlarms", [])}
        for kind in alarms.KINDS:
            alarm = found.get(names.alarm(kind.suffix))
            if alarm:
                thresholds[kind.key] = alarm["Threshold"] / kind.scale
                thresholds["alarm_period_seconds"] = alarm["Period"]
                thresholds["alarm_evaluation_periods"] = alarm["EvaluationPeriods"]
        return {
            "config_name": variant.config_name, "model_name": variant.model_name,
            "instance_type": variant.instance_type, "instance_count": variant.instance_count,
            "env": env, "thresholds": thresholds, "network_isolation": isolated,
            "scaling": scaling.describe(self.aws.autoscaling, names),
            "package": tags.get(n.TAG_PACKAGE, ""),
            "package_bytes": int(tags.get(n.TAG_PACKAGE_BYTES, "0") or 0),
            "reserved_instances": int(tags.get(n.TAG_RESERVED_INSTANCES, "0") or 0),
            "model_uri": tags.get(n.TAG_MODEL_URI), "run_id": tags.get(n.TAG_RUN_ID),
            "flavor": tags.get(n.TAG_FLAVOR, "python_function"),
            "user_tags": {k: v for k, v in tags.items() if not k.startswith(("mlt:", "aws:"))},
        }

    # -- delete ----------------------------------------------------------------------------
    def delete(self, tenant_name: str, name: str) -> dict:
        """Remove alarms, scaling, endpoint, configs, models and packages; release quota.
        Also cleans up after a create whose worker died. 404 when nothing is there."""
        validate_deployment_name(name)
        tenant = self.registry.get_tenant(tenant_name)
        names = n.Names(tenant.name, name)
        previous = self.storage.get_record(tenant.name, name)
        found = self.reader.owned_endpoint(names)
        packages = self.storage.packages(tenant.name, name)
        if found is None and previous is None and not packages:
            raise not_found(tenant.name, name)
        deleting = OperationRecord(name, tenant.name, "delete", "Deleting")
        self.storage.claim(tenant.name, name, deleting.to_dict(), "delete",
                           self._stale_after())
        sm, ledger, cw = self.aws.sagemaker, self.registry.ledger, self.aws.cloudwatch
        reserved = (previous[0].get("reserved") or {}) if previous else {}
        if found is not None:
            reserved = {"endpoints": 1,
                        "instances": int(found[1].get(n.TAG_RESERVED_INSTANCES, "0") or 0)}

        def remove_endpoint() -> None:
            if found is not None:
                try:
                    self.ops.delete_endpoint(names.endpoint)
                except Exception as exc:
                    if not is_not_found(exc):
                        raise
            for resource in ("endpoints", "instances"):
                ledger.release(tenant.name, resource, int(reserved.get(resource) or 0))

        steps = Undo()  # a best-effort list of removals, run newest first
        for loc, _size in packages:
            steps.push(f"delete package {loc.uri}",
                       lambda loc=loc: self.storage.delete_object(loc))
        for kind, field, paginator, key, deleter in (
            ("model", "ModelName", "list_models", "Models",
             lambda x: sm.delete_model(ModelName=x)),
            ("config", "EndpointConfigName", "list_endpoint_configs", "EndpointConfigs",
             lambda x: sm.delete_endpoint_config(EndpointConfigName=x)),
        ):
            for page in sm.get_paginator(paginator).paginate(NameContains=names.name_filter):
                for item in page.get(key, []):
                    if item[field].startswith(names.endpoint + "-"):
                        steps.push(f"delete {kind} {item[field]}",
                                   lambda x=item[field], d=deleter: d(x))
        steps.push("delete endpoint and release its quota", remove_endpoint)
        steps.push("delete alarms",
                   lambda: alarms.delete_alarms(cw, alarms.find_alarms(cw, names)))
        steps.push("deregister scaling", lambda: scaling.deregister(self.aws.autoscaling, names))
        leftovers = steps.run()
        self.meter_instances(tenant.name)
        if leftovers:
            record = deleting.failed("delete incomplete", leftovers)
            self.storage.put_record(tenant.name, name, record.to_dict())
            raise MlflowException(f"delete of '{name}' incomplete: {'; '.join(leftovers)}")
        self.storage.delete_record(tenant.name, name)
        return {"name": name, "status": "Deleted"}
