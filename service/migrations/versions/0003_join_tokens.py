"""Remote participation: join tokens kept as hashes, with generations

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 09:43:38.883944
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('join_tokens',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('invitation_id', sa.Uuid(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['invitation_id'], ['invitations.id'], name=op.f('fk_join_tokens_invitation_id_invitations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_join_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_join_tokens_token_hash'))
    )
    with op.batch_alter_table('join_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_join_tokens_invitation_id'), ['invitation_id'], unique=False)

    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token_generation', sa.Integer(), nullable=False, server_default='1'))
        batch_op.add_column(sa.Column('mailed_hash', sa.String(length=64), nullable=True))
        batch_op.drop_constraint(batch_op.f('uq_invitations_token_hash'), type_='unique')
        batch_op.drop_column('token_hash')
        batch_op.drop_column('token_expires_at')
        batch_op.drop_column('token_revoked_at')



def downgrade() -> None:
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token_revoked_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('token_expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('token_hash', sa.VARCHAR(length=64), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_invitations_token_hash'), ['token_hash'])
        batch_op.drop_column('mailed_hash')
        batch_op.drop_column('token_generation')

    with op.batch_alter_table('join_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_join_tokens_invitation_id'))

    op.drop_table('join_tokens')
