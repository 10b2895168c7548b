"""AWS IAM bindings: IAM identities (by ARN) bound to tenant roles.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mlt_iam_bindings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("arn", sa.String(255), nullable=False, index=True),
        sa.Column(
            "tenant",
            sa.String(63),
            sa.ForeignKey("mlt_tenants.name", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("arn", "tenant"),
    )


def downgrade() -> None:
    op.drop_table("mlt_iam_bindings")
