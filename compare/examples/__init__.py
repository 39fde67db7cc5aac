"""Example cells to plug in with ``--cell``: mgu.py, the minimal gated unit (docs/cells.md#writing-a-cell)."""
