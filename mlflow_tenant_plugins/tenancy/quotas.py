"""Per-tenant quotas and the parsing of human-written sizes ("10GB", "512MiB", "1024")."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

from mlflow.exceptions import MlflowException

# Binary units for every spelling: storage is sold in GiB and people write "10GB" meaning
# 10 GiB, so "10GB", "10GiB", "10G" and "10737418240" are the same quota.
_UNITS = {"": 1, "b": 1}
for _i, _p in enumerate("kmgt", start=1):
    for _suffix in (_p, _p + "b", _p + "ib"):
        _UNITS[_suffix] = 2 ** (10 * _i)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

DEFAULT_INSTANCE_TYPES = ("ml.t2.medium", "ml.m5.large", "ml.m5.xlarge", "ml.c5.large")
DEFAULT_TRAINING_INSTANCE_TYPES = ("ml.m5.large", "ml.m5.xlarge", "ml.c5.xlarge")
# Fields that are lists of instance types; every other quota is a whole number.
TYPE_LISTS = ("instance_types", "training_instance_types")
STORAGE_MODES = ("hard", "overage")


def parse_size(value: str | int) -> int:
    """Bytes from an int or a string such as ``10GB`` (binary units), refusing negatives."""
    if isinstance(value, bool):
        raise MlflowException.invalid_parameter_value(f"invalid size {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise MlflowException.invalid_parameter_value(f"size must not be negative: {value}")
        return value
    match = _SIZE.match(str(value))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise MlflowException.invalid_parameter_value(
            f"invalid size {value!r}: use a whole number of bytes or a number with a unit "
            "(KB, MB, GB, TB), e.g. 10GB"
        )
    number = float(match.group(1)) * _UNITS[unit]
    if number != int(number):
        raise MlflowException.invalid_parameter_value(f"size {value!r} is not a whole byte count")
    return int(number)


def parse_count(value: str | int, what: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise MlflowException.invalid_parameter_value(
            f"invalid {what} {value!r}: expected a whole number"
        ) from None
    if number < 0:
        raise MlflowException.invalid_parameter_value(f"{what} must not be negative: {value}")
    return number


def format_size(n: int) -> str:
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class Quotas:
    storage_bytes: int = 10 * 2**30
    endpoints: int = 2
    instances: int = 4
    instances_per_endpoint: int = 2
    instance_types: tuple[str, ...] = field(default=DEFAULT_INSTANCE_TYPES)
    # Jobs the platform runs for the tenant (``mlflow run -b tenant-sagemaker``).
    jobs: int = 2  # at once
    training_instances: int = 2  # over all running jobs
    training_instance_types: tuple[str, ...] = field(default=DEFAULT_TRAINING_INSTANCE_TYPES)
    max_job_runtime_seconds: int = 24 * 3600  # per job (SageMaker's MaxRuntimeInSeconds)
    training_instance_hours: int = 100  # per calendar month (UTC), instances x hours
    # "hard": storage_bytes refuses. "overage": up to storage_allowance_bytes is included,
    # beyond it writes succeed and the excess is billable, up to storage_bytes (the ceiling).
    storage_mode: str = "hard"
    storage_allowance_bytes: int = 0

    def __post_init__(self) -> None:
        if self.storage_mode not in STORAGE_MODES:
            raise MlflowException.invalid_parameter_value(
                f"storage mode must be one of {', '.join(STORAGE_MODES)}, "
                f"got {self.storage_mode!r}")
        if self.storage_mode == "overage" and not (
                isinstance(self.storage_allowance_bytes, int)
                and 0 <= self.storage_allowance_bytes <= self.storage_bytes):
            raise MlflowException.invalid_parameter_value(
                "in overage mode the storage allowance must be between 0 and the storage "
                f"ceiling ({self.storage_bytes} bytes), got {self.storage_allowance_bytes!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in TYPE_LISTS or f.name == "storage_mode":
                continue
            if not isinstance(value, int) or value < 0:
                raise MlflowException.invalid_parameter_value(
                    f"quota {f.name} must be a whole number ≥ 0, got {value!r}"
                )
        for t in (*self.instance_types, *self.training_instance_types):
            if not re.fullmatch(r"ml\.[a-z0-9]+\.[a-z0-9]+", t):
                raise MlflowException.invalid_parameter_value(
                    f"invalid instance type {t!r}: expected e.g. ml.m5.large"
                )

    @property
    def storage_included(self) -> int:
        """Bytes stored at no extra charge: the allowance in overage mode, else the quota."""
        return self.storage_allowance_bytes if self.storage_mode == "overage" \
            else self.storage_bytes

    def billable_bytes(self, used: int) -> int:
        """Bytes over the allowance, billable in overage mode; 0 in hard mode."""
        return max(0, used - self.storage_allowance_bytes) \
            if self.storage_mode == "overage" else 0

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in TYPE_LISTS:
            d[name] = list(getattr(self, name))
        return d
