"""Roles within a tenant, ordered: each includes everything the one before it may do."""

from __future__ import annotations

from enum import StrEnum

from mlflow.exceptions import MlflowException


class Role(StrEnum):
    VIEWER = "viewer"
    EDITOR = "editor"
    DEPLOYER = "deployer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def includes(self, other: Role) -> bool:
        return self.rank >= other.rank

    @classmethod
    def parse(cls, value: str) -> Role:
        try:
            return cls(value.lower())
        except (ValueError, AttributeError):
            raise MlflowException.invalid_parameter_value(
                f"unknown role {value!r}; valid roles: {', '.join(r.value for r in cls)}"
            ) from None


ROLES = tuple(r.value for r in Role)
