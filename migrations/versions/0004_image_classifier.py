"""The image classifier in the moderation queue: mode 'auto', NSFW-channel thresholds, each job's image scores.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 08:00:00.000000

Written by hand and checked with `sdbot db check`:
- guild_settings.moderation_mode may be 'auto'; the check constraint is dropped and restated, as in 0002.
- guild_settings.nsfw_flag_above / nsfw_block_above: NULL for existing guilds (the bot's thresholds apply).
- jobs.image_scores: NULL for existing jobs. `jobs` is referenced by other tables, so it is not rebuilt: the
  column is added (and dropped on downgrade) with a plain ALTER TABLE, which SQLite does in place.
Downgrade turns 'auto' guilds into 'images' (every image waits for a moderator): the safe side of the old modes.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

NEW_MODES = "moderation_mode IN ('off', 'flagged', 'prompts', 'images', 'auto')"
OLD_MODES = "moderation_mode IN ('off', 'flagged', 'prompts', 'images')"


def upgrade() -> None:
    with op.batch_alter_table('guild_settings', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_guild_settings_moderation_mode'), type_='check')
    with op.batch_alter_table('guild_settings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('nsfw_flag_above', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('nsfw_block_above', sa.Float(), nullable=True))
        batch_op.create_check_constraint(batch_op.f('ck_guild_settings_moderation_mode'), NEW_MODES)
    op.add_column('jobs', sa.Column('image_scores', sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column('jobs', 'image_scores')
    with op.batch_alter_table('guild_settings', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_guild_settings_moderation_mode'), type_='check')
        batch_op.drop_column('nsfw_block_above')
        batch_op.drop_column('nsfw_flag_above')
    op.execute("UPDATE guild_settings SET moderation_mode = 'images' WHERE moderation_mode = 'auto'")
    with op.batch_alter_table('guild_settings', schema=None) as batch_op:
        batch_op.create_check_constraint(batch_op.f('ck_guild_settings_moderation_mode'), OLD_MODES)
