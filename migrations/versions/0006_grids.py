"""X/Y/Z plots: a grid row (its own job, the axes) and one row per cell (the cell's job, its place).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 02:00:00.000000

Two new tables; no existing table changes. A grid's job
(`grids.job_id`) carries the grid image and its status; each cell is an ordinary job listed in `grid_cells`.
Downgrade drops both tables (the jobs stay, as plain jobs).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('grids',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('axes', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_grids_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_grids')),
    sa.UniqueConstraint('job_id', name=op.f('uq_grids_job_id'))
    )
    op.create_table('grid_cells',
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('grid_id', sa.Integer(), nullable=False),
    sa.Column('cell', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['grid_id'], ['grids.id'], name=op.f('fk_grid_cells_grid_id_grids'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_grid_cells_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', name=op.f('pk_grid_cells')),
    sa.UniqueConstraint('grid_id', 'cell', name=op.f('uq_grid_cells_grid_id_cell'))
    )
    with op.batch_alter_table('grid_cells', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_grid_cells_grid_id'), ['grid_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('grid_cells', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_grid_cells_grid_id'))
    op.drop_table('grid_cells')
    op.drop_table('grids')
