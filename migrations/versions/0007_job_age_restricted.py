"""Whether each job's command came from an age-restricted channel: a fact Discord gives with the command, kept with
the job so the image review applies the guild's thresholds for such channels without asking Discord later.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 03:30:00.000000

Written by hand and checked with `sdbot db check`:
- jobs.age_restricted: false for existing jobs (the stricter thresholds). `jobs` is referenced by other tables, so
  it is not rebuilt: the column is added (and dropped on downgrade) with a plain ALTER TABLE, as in 0004, and
  keeps its server default (which the model declares too).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('age_restricted', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column('jobs', 'age_restricted')
