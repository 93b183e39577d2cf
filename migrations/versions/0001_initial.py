"""Initial schema: users, presets and default presets, jobs, guild settings, moderation items, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 20:27:37.981043

Generated with autogenerate (render_as_batch) and checked by hand: tables are created parents first and dropped
children first; every constraint is named through the models' naming convention (batch rebuilds on SQLite
need the names); check constraints are included, since autogenerate does not compare them later; the
redundant single-column index on presets.user_id was removed (the unique (user_id, name_key) covers it).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('guild_settings',
    sa.Column('guild_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('moderation_mode', sa.String(length=16), nullable=False),
    sa.Column('review_channel_id', sa.BigInteger(), nullable=True),
    sa.Column('moderator_role_id', sa.BigInteger(), nullable=True),
    sa.Column('banned_words', sa.JSON(), nullable=False),
    sa.Column('flagged_words', sa.JSON(), nullable=False),
    sa.Column('forced_negative_prompt', sa.Text(), nullable=False),
    sa.Column('defaults', sa.JSON(), nullable=False),
    sa.Column('max_steps', sa.Integer(), nullable=True),
    sa.Column('max_pixels', sa.Integer(), nullable=True),
    sa.Column('max_batch', sa.Integer(), nullable=True),
    sa.Column('max_jobs_per_user', sa.Integer(), nullable=True),
    sa.Column('allowed_models', sa.JSON(), nullable=False),
    sa.Column('allowed_vaes', sa.JSON(), nullable=False),
    sa.Column('nsfw_policy', sa.String(length=16), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("moderation_mode IN ('off', 'flagged', 'all')", name=op.f('ck_guild_settings_moderation_mode')),
    sa.CheckConstraint("nsfw_policy IN ('allow', 'nsfw_channels', 'block')", name=op.f('ck_guild_settings_nsfw_policy')),
    sa.PrimaryKeyConstraint('guild_id', name=op.f('pk_guild_settings'))
    )
    op.create_table('users',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('guild_id', sa.BigInteger(), nullable=True),
    sa.Column('channel_id', sa.BigInteger(), nullable=True),
    sa.Column('interaction_id', sa.BigInteger(), nullable=True),
    sa.Column('message_id', sa.BigInteger(), nullable=True),
    sa.Column('request', sa.JSON(), nullable=False),
    sa.Column('sources', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=True),
    sa.Column('result_paths', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('posted_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('awaiting_review', 'queued', 'running', 'done', 'posted', 'failed', 'cancelled', 'rejected')", name=op.f('ck_jobs_status')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_jobs_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_guild_id'), ['guild_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_status'), ['status'], unique=False)
        batch_op.create_index('ix_jobs_user_id_status', ['user_id', 'status'], unique=False)

    op.create_table('presets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('name_key', sa.String(length=32), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_presets_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_presets')),
    sa.UniqueConstraint('user_id', 'name_key', name=op.f('uq_presets_user_id_name_key'))
    )
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('guild_id', sa.BigInteger(), nullable=True),
    sa.Column('actor_id', sa.BigInteger(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('target_user_id', sa.BigInteger(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_audit_log_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_guild_id'), ['guild_id'], unique=False)

    op.create_table('default_presets',
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('preset_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['preset_id'], ['presets.id'], name=op.f('fk_default_presets_preset_id_presets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_default_presets_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_default_presets')),
    sa.UniqueConstraint('preset_id', name=op.f('uq_default_presets_preset_id'))
    )
    op.create_table('moderation_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('guild_id', sa.BigInteger(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('review_message_id', sa.BigInteger(), nullable=True),
    sa.Column('decided_by', sa.BigInteger(), nullable=True),
    sa.Column('decision_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'approved', 'rejected')", name=op.f('ck_moderation_items_status')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_moderation_items_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_moderation_items')),
    sa.UniqueConstraint('job_id', name=op.f('uq_moderation_items_job_id'))
    )
    with op.batch_alter_table('moderation_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_moderation_items_guild_id'), ['guild_id'], unique=False)



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('moderation_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_moderation_items_guild_id'))

    op.drop_table('moderation_items')
    op.drop_table('default_presets')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_guild_id'))

    op.drop_table('audit_log')
    op.drop_table('presets')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_user_id_status')
        batch_op.drop_index(batch_op.f('ix_jobs_status'))
        batch_op.drop_index(batch_op.f('ix_jobs_guild_id'))

    op.drop_table('jobs')
    op.drop_table('users')
    op.drop_table('guild_settings')
