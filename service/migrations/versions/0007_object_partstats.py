"""Calendar objects remember the attendees' PARTSTATs their copy holds, so that a client's older copy
does not undo an RSVP given through the service

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 15:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calendar_objects") as batch:
        batch.add_column(sa.Column("partstats", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calendar_objects") as batch:
        batch.drop_column("partstats")
