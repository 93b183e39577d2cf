"""The X/Y/Z plot with the meaning of A1111's script (scripts/xyz_grid.py): axis values, the axis vocabulary, cells."""
