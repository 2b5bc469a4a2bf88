"""Patients: INS identity and enrolment, conversation state of the exchange rules, web inbox sessions.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "patients",
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("ins", sa.String(15), nullable=False),
        sa.Column("ins_oid", sa.String(32), nullable=False),
        sa.Column("birth_name", sa.String(200), nullable=False),
        sa.Column("given_name", sa.String(200), nullable=False),
        sa.Column("birth_date", sa.String(10), nullable=False),
        sa.Column("sex", sa.String(1), nullable=False),
        sa.Column("opposed", sa.Boolean(), nullable=False),
        sa.Column("opposed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("activation_digest", sa.String(64), nullable=True),
        sa.Column("activation_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["address"], ["mailboxes.address"], name="fk_patients_address_mailboxes", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("address", name="pk_patients"),
        sa.UniqueConstraint("ins", name="uq_patients_ins"),
    )
    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient", sa.String(320), nullable=False),
        sa.Column("correspondent", sa.String(320), nullable=False),
        sa.Column("reply_to", sa.Text(), nullable=False),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        sa.UniqueConstraint("patient", "correspondent", name="uq_conversations_patient_correspondent"),
    )
    op.create_table(
        "web_sessions",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["address"], ["accounts.address"], name="fk_web_sessions_address_accounts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("digest", name="pk_web_sessions"),
    )
    op.create_index("ix_web_sessions_address", "web_sessions", ["address"])


def downgrade() -> None:
    op.drop_index("ix_web_sessions_address", table_name="web_sessions")
    op.drop_table("web_sessions")
    op.drop_table("conversations")
    op.drop_table("patients")
