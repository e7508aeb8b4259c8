"""Calendar sync: feed tokens, calendar owners, busy block hrefs, one pending job per key

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 09:13:02.532814
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calendars', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_id', sa.Uuid(), nullable=False))
        batch_op.create_index(batch_op.f('ix_calendars_owner_id'), ['owner_id'], unique=False)

    with op.batch_alter_table('calendar_objects', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_calendar_objects_meeting_id'), ['meeting_id'], unique=False)

    with op.batch_alter_table('forums', schema=None) as batch_op:
        batch_op.add_column(sa.Column('feed_token', sa.String(length=64), nullable=True))
        batch_op.drop_constraint(batch_op.f('uq_forums_feed_token_hash'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_forums_feed_token'), ['feed_token'])
        batch_op.drop_column('feed_token_hash')

    with op.batch_alter_table('outbox_jobs', schema=None) as batch_op:
        batch_op.create_index('uq_outbox_jobs_pending_key', ['key'], unique=True, sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))

    with op.batch_alter_table('room_bookings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('external_href', sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column('external_etag', sa.String(length=500), nullable=True))

    with op.batch_alter_table('rooms', schema=None) as batch_op:
        batch_op.add_column(sa.Column('feed_token', sa.String(length=64), nullable=True))
        batch_op.drop_constraint(batch_op.f('uq_rooms_feed_token_hash'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_rooms_feed_token'), ['feed_token'])
        batch_op.drop_column('feed_token_hash')



def downgrade() -> None:
    with op.batch_alter_table('rooms', schema=None) as batch_op:
        batch_op.add_column(sa.Column('feed_token_hash', sa.VARCHAR(length=64), nullable=True))
        batch_op.drop_constraint(batch_op.f('uq_rooms_feed_token'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_rooms_feed_token_hash'), ['feed_token_hash'])
        batch_op.drop_column('feed_token')

    with op.batch_alter_table('room_bookings', schema=None) as batch_op:
        batch_op.drop_column('external_etag')
        batch_op.drop_column('external_href')

    with op.batch_alter_table('outbox_jobs', schema=None) as batch_op:
        batch_op.drop_index('uq_outbox_jobs_pending_key', sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))

    with op.batch_alter_table('forums', schema=None) as batch_op:
        batch_op.add_column(sa.Column('feed_token_hash', sa.VARCHAR(length=64), nullable=True))
        batch_op.drop_constraint(batch_op.f('uq_forums_feed_token'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_forums_feed_token_hash'), ['feed_token_hash'])
        batch_op.drop_column('feed_token')

    with op.batch_alter_table('calendar_objects', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_calendar_objects_meeting_id'))

    with op.batch_alter_table('calendars', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_calendars_owner_id'))
        batch_op.drop_column('owner_id')

