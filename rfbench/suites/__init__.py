"""Suites, registered by name. Importing this package registers every suite."""

from rfbench.suites import images, toy2d  # noqa: F401
from rfbench.suites.base import SUITES, Cell, Suite

__all__ = ["SUITES", "Suite", "Cell"]
