"""The read side of the deployment service: get, list and predict, and the ownership check
every call makes (an endpoint is a tenant's only if it carries that tenant's tag).

A reader with explicit dependencies (the AWS clients and the records): it changes nothing,
so the service and the reconciler share it without reaching into each other."""

from __future__ import annotations

from collections.abc import Iterator

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_CONFLICT, RESOURCE_DOES_NOT_EXIST

from mlflow_tenant_plugins.deployments import alarms, scaling
from mlflow_tenant_plugins.deployments import names as n
from mlflow_tenant_plugins.deployments.aws import AwsClients, describe, error_code, is_not_found
from mlflow_tenant_plugins.deployments.options import validate_deployment_name
from mlflow_tenant_plugins.deployments.status import OperationRecord, live_variant
from mlflow_tenant_plugins.deployments.storage import IN_FLIGHT, DeploymentStorage, busy

# SageMaker endpoint statuses that pass on their own (the others wait for the tenant).
TRANSITIONS = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")


def not_found(tenant: str, name: str) -> MlflowException:
    return MlflowException(f"deployment '{name}' does not exist in tenant '{tenant}'",
                           RESOURCE_DOES_NOT_EXIST)


def not_in_service(name: str, status: str, action: str) -> MlflowException:
    """409 ``RESOURCE_CONFLICT`` for an endpoint that cannot be ``action`` in its ``status``:
    the caller's to wait for or fix, never a 500 the stock client would retry for minutes."""
    if status in TRANSITIONS:
        return busy(name, f"its endpoint is {status}; it can be {action} when InService")
    return MlflowException(
        f"deployment '{name}' is {status}; it can be {action} only when InService: delete it "
        "and create it again ('mlflow deployments get' shows why it failed)", RESOURCE_CONFLICT)


class DeploymentReader:
    def __init__(self, aws: AwsClients, storage: DeploymentStorage, page_size: int = 100):
        self.aws = aws
        self.storage = storage
        self.page_size = page_size

    def owned_endpoint(self, names: n.Names) -> tuple[dict, dict[str, str]] | None:
        """(DescribeEndpoint, tags) if the endpoint exists and carries this tenant's tag."""
        try:
            desc = self.aws.sagemaker.describe_endpoint(EndpointName=names.endpoint)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise
        tags = self._tags(desc["EndpointArn"])
        if tags.get(n.TAG_TENANT) != names.tenant:
            return None
        return desc, tags

    def _tags(self, arn: str) -> dict[str, str]:
        tags: dict[str, str] = {}
        for page in self.aws.sagemaker.get_paginator("list_tags").paginate(ResourceArn=arn):
            tags.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
        return tags

    # -- read ------------------------------------------------------------------------------
    def get(self, tenant_name: str, name: str) -> dict:
        validate_deployment_name(name)
        names = n.Names(tenant_name, name)
        record = self.storage.get_record(tenant_name, name)
        found = self.owned_endpoint(names)
        if found is None:
            if record is None:
                raise not_found(tenant_name, name)
            return OperationRecord.from_dict(record[0]).shown()
        desc, tags = found
        variant = live_variant(self.aws.sagemaker, desc)
        out = {
            "name": name, "endpoint_name": names.endpoint, "status": desc["EndpointStatus"],
            "model_uri": tags.get(n.TAG_MODEL_URI), "run_id": tags.get(n.TAG_RUN_ID) or None,
            "flavor": tags.get(n.TAG_FLAVOR), "deploy_id": tags.get(n.TAG_DEPLOY_ID),
            "instance_type": variant.instance_type,
            "instance_count": variant.current_instances,
            "desired_instance_count": variant.desired_instances,
            "package": tags.get(n.TAG_PACKAGE),
            "created": desc["CreationTime"].isoformat() if desc.get("CreationTime") else None,
            "last_modified": desc["LastModifiedTime"].isoformat()
            if desc.get("LastModifiedTime") else None,
            "alarms": alarms.describe(self.aws.cloudwatch, names),
            "scaling": scaling.describe(self.aws.autoscaling, names),
            "tags": tags,
        }
        if desc.get("FailureReason"):
            out["failure_reason"] = desc["FailureReason"]
        if record is not None:
            rec = record[0]
            if rec.get("status") in IN_FLIGHT:
                out["status"] = rec["status"]  # e.g. Creating until alarms and scaling exist
                out["operation"] = rec.get("operation")
            elif rec.get("status") == "Failed":
                out["last_failure"] = {k: rec.get(k) for k in
                                       ("operation", "failure_reason", "rollback_incomplete")
                                       if rec.get(k)}
        return out

    def owned_endpoints(self, tenant_name: str) -> Iterator[tuple[dict, dict[str, str]]]:
        """(ListEndpoints entry, tags) of each of the tenant's deployments, across every page."""
        paginator = self.aws.sagemaker.get_paginator("list_endpoints")
        for page in paginator.paginate(NameContains=n.tenant_token(tenant_name),
                                       PaginationConfig={"PageSize": self.page_size}):
            for ep in page.get("Endpoints", []):
                tags = self._tags(ep["EndpointArn"])
                if tags.get(n.TAG_TENANT) == tenant_name and n.TAG_DEPLOYMENT in tags:
                    yield ep, tags

    def list(self, tenant_name: str) -> list[dict]:
        """Only this tenant's endpoints, across every page, plus in-flight or failed ones."""
        out: dict[str, dict] = {}
        for ep, tags in self.owned_endpoints(tenant_name):
            out[tags[n.TAG_DEPLOYMENT]] = {
                "name": tags[n.TAG_DEPLOYMENT], "endpoint_name": ep["EndpointName"],
                "status": ep["EndpointStatus"], "model_uri": tags.get(n.TAG_MODEL_URI),
            }
        for record in self.storage.records(tenant_name):
            name = record.get("name")
            if not name:
                continue
            if name in out:
                if record.get("status") in IN_FLIGHT:
                    out[name]["status"] = record["status"]
            else:
                out[name] = OperationRecord.from_dict(record).shown()
        return [out[k] for k in sorted(out)]

    def predict(self, tenant_name: str, name: str, body: bytes,
                content_type: str = "application/json") -> tuple[bytes, str]:
        validate_deployment_name(name)
        names = n.Names(tenant_name, name)
        found = self.owned_endpoint(names)
        if found is None:
            raise not_found(tenant_name, name)
        if found[0]["EndpointStatus"] not in ("InService", "Updating"):
            raise not_in_service(name, found[0]["EndpointStatus"], "served")
        try:
            response = self.aws.runtime.invoke_endpoint(
                EndpointName=names.endpoint, Body=body, ContentType=content_type,
                Accept="application/json",
            )
        except Exception as exc:
            code = error_code(exc)
            raise MlflowException(
                f"prediction failed: {describe(exc)}",
                "INVALID_PARAMETER_VALUE" if code in ("ValidationError", "ModelError")
                else "INTERNAL_ERROR",
            ) from None
        return response["Body"].read(), response.get("ContentType") or "application/json"
