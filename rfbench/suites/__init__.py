"""Suites and running them: the suite definition (:mod:`~rfbench.suites.base`), a run's options and plan
(:mod:`~rfbench.suites.plan`), the sweep (:mod:`~rfbench.suites.runner`), sampling a cell
(:mod:`~rfbench.suites.execute`), scoring it (:mod:`~rfbench.suites.evaluate`) and scoring samples made elsewhere
(:mod:`~rfbench.suites.score`). rfbench registers no suite itself: its baselines register theirs as a plugin."""

from rfbench.suites.base import SUITES, Cell, Suite, SuiteModel, fixed_grid, register_suite
from rfbench.suites.plan import Plan, RunConfig, make_plan

__all__ = ["SUITES", "Suite", "SuiteModel", "Cell", "register_suite", "fixed_grid", "RunConfig", "Plan", "make_plan"]
