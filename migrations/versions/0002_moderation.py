"""Moderation queue: modes off/flagged/prompts/images, how users hear of decisions, a prompt-length cap, bans.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:00:00.000000

Written by hand and checked with `sdbot db check`:
- guild_settings.moderation_mode: 'all' becomes 'prompts' (every prompt is reviewed, as before); 'images' is
  new. The check constraint is dropped before the rows are rewritten and restated after, because on SQLite a
  batch rebuild copies the rows into a table that already has the new constraint.
- guild_settings.notify_by ('dm' for existing guilds) and guild_settings.max_prompt_chars (NULL: the engine's).
- bans: a new table. Nothing references guild_settings or bans, so rebuilding them on SQLite is safe (see
  env.py on tables that others reference; `jobs` is deliberately left alone).
Downgrade maps 'prompts' and 'images' back to 'all' (the old mode that held everything).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

NEW_MODES = "moderation_mode IN ('off', 'flagged', 'prompts', 'images')"
OLD_MODES = "moderation_mode IN ('off', 'flagged', 'all')"


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('guild_settings', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_guild_settings_moderation_mode'), type_='check')
    op.execute("UPDATE guild_settings SET moderation_mode = 'prompts' WHERE moderation_mode = 'all'")
    with op.batch_alter_table('guild_settings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('notify_by', sa.String(length=16), nullable=False, server_default='dm'))
        batch_op.add_column(sa.Column('max_prompt_chars', sa.Integer(), nullable=True))
        batch_op.create_check_constraint(batch_op.f('ck_guild_settings_moderation_mode'), NEW_MODES)
        batch_op.create_check_constraint(batch_op.f('ck_guild_settings_notify_by'), "notify_by IN ('dm', 'channel')")
    with op.batch_alter_table('guild_settings', schema=None) as batch_op:
        batch_op.alter_column('notify_by', server_default=None)  # the models set it on insert, as for the others

    op.create_table('bans',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('guild_id', sa.BigInteger(), nullable=True),
    sa.Column('actor_id', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lifted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lifted_by', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bans'))
    )
    with op.batch_alter_table('bans', schema=None) as batch_op:
        batch_op.create_index('ix_bans_user_id_guild_id', ['user_id', 'guild_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('bans', schema=None) as batch_op:
        batch_op.drop_index('ix_bans_user_id_guild_id')
    op.drop_table('bans')

    with op.batch_alter_table('guild_settings', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_guild_settings_notify_by'), type_='check')
        batch_op.drop_constraint(batch_op.f('ck_guild_settings_moderation_mode'), type_='check')
        batch_op.drop_column('max_prompt_chars')
        batch_op.drop_column('notify_by')
    op.execute("UPDATE guild_settings SET moderation_mode = 'all' WHERE moderation_mode IN ('prompts', 'images')")
    with op.batch_alter_table('guild_settings', schema=None) as batch_op:
        batch_op.create_check_constraint(batch_op.f('ck_guild_settings_moderation_mode'), OLD_MODES)
