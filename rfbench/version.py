"""rfbench's version (its own module, so that provenance can read it without importing the package)."""

__version__ = "0.2.0"
