"""Per-guild live previews in progress messages.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 21:40:00.000000

A new boolean column, false for existing guilds (previews cost upload bandwidth: servers opt in).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('guild_settings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('previews', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('guild_settings', schema=None) as batch_op:
        batch_op.alter_column('previews', server_default=None)  # the models set it on insert


def downgrade() -> None:
    with op.batch_alter_table('guild_settings', schema=None) as batch_op:
        batch_op.drop_column('previews')
