"""Storage releases: one row per stored object version whose size was given back to its
tenant's quota, so concurrent deletes and overwrites of one object release it only once (see
``tenancy/releases.py``).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mlt_storage_releases",
        # AUTOINCREMENT on sqlite: ids are never reused (the release order depends on it).
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("version", sa.String(64), nullable=False, unique=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_mlt_storage_releases_released_at", "mlt_storage_releases",
                    ["released_at"])


def downgrade() -> None:
    op.drop_table("mlt_storage_releases")
