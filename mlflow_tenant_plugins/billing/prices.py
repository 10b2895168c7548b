"""The platform's price table: the ``[prices]`` table of the settings file.

.. code-block:: toml

    [prices]
    currency = "USD"
    storage_gb_month = 0.025          # per GiB-month stored over a tenant's allowance
    api_million_requests = 0.0        # per million API requests
    [prices.endpoint_instance_hour]   # per instance-hour of a deployed endpoint, by type
    "ml.m5.large" = 0.134
    [prices.training_instance_hour]   # per instance-hour of a job, by type
    "ml.m5.large" = 0.115
    [prices.discounts]                # percent off a tenant's total
    acme = 10

Unknown keys are errors, as everywhere in the settings: a mistyped price must not bill 0.
An instance type without a price is listed on the statement with no amount and flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mlflow_tenant_plugins.config import ConfigError

_SCALARS = ("currency", "storage_gb_month", "api_million_requests")
_TABLES = ("endpoint_instance_hour", "training_instance_hour", "discounts")


def _price(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value) or value < 0:
        raise ConfigError(f"price {where} must be a number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PriceTable:
    currency: str = "USD"
    storage_gb_month: float = 0.0
    api_million_requests: float = 0.0
    endpoint_instance_hour: dict[str, float] = field(default_factory=dict)
    training_instance_hour: dict[str, float] = field(default_factory=dict)
    discounts: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any) -> PriceTable:
        raw = (settings.extra or {}).get("prices") or {}
        unknown = sorted(set(raw) - set(_SCALARS) - set(_TABLES))
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in [prices]; known: "
                              f"{', '.join(_SCALARS + _TABLES)}")
        values: dict[str, Any] = {}
        if "currency" in raw:
            if not isinstance(raw["currency"], str) or not raw["currency"].isalpha():
                raise ConfigError(f"[prices] currency must be a code such as USD, got "
                                  f"{raw['currency']!r}")
            values["currency"] = raw["currency"].upper()
        for key in ("storage_gb_month", "api_million_requests"):
            if key in raw:
                values[key] = _price(key, raw[key])
        for key in _TABLES:
            table = raw.get(key) or {}
            if not isinstance(table, dict):
                raise ConfigError(f"[prices.{key}] must be a table")
            values[key] = {str(k): _price(f"{key}.{k}", v) for k, v in table.items()}
        for tenant, percent in values.get("discounts", {}).items():
            if percent > 100:
                raise ConfigError(f"discount for {tenant} is over 100 %: {percent}")
        return cls(**values)
