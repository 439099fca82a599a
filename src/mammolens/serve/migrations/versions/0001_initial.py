"""initial schema: users, studies, images, outputs, reader_cases, reads

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("token_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("patient_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("accession", sa.String(64), nullable=False, server_default=""),
        sa.Column("study_date", sa.String(8), nullable=False, server_default=""),
        sa.Column("manufacturer", sa.String(64), nullable=False, server_default=""),
        sa.Column("source", sa.String(16), nullable=False, server_default="upload"),
        sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("exam_score", sa.Float, nullable=True),
        sa.Column("model", sa.String(128), nullable=False, server_default=""),
        sa.Column("reading_status", sa.String(16), nullable=False, server_default="unread"),
        sa.Column("truth", sa.Integer, nullable=True),
        sa.Column("in_reader_study", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("pacs_status", sa.String(16), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("scored_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_studies_status", "studies", ["status"])
    op.create_index("ix_studies_exam_score", "studies", ["exam_score"])
    op.create_table(
        "images",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False, server_default=""),
        sa.Column("file", sa.String(128), nullable=False),
        sa.Column("laterality", sa.String(1), nullable=False, server_default=""),
        sa.Column("view", sa.String(8), nullable=False, server_default=""),
        sa.Column("rows", sa.Integer, nullable=False, server_default="0"),
        sa.Column("columns", sa.Integer, nullable=False, server_default="0"),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("breast_score", sa.Float, nullable=True),
        sa.Column("heatmap_file", sa.String(128), nullable=False, server_default=""),
        sa.Column("peak_x", sa.Float, nullable=True),
        sa.Column("peak_y", sa.Float, nullable=True),
        sa.UniqueConstraint("sop_instance_uid", name="uq_images_sop"),
    )
    op.create_index("ix_images_study_id", "images", ["study_id"])
    op.create_table(
        "outputs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False, server_default=""),
        sa.Column("file", sa.String(128), nullable=False),
        sa.Column("stored", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_outputs_study_id", "outputs", ["study_id"])
    op.create_table(
        "reader_cases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("reader_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("phase", sa.String(16), nullable=False, server_default="unaided"),
        sa.UniqueConstraint("reader_id", "study_id", name="uq_case_reader_study"),
        sa.UniqueConstraint("reader_id", "position", name="uq_case_reader_position"),
    )
    op.create_index("ix_reader_cases_reader_id", "reader_cases", ["reader_id"])
    op.create_index("ix_reader_cases_study_id", "reader_cases", ["study_id"])
    op.create_table(
        "reads",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("reader_cases.id", ondelete="CASCADE"), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("birads", sa.Integer, nullable=False),
        sa.Column("heatmap_acceptable", sa.Boolean, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("case_id", "modality", name="uq_read_case_modality"),
    )
    op.create_index("ix_reads_case_id", "reads", ["case_id"])


def downgrade() -> None:
    for t in ("reads", "reader_cases", "outputs", "images", "studies", "users"):
        op.drop_table(t)
