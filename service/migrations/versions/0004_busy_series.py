"""Busy blocks of recurring events: how far their series was read

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 03:50:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('room_bookings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('series_until', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('room_bookings', schema=None) as batch_op:
        batch_op.drop_column('series_until')
