"""What the deployment service says about a deployment while no endpoint tells it all.

:class:`OperationRecord` is the one shape of an operation record (create, update, delete;
running or failed): built here, stored as a row of the registry's own table
(:mod:`mlflow_tenant_plugins.tenancy.deployment_records`, which keeps it as a dict), and shown
to the tenant by :meth:`OperationRecord.shown`. :class:`LiveVariant` is what an endpoint runs
now, read back from SageMaker once for ``get`` and ``update`` alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from mlflow_tenant_plugins.deployments import names as n

if TYPE_CHECKING:
    from mlflow_tenant_plugins.deployments.operations import Plan

# What ``get``/``list`` show of a record (the rest is bookkeeping: reservations, times).
SHOWN = ("name", "endpoint_name", "status", "operation", "model_uri", "run_id", "flavor",
         "instance_type", "instance_count", "min_instances", "max_instances",
         "failure_reason", "rollback_incomplete")


@dataclass
class OperationRecord:
    """One deployment's operation: what it makes, what it holds in the ledger, why it failed."""

    name: str
    tenant: str
    operation: str  # create, update or delete
    status: str  # Creating, Updating, Deleting or Failed
    deploy_id: str | None = None
    endpoint_name: str | None = None
    model_uri: str | None = None
    run_id: str | None = None
    flavor: str | None = None
    instance_type: str | None = None
    instance_count: int | None = None
    min_instances: int | None = None
    max_instances: int | None = None
    # What the operation holds in the usage ledger (a delete gives it back with no endpoint).
    reserved: dict[str, int] = field(
        default_factory=lambda: {"endpoints": 0, "instances": 0})
    failure_reason: str | None = None
    rollback_incomplete: list[str] | None = None
    started_at: float | None = None

    @classmethod
    def for_plan(cls, plan: Plan, operation: str, status: str) -> OperationRecord:
        """The record of a create or update about to run ``plan``, holding its reservations."""
        model = plan.model
        return cls(
            name=plan.names.deployment, tenant=plan.tenant, operation=operation,
            status=status, deploy_id=plan.deploy_id, endpoint_name=plan.names.endpoint,
            model_uri=model.model_uri if model else None,
            run_id=model.run_id if model else None, flavor=model.flavor if model else None,
            instance_type=plan.instance_type, instance_count=plan.instance_count,
            min_instances=plan.min_instances, max_instances=plan.max_instances,
            reserved={"endpoints": 1 if operation == "create" else 0,
                      "instances": plan.held_instances},
            started_at=time.time(),
        )

    def failed(self, reason: str, leftovers: list[str] | None = None) -> OperationRecord:
        """This operation, failed and rolled back: it holds nothing any more."""
        return OperationRecord(**{
            **self.__dict__, "status": "Failed", "failure_reason": reason,
            "rollback_incomplete": leftovers or None,
            "reserved": {"endpoints": 0, "instances": 0},
        })

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> OperationRecord:
        """A record read from the table (keys it does not know, e.g. ``previous``, dropped)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in known}
        values.setdefault("name", "")
        values.setdefault("tenant", "")
        values.setdefault("operation", "")
        values.setdefault("status", "")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The record as the table stores it (unset fields left out)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def shown(self) -> dict[str, Any]:
        """What ``get`` and ``list`` answer for a deployment known only by this record."""
        return {k: getattr(self, k) for k in SHOWN if getattr(self, k) is not None}


@dataclass(frozen=True)
class LiveVariant:
    """The endpoint's variant as it runs now: its config and model, and its fleet."""

    config_name: str
    model_name: str
    instance_type: str
    current_instances: int | None  # what SageMaker reports running (None while it creates)
    desired_instances: int | None
    initial_instances: int  # what the config asks for

    @property
    def instance_count(self) -> int:
        """Instances running now, or the config's count before SageMaker reports any."""
        return self.initial_instances if self.current_instances is None \
            else self.current_instances


def live_variant(sagemaker: Any, desc: dict[str, Any]) -> LiveVariant:
    """The live variant of the endpoint ``desc`` (a DescribeEndpoint answer)."""
    config = sagemaker.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    live = next((v for v in desc.get("ProductionVariants", [])
                 if v["VariantName"] == n.VARIANT), {})
    return LiveVariant(
        config_name=desc["EndpointConfigName"], model_name=variant["ModelName"],
        instance_type=variant["InstanceType"],
        current_instances=live.get("CurrentInstanceCount"),
        desired_instances=live.get("DesiredInstanceCount"),
        initial_instances=variant.get("InitialInstanceCount", 1),
    )
