"""Keeps MLflow's own records in step with the registry: a tenant's workspace in the tracking
store, and in basic-auth's store the tenant's roles, the principals' users and their role
assignments. MLflow's engine then authorizes every route from these, fail-closed.
"""

from __future__ import annotations

import secrets
from functools import cached_property

from mlflow.entities.workspace import Workspace, WorkspaceDeletionMode
from mlflow.exceptions import MlflowException

from mlflow_tenant_plugins.tenancy.roles import Role

# Each tenant role as grants of MLflow's permission model in the tenant's workspace.
# The workspace slot takes only USE (member: read all, create) or MANAGE (workspace admin);
# a viewer gets READ on each resource type instead, so it can read but not create.
_READ_TYPES = ("experiment", "registered_model", "prompt", "scorer", "run", "trace",
               "logged_model", "registered_model_version", "prompt_version")
ROLE_GRANTS: dict[Role, list[tuple[str, str, str]]] = {
    Role.VIEWER: [(t, "*", "READ") for t in _READ_TYPES],
    Role.EDITOR: [("workspace", "*", "USE")] + [(t, "*", "EDIT") for t in _READ_TYPES],
    Role.DEPLOYER: [("workspace", "*", "USE")] + [(t, "*", "EDIT") for t in _READ_TYPES],
    Role.ADMIN: [("workspace", "*", "MANAGE")],
}


def auth_role_name(role: Role) -> str:
    return f"tenant-{role.value}"


class WorkspaceMirror:
    """MLflow's workspace store and basic-auth store, opened lazily (they import slowly)."""

    def __init__(self, tracking_uri: str, auth_uri: str):
        self._tracking_uri = tracking_uri
        self._auth_uri = auth_uri

    @cached_property
    def workspaces(self):
        from mlflow.store.workspace.sqlalchemy_store import SqlAlchemyStore

        return SqlAlchemyStore(self._tracking_uri)

    @cached_property
    def auth(self):
        from mlflow_tenant_plugins.mlflow_hooks.basic_auth import open_user_store

        return open_user_store(self._auth_uri)

    # -- tenants ---------------------------------------------------------------------------
    def create_tenant(self, name: str, description: str) -> None:
        """Create the workspace and its roles; undo both if either fails."""
        self.workspaces.create_workspace(Workspace(name=name, description=description))
        try:
            for role, grants in ROLE_GRANTS.items():
                created = self.auth.create_role(
                    name=auth_role_name(role), workspace=name, description=f"tenant {role.value}"
                )
                for resource_type, pattern, permission in grants:
                    self.auth.add_role_permission(created.id, resource_type, pattern, permission)
        except Exception:
            self.delete_tenant(name, force=True)
            raise

    def delete_tenant(self, name: str, force: bool) -> None:
        mode = WorkspaceDeletionMode.CASCADE if force else WorkspaceDeletionMode.RESTRICT
        try:
            self.workspaces.delete_workspace(name, mode=mode)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        self.auth.delete_roles_for_workspace(name)
        self.auth.delete_workspace_permissions_for_workspace(name)

    def workspace_exists(self, name: str) -> bool:
        try:
            self.workspaces.get_workspace(name)
            return True
        except MlflowException:
            return False

    # -- principals ------------------------------------------------------------------------
    def ensure_user(self, username: str, platform_admin: bool = False) -> None:
        """A basic-auth user for the principal. Its password is random and never used:
        the tenant-auth ``authorization_function`` replaces password checks."""
        if not self.auth.has_user(username, use_primary=True):
            self.auth.create_user(username, secrets.token_urlsafe(24), is_admin=platform_admin)
        elif platform_admin:
            self.auth.update_user(username, is_admin=True)

    def delete_user(self, username: str) -> None:
        if self.auth.has_user(username, use_primary=True):
            self.auth.delete_user(username)

    def assign(self, username: str, tenant: str, role: Role) -> None:
        """Make ``role`` the user's only tenant role in the tenant's workspace."""
        user = self.auth.get_user(username)
        self.unassign(username, tenant)
        target = self.auth.get_role_by_name(tenant, auth_role_name(role))
        self.auth.assign_role_to_user(user.id, target.id)

    def unassign(self, username: str, tenant: str) -> None:
        user = self.auth.get_user(username)
        for existing in self.auth.list_user_roles_for_workspace(user.id, tenant):
            if existing.name.startswith("tenant-"):
                self.auth.unassign_role_from_user(user.id, existing.id)
