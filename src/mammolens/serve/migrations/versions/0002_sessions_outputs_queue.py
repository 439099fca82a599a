"""server-side sessions (logout revokes), DICOM outputs as a durable queue

* ``auth_sessions``: one row per login; a session token names its row, and logging out
  (or expiry) ends it on the server, not only in the browser.
* ``studies.output_attempts``: attempts at writing a scored study's DICOM outputs
  (``pacs_status`` ``pending`` -> ``writing`` -> ``written`` | ``stored`` | ``failed``),
  bounded like scoring attempts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("revoked_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_auth_sessions_user_id", "auth_sessions", ["user_id"])
    with op.batch_alter_table("studies") as b:
        b.add_column(sa.Column("output_attempts", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_studies_pacs_status", "studies", ["pacs_status"])


def downgrade() -> None:
    op.drop_index("ix_studies_pacs_status", table_name="studies")
    with op.batch_alter_table("studies") as b:
        b.drop_column("output_attempts")
    op.drop_index("ix_auth_sessions_user_id", table_name="auth_sessions")
    op.drop_table("auth_sessions")
