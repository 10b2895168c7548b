"""Deployment operation records, owned by the server (they were status.json files in the
tenant's artifact prefix, which a tenant admin could write).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mlt_deployment_records",
        sa.Column(
            "tenant",
            sa.String(63),
            sa.ForeignKey("mlt_tenants.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reserved_endpoints", sa.Integer, nullable=False),
        sa.Column("reserved_instances", sa.Integer, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mlt_deployment_records")
