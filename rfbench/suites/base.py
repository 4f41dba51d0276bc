"""A suite is data: the problem, the models, the solver grid, the metrics, the sample count and seeds, a version."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from rfbench.metrics import METRICS
from rfbench.metrics.features import EXTRACTORS
from rfbench.registry import Registry
from rfbench.samplers import check_call


@dataclass(frozen=True)
class Cell:
    """One row of a sweep: a model sampled by a solver with a step count (None for adaptive solvers)."""

    model: str
    solver: str
    steps: int | None = None
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        steps = "adaptive" if self.steps is None else str(self.steps)
        opts = "".join(f",{k}={v}" for k, v in self.options)
        return f"{self.model}/{self.solver}/{steps}{opts}"


@dataclass(frozen=True)
class Suite:
    """Everything that determines a suite's numbers. Bump ``version`` whenever they would change.

    ``independent_row`` adds a row for the independent coupling (X0 ~ pi0, X1 ~ pi1 drawn separately), the
    reference point of the coupling metrics and, for w2, the floor set by sampling noise.
    """

    name: str
    version: int
    description: str
    problem: Any
    models: tuple[str, ...]
    cells: tuple[Cell, ...]
    metrics: tuple[str, ...]
    num_samples: int
    first_seed: int = 0
    independent_row: bool = False
    straightness_steps: int = 100   # model-scope metrics use an rk4 trajectory with this many uniform steps
    straightness_samples: int | None = None   # ... from the first this many seeds (None: all)
    extractor: str | None = None    # image suites: the feature extractor of the image metrics (EXTRACTORS)
    fallback_extractor: str | None = None  # ... used instead when the extractor's weights are not installed
    quality_metric: str = "w2"      # the column plotted against NFE
    batch_size: int | None = None   # samples per sampler call (None: all at once); rk45's NFE is then per batch
    checkpoints: tuple[tuple[str, str], ...] = ()   # (model, file) loaded instead of trained (baselines.published)
    checkpoint_only: bool = False   # models exist only as checkpoints (no recipe trains them)
    reference_file: str | None = None  # image metrics' reference from a file (--ref-stats) instead of the images
    bootstrap: int = 0              # replicates of the resampled standard errors (fid, is, recall, kid; 0: none)
    auto_batch: bool = False        # batch size per model from a GPU memory probe (suites.batching); CPU: batch_size
    timing_repeats: int = 1         # timed runs per cell: wall_clock_s is their median (the samples are the first's)
    notes: tuple[str, ...] = ()     # written into every row's notes (e.g. fewer samples than the suite's default)

    def __post_init__(self):
        if self.num_samples < 2:
            raise ValueError(f"suite {self.name}: num_samples must be >= 2, got {self.num_samples}")
        if self.first_seed < 0:
            raise ValueError(f"suite {self.name}: first_seed must be >= 0, got {self.first_seed}")
        for metric in self.metrics:
            METRICS[metric]  # raises with the list of known metrics
        if self.straightness_samples is not None and self.straightness_samples < 2:
            raise ValueError(f"suite {self.name}: straightness_samples must be >= 2 or None, "
                             f"got {self.straightness_samples}")
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
        for model, _ in self.checkpoints:
            if model not in self.models:
                raise ValueError(f"suite {self.name}: a checkpoint is given for {model!r}, which is not one of its "
                                 f"models ({', '.join(self.models)})")
        if self.bootstrap < 0 or self.bootstrap == 1:
            raise ValueError(f"suite {self.name}: bootstrap must be 0 (off) or >= 2 replicates, got {self.bootstrap}")
        if self.timing_repeats < 1:
            raise ValueError(f"suite {self.name}: timing_repeats must be >= 1, got {self.timing_repeats}")
        if self.straightness_steps < 1:
            raise ValueError(f"suite {self.name}: straightness_steps must be >= 1, got {self.straightness_steps}")
        for cell in self.cells:
            try:
                check_call(cell.solver, cell.steps, dict(cell.options))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"suite {self.name}: cell {cell.label}: {exc}") from None
            if cell.model not in self.models:
                raise ValueError(f"suite {self.name}: cell {cell.label} names model {cell.model!r}, "
                                 f"not one of the suite's models {', '.join(self.models)}")
        labels = [c.label for c in self.cells]
        if len(set(labels)) != len(labels):
            raise ValueError(f"suite {self.name}: duplicate cells in the grid")

    @property
    def seeds(self) -> range:
        return range(self.first_seed, self.first_seed + self.num_samples)

    def checkpoint(self, model: str) -> str | None:
        return dict(self.checkpoints).get(model)

    def grid(self, model: str) -> list[Cell]:
        return [c for c in self.cells if c.model == model]

    @property
    def extractors(self) -> tuple[str, ...]:
        """The extractors this suite can be scored with: its own, then its fallback."""
        return tuple(e for e in (self.extractor, self.fallback_extractor) if e is not None)

    def select(self, *, num_samples: int | None = None, models: Sequence[str] | None = None,
               solvers: Sequence[str] | None = None, data_dir: str | None = None,
               extractor: str | None = None, batch_size: int | str | None = None,
               checkpoints: dict[str, str] | None = None, reference_file: str | None = None,
               timing_repeats: int | None = None, first_seed: int | None = None,
               bootstrap: int | None = None) -> "Suite":
        """A copy restricted to some models and solvers, or with another sample count (recorded in every row, with
        a note when it is below the suite's default), data folder (image suites whose data is read from disk) or
        extractor (one of :attr:`extractors`)."""
        changes: dict[str, Any] = {}
        if num_samples is not None:
            changes["num_samples"] = int(num_samples)
            if num_samples < self.num_samples:
                changes["notes"] = self.notes + (
                    f"{num_samples} samples, fewer than the suite's default {self.num_samples}: not comparable with "
                    f"default runs or published numbers",)
        if timing_repeats is not None:
            changes["timing_repeats"] = int(timing_repeats)
        if bootstrap is not None:
            changes["bootstrap"] = int(bootstrap)
        if first_seed is not None:
            if first_seed < 0:
                raise ValueError(f"--first-seed must be >= 0, got {first_seed}")
            changes["first_seed"] = int(first_seed)
        if data_dir is not None:
            if not hasattr(self.problem, "data_dir"):
                raise ValueError(f"suite {self.name} does not read data from disk; --data-dir applies to the image "
                                 f"suites that read files (mnist, fashion-mnist, cifar)")
            if getattr(self.problem, "dataset", None) == "digits":
                raise ValueError(f"suite {self.name} uses sklearn's bundled digits; --data-dir does not apply")
            changes["problem"] = dataclasses.replace(self.problem, data_dir=str(data_dir))
        if batch_size == "auto":
            changes["auto_batch"] = True
        elif batch_size is not None:
            changes["batch_size"], changes["auto_batch"] = int(batch_size), False
        if reference_file is not None:
            if self.extractor is None:
                raise ValueError(f"suite {self.name} has no image metrics; --ref-stats applies to image suites")
            changes["reference_file"] = str(reference_file)
        if checkpoints:
            unknown = [m for m in checkpoints if m not in self.models]
            if unknown:
                raise ValueError(f"suite {self.name} has no model {', '.join(map(repr, unknown))} to load a "
                                 f"checkpoint into; its models are: {', '.join(self.models)}")
            changes["checkpoints"] = tuple(sorted({**dict(self.checkpoints), **checkpoints}.items()))
        if extractor is not None:
            if extractor not in self.extractors:
                raise ValueError(f"suite {self.name} is scored with "
                                 f"{' or '.join(self.extractors) or 'no feature extractor'}, not {extractor!r}")
            changes["extractor"], changes["fallback_extractor"] = extractor, None
        cells = self.cells
        if models is not None:
            unknown = [m for m in models if m not in self.models]
            if unknown:
                raise ValueError(f"suite {self.name} has no model {', '.join(map(repr, unknown))}; "
                                 f"its models are: {', '.join(self.models)}")
            changes["models"] = tuple(m for m in self.models if m in models)
            cells = tuple(c for c in cells if c.model in models)
        if solvers is not None:
            used = sorted({c.solver for c in self.cells})
            unknown = [s for s in solvers if s not in used]
            if unknown:
                raise ValueError(f"suite {self.name} has no cells for solver {', '.join(map(repr, unknown))}; "
                                 f"its solvers are: {', '.join(used)}")
            cells = tuple(c for c in cells if c.solver in solvers)
        if not cells:
            raise ValueError(f"suite {self.name}: no cell has model in {list(models or self.models)} and solver in "
                             f"{list(solvers or sorted({c.solver for c in self.cells}))}; nothing to run")
        changes["cells"] = cells
        if "models" in changes:   # checkpoints of models left out are not needed
            changes["checkpoints"] = tuple((m, f) for m, f in changes.get("checkpoints", self.checkpoints)
                                           if m in changes["models"])
        return dataclasses.replace(self, **changes)


SUITES: Registry[Suite] = Registry("suite")


def fixed_grid(model: str, solvers: Sequence[str], steps: Sequence[int]) -> tuple[Cell, ...]:
    return tuple(Cell(model, s, n) for s in solvers for n in steps)
