"""Room overlap constraint deferrable, so that moves made together are checked together

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 09:00:00
"""
from __future__ import annotations

from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_EXCLUDE = ("EXCLUDE USING gist (room_id WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&) "
            "WHERE (active AND source = 'service')")


def upgrade() -> None:
    # Still checked at the end of every statement (INITIALLY IMMEDIATE); a batch of moves defers
    # it to the end of the batch, where one meeting may take the slot another leaves.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE room_bookings DROP CONSTRAINT IF EXISTS room_bookings_no_overlap, "
                   f"ADD CONSTRAINT room_bookings_no_overlap {_EXCLUDE} DEFERRABLE INITIALLY IMMEDIATE")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE room_bookings DROP CONSTRAINT IF EXISTS room_bookings_no_overlap, "
                   f"ADD CONSTRAINT room_bookings_no_overlap {_EXCLUDE}")
