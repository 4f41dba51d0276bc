"""Results: the per-cell store, provenance, tables and plots."""

from rfbench.results.provenance import provenance
from rfbench.results.store import COLUMNS, ResultStore, cell_key
from rfbench.results.tables import DISPLAY_COLUMNS, markdown_table, write_tables

__all__ = ["ResultStore", "COLUMNS", "cell_key", "provenance", "markdown_table", "write_tables", "DISPLAY_COLUMNS"]
