"""A suite is data: the problem, its models (and where each comes from: the recipe rfbench trains it with, or the
file it is read from), the cells, the metrics, the sample count and seeds, and a version.

One self-contained definition per suite, registered with :func:`register_suite` (rfbench's baselines register
theirs exactly as a plugin does). What a particular run changes (device, batch size, models given as files, a
subset of cells, fewer samples) is not the suite's business: see :mod:`rfbench.suites.plan`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from rfbench.metrics import METRICS
from rfbench.metrics.features import EXTRACTORS
from rfbench.models.sources import ModelSource
from rfbench.registry import Registry
from rfbench.results.schema import MODEL_NAME_RULE, model_name_ok
from rfbench.samplers import SOLVERS, check_call, models_taken
from rfbench.samplers.gits import SEARCH_ROWS, search_nfe


@dataclass(frozen=True)
class Cell:
    """One row of a sweep: a model sampled by a solver with a step count (None for adaptive solvers) on a time grid
    (a name, :mod:`rfbench.samplers.grids`; None: the default, uniform; adaptive solvers have none)."""

    model: str
    solver: str
    steps: int | None = None
    options: tuple[tuple[str, Any], ...] = ()
    grid: str | None = None
    # how the run came to have it: "suite" (one of the suite's own cells) or "run (...)" (chosen by --solvers,
    # --steps, --grids, --solver-option or an added model); not part of the cell's identity
    origin: str = dataclasses.field(default="suite", compare=False)

    @property
    def label(self) -> str:
        steps = "adaptive" if self.steps is None else str(self.steps)
        opts = "".join(f",{k}={v}" for k, v in self.options)
        default = SOLVERS[self.solver].default_grid if self.solver in SOLVERS else None
        grid = f"@{self.grid}" if self.grid not in (None, default) else ""
        return f"{self.model}/{self.solver}/{steps}{opts}{grid}"

    def for_model(self, model: str) -> "Cell":
        """The same cell for another model (a model a run adds takes its kind's cells)."""
        return dataclasses.replace(self, model=model)

    def fields(self) -> dict:
        """The cell's columns of a result row."""
        gridded = SOLVERS[self.solver].kind != "adaptive"
        return {"model": self.model, "solver": self.solver, "steps": self.steps,
                "options": ",".join(f"{k}={v}" for k, v in self.options),
                "grid": (self.grid or SOLVERS[self.solver].default_grid) if gridded else None,
                "cell_origin": self.origin}


@dataclass(frozen=True)
class SuiteModel:
    """A model of a suite: its name in the rows and its source (a recipe, a file, a checkpoint slot, ...)."""

    name: str
    source: ModelSource

    def __post_init__(self):
        if not model_name_ok(self.name):
            raise ValueError(f"a model name must be {MODEL_NAME_RULE}, got {self.name!r}")
        if not isinstance(self.source, ModelSource):
            raise TypeError(f"model {self.name}: source must be an rfbench.models.sources.ModelSource, got "
                            f"{type(self.source).__name__}")

    @property
    def kind(self) -> str:
        return self.source.kind


@dataclass(frozen=True)
class Suite:
    """Everything that determines a suite's numbers. Bump ``version`` whenever they would change.

    ``independent_row`` adds a row for the independent coupling (X0 ~ pi0, X1 ~ pi1 drawn separately), the
    reference point of the coupling metrics and, for w2, the floor set by sampling noise. ``steps``: per solver
    kind ("fixed", "discrete"), the step counts of solvers a run adds (``--solvers``) to a model that has no cells
    of that kind. ``skip_metrics``: (metric, solvers) pairs; the metric's columns stay empty on the cells of those
    solvers, where it costs more than it tells (toy2d: w2's exact solve on the fast solvers' cells, which sit at
    w2's sampling floor and which solver_error ranks).
    """

    name: str
    version: int
    description: str
    problem: Any
    models: tuple[SuiteModel, ...]
    cells: tuple[Cell, ...]
    metrics: tuple[str, ...]
    num_samples: int
    first_seed: int = 0
    independent_row: bool = False
    straightness_steps: int = 100   # model-scope metrics use an rk4 trajectory with this many uniform steps
    straightness_samples: int | None = None   # ... from the first this many seeds (None: all)
    solver_error_samples: int | None = None   # solver_error against the model's own rk45 solution of these seeds
    solver_error_tolerance: float = 1e-6      # ... at rtol = atol = this
    extractor: str | None = None    # image suites: the feature extractor of the image metrics (EXTRACTORS)
    fallback_extractor: str | None = None  # ... used instead when the extractor's weights are not installed
    quality_metric: str = "w2"      # the column plotted against NFE
    batch_size: int | None = None   # samples per sampler call (None: all at once); rk45's NFE is then per batch
    bootstrap: int = 0              # replicates of the resampled standard errors (fid, is, recall, kid; 0: none)
    repeats: int = 1                # timed runs per cell (wall_clock_s: their median); more where sampling is cheap
    steps: tuple[tuple[str, tuple[int, ...]], ...] = ()
    skip_metrics: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self):
        models = tuple(self.models)
        object.__setattr__(self, "models", models)
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 1:
            raise ValueError(f"suite {self.name}: version must be an integer >= 1, got {self.version!r}")
        for model in models:
            if not isinstance(model, SuiteModel):
                raise TypeError(f"suite {self.name}: models must be SuiteModel(name, source), got {model!r}")
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"suite {self.name}: duplicate model names in {names}")
        if self.num_samples < 2:
            raise ValueError(f"suite {self.name}: num_samples must be >= 2, got {self.num_samples}")
        if self.first_seed < 0:
            raise ValueError(f"suite {self.name}: first_seed must be >= 0, got {self.first_seed}")
        for metric in self.metrics:
            METRICS[metric]  # raises with the list of known metrics
        if not 0 < self.solver_error_tolerance < 1:
            raise ValueError(f"suite {self.name}: solver_error_tolerance must be in (0, 1), got "
                             f"{self.solver_error_tolerance}")
        for name in ("straightness_samples", "solver_error_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 2:
                raise ValueError(f"suite {self.name}: {name} must be >= 2 or None, got {getattr(self, name)}")
        if self.extractor is not None:
            EXTRACTORS[self.extractor]  # raises with the list of known extractors
        if self.fallback_extractor is not None:
            if self.extractor is None:
                raise ValueError(f"suite {self.name}: fallback_extractor needs an extractor")
            EXTRACTORS[self.fallback_extractor]
        if not any(self.quality_metric in METRICS[m].columns for m in self.metrics):
            raise ValueError(f"suite {self.name}: quality_metric {self.quality_metric!r} is not a column of its "
                             f"metrics {', '.join(self.metrics)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"suite {self.name}: batch_size must be >= 1 or None, got {self.batch_size}")
        if self.bootstrap < 0 or self.bootstrap == 1:
            raise ValueError(f"suite {self.name}: bootstrap must be 0 (off) or >= 2 replicates, got {self.bootstrap}")
        if self.straightness_steps < 1:
            raise ValueError(f"suite {self.name}: straightness_steps must be >= 1, got {self.straightness_steps}")
        for kind, counts in self.steps:
            if kind not in ("fixed", "discrete") or not counts or min(counts) < 1:
                raise ValueError(f"suite {self.name}: steps maps 'fixed' or 'discrete' to step counts >= 1, got "
                                 f"{kind!r}: {counts!r}")
        for metric, solvers in self.skip_metrics:
            if metric not in METRICS or isinstance(solvers, str) or any(s not in SOLVERS for s in solvers):
                raise ValueError(f"suite {self.name}: skip_metrics pairs a metric ({', '.join(METRICS.names())}) "
                                 f"with a tuple of registered solvers, got {metric!r}: {solvers!r}")
        check_cells(self.name, self.cells, names)
        kinds = {m.name: m.kind for m in models}
        for cell in self.cells:
            if kinds[cell.model] not in SOLVERS[cell.solver].models:
                raise ValueError(f"suite {self.name}: cell {cell.label}: {models_taken(cell.solver)}; {cell.model} "
                                 f"is a {kinds[cell.model]} model")
        if not hasattr(self.problem, "shape") or not hasattr(self.problem, "initial"):
            raise TypeError(f"suite {self.name}: problem must have a shape and initial(seeds) (a ToyProblem, an "
                            f"ImageProblem or alike), got {type(self.problem).__name__}")

    @property
    def seeds(self) -> range:
        return range(self.first_seed, self.first_seed + self.num_samples)

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    def model(self, name: str) -> SuiteModel:
        for model in self.models:
            if model.name == name:
                return model
        raise ValueError(f"suite {self.name} has no model {name!r}; its models are: {', '.join(self.model_names)}")

    def grid(self, model: str) -> list[Cell]:
        return [c for c in self.cells if c.model == model]

    def skipped(self, cell: Cell) -> tuple[str, ...]:
        """The metrics left empty on ``cell`` (:attr:`skip_metrics`)."""
        return tuple(metric for metric, solvers in self.skip_metrics if cell.solver in solvers)

    def template(self, kind: str) -> list[Cell]:
        """The cells a model of ``kind`` gets when a run adds one: those of the suite's first model of that kind."""
        for model in self.models:
            if model.kind == kind and self.grid(model.name):
                return self.grid(model.name)
        return []

    def default_steps(self, solver_kind: str) -> tuple[int, ...]:
        return dict(self.steps).get(solver_kind, ())

    @property
    def extractors(self) -> tuple[str, ...]:
        """The extractors this suite can be scored with: its own, then its fallback."""
        return tuple(e for e in (self.extractor, self.fallback_extractor) if e is not None)


def check_cells(suite: str, cells: Sequence[Cell], models: Sequence[str]) -> None:
    """Every cell's solver, steps and options are valid and its model is one of ``models``; no duplicates."""
    for cell in cells:
        try:
            if cell.grid is not None and not isinstance(cell.grid, str):
                raise TypeError(f"a cell's grid is a name, got {cell.grid!r}")
            check_call(cell.solver, cell.steps, dict(cell.options), cell.grid)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"suite {suite}: cell {cell.label}: {exc}") from None
        if cell.model not in models:
            raise ValueError(f"suite {suite}: cell {cell.label} names model {cell.model!r}, not one of the suite's "
                             f"models {', '.join(models)}")
    labels = [c.label for c in cells]
    if len(set(labels)) != len(labels):
        raise ValueError(f"suite {suite}: duplicate cells in the grid")


def ode_cell(cell: Cell) -> bool:
    """A cell whose samples approximate the model's ODE solution: a deterministic, non-discrete solver (what
    solver_error's reference solves)."""
    spec = SOLVERS[cell.solver]
    return spec.kind != "discrete" and not spec.is_stochastic(dict(cell.options))


def cell_nfe(cell: Cell, model: Any = None) -> int | None:
    """The NFE per sample a cell will count, where it is known before it runs: a fixed-grid solver's declared count
    (on ``model`` where it depends on it: edm-heun), one per timestep for a discrete sampler; None for adaptive
    solvers and solvers that declare none."""
    spec = SOLVERS[cell.solver]
    if spec.kind == "adaptive" or cell.steps is None:
        return None
    nfe = spec.nfe(cell.steps, model)
    return cell.steps if nfe is None and spec.kind == "discrete" else nfe


def search_work(cell: Cell, samples: int, model: Any = None) -> int:
    """The model evaluations on one sample each that the search of the cell's grid spends before the cell samples
    (a searched grid, gits: its NFE per row on the first ``SEARCH_ROWS`` of the ``samples``, on ``model`` where the
    teacher's NFE depends on it); 0 for a grid known in advance."""
    nfe = search_nfe(cell.grid, model)
    return 0 if nfe is None else nfe * min(samples, SEARCH_ROWS)


def applies(solver: str, kind: str) -> bool:
    """Whether a run adding ``solver`` gives a model of ``kind`` cells of it: a kind the solver takes
    (``register_solver(models=...)``), but for one-step models, which are sampled by their suite's cells alone."""
    return kind != "one-step" and kind in SOLVERS[solver].models


SUITES: Registry[Suite] = Registry("suite")


def register_suite(suite: Suite) -> Suite:
    """Register a suite under its name (rfbench's baselines register theirs this way, as a plugin would)."""
    if not isinstance(suite, Suite):
        raise TypeError(f"register_suite takes an rfbench.suites.Suite, got {type(suite).__name__}")
    return SUITES.add(suite.name, suite)


def fixed_grid(model: str, solvers: Sequence[str], steps: Sequence[int], grids: Sequence[str | None] = (None,),
               options: tuple[tuple[str, Any], ...] = ()) -> tuple[Cell, ...]:
    """Each solver at each step count on each grid (None: the solver's default grid)."""
    return tuple(Cell(model, s, n, options, g) for s in solvers for g in grids for n in steps)
