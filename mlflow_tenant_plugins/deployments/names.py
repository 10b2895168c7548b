"""SageMaker, CloudWatch and Application Auto Scaling names for a tenant's deployment.

SageMaker names are at most 63 characters of letters, digits and hyphens, and both tenant and
deployment names may contain hyphens, so ``{tenant}-{name}`` alone is ambiguous (tenant
``a-b`` deploying ``c`` vs tenant ``a`` deploying ``b-c``) and may be too long. Each name is
therefore a readable, truncated ``{tenant}-{name}`` followed by a hash of the tenant (which
finds a tenant's endpoints with ``NameContains``) and a hash of (tenant, name) (which makes the
name unique). Ownership is still checked on the ``mlt:tenant`` tag, never on the name alone.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

READABLE_MAX = 36  # endpoint = readable + "-" + 8 + 6 hex (≤ 51); model/config add "-m" + 10
VARIANT = "primary"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"

# Tags every resource carries (``mlt:`` is reserved: users cannot set these keys).
TAG_TENANT = "mlt:tenant"
TAG_DEPLOYMENT = "mlt:deployment"
TAG_MODEL_URI = "mlt:model-uri"
TAG_RUN_ID = "mlt:run-id"
TAG_DEPLOY_ID = "mlt:deploy-id"
TAG_FLAVOR = "mlt:flavor"
TAG_PACKAGE = "mlt:package"
TAG_PACKAGE_BYTES = "mlt:package-bytes"
TAG_RESERVED_INSTANCES = "mlt:reserved-instances"


def _hex(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def tenant_token(tenant: str) -> str:
    return _hex(f"tenant:{tenant}", 8)


def new_deploy_id() -> str:
    return uuid.uuid4().hex[:10]


def _readable(tenant: str, name: str) -> str:
    t = tenant[:16].strip("-")
    n = name[: READABLE_MAX - len(t) - 1].strip("-")
    return f"{t}-{n}" if n else t


@dataclass(frozen=True)
class Names:
    tenant: str
    deployment: str

    @property
    def endpoint(self) -> str:
        suffix = tenant_token(self.tenant) + _hex(f"{self.tenant}\0{self.deployment}", 6)
        return f"{_readable(self.tenant, self.deployment)}-{suffix}"

    def model(self, deploy_id: str) -> str:
        return f"{self.endpoint}-m{deploy_id}"

    def config(self, deploy_id: str) -> str:
        return f"{self.endpoint}-c{deploy_id}"

    def alarm(self, kind: str) -> str:
        return f"{self.endpoint}-{kind}"

    @property
    def alarm_prefix(self) -> str:
        return f"{self.endpoint}-"

    @property
    def scaling_resource_id(self) -> str:
        return f"endpoint/{self.endpoint}/variant/{VARIANT}"

    @property
    def scaling_policy(self) -> str:
        return f"{self.endpoint}-invocations"

    @property
    def name_filter(self) -> str:
        """``NameContains`` that finds this deployment's models and configs."""
        return self.endpoint
