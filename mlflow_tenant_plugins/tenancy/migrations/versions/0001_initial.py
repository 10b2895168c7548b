"""Tenants, principals, role bindings, API keys, the usage ledger and platform state.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mlt_tenants",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("quota_storage_bytes", sa.BigInteger, nullable=False),
        sa.Column("quota_endpoints", sa.Integer, nullable=False),
        sa.Column("quota_instances", sa.Integer, nullable=False),
        sa.Column("quota_instances_per_endpoint", sa.Integer, nullable=False),
        sa.Column("quota_instance_types", sa.Text, nullable=False),
        sa.Column("alarm_topic_arn", sa.String(2048), nullable=True),
        sa.Column("require_validation", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mlt_principals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("platform_admin", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mlt_role_bindings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "principal_id",
            sa.Integer,
            sa.ForeignKey("mlt_principals.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column(
            "tenant",
            sa.String(63),
            sa.ForeignKey("mlt_tenants.name", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("principal_id", "tenant"),
    )
    op.create_table(
        "mlt_api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "principal_id",
            sa.Integer,
            sa.ForeignKey("mlt_principals.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column(
            "tenant",
            sa.String(63),
            sa.ForeignKey("mlt_tenants.name", ondelete="CASCADE"),
            nullable=True,
            index=True,
        ),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("description", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "mlt_usage",
        sa.Column(
            "tenant",
            sa.String(63),
            sa.ForeignKey("mlt_tenants.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("resource", sa.String(32), primary_key=True),
        sa.Column("used", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mlt_platform_state",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mlt_platform_state")
    for table in ("mlt_usage", "mlt_api_keys", "mlt_role_bindings", "mlt_principals"):
        op.drop_table(table)
    op.drop_table("mlt_tenants")
