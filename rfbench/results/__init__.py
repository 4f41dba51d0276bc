"""Results: the schema, the per-cell store and resume, provenance, tables, plots, paper tables and the gate."""

from rfbench.results.provenance import provenance
from rfbench.results.schema import KEY_FIELDS, SCHEMA, table_columns
from rfbench.results.store import ResultStore, cell_key
from rfbench.results.tables import DISPLAY_COLUMNS, markdown_table, write_tables

__all__ = ["ResultStore", "SCHEMA", "KEY_FIELDS", "table_columns", "cell_key", "provenance", "markdown_table",
           "write_tables", "DISPLAY_COLUMNS"]
