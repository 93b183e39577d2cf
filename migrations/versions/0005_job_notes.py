"""Each job's render notes: what its images left out or changed (a refused embedding, a VAE re-decoded in fp32).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 00:00:00.000000

Written by hand and checked with `sdbot db check`:
- jobs.notes: NULL for existing jobs (no notes). `jobs` is referenced by other tables, so it is not rebuilt: the
  column is added (and dropped on downgrade) with a plain ALTER TABLE, as in 0004.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('notes', sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column('jobs', 'notes')
