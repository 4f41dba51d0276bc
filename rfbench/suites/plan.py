"""What one run does with a suite: the run's options (:class:`RunConfig`) applied to the suite's definition give the
:class:`Plan` the sweep executes. Every check that can be made before any work is made here, and each problem is
one line naming the option, the value and what is allowed.

A run can narrow a suite (``models``, ``solvers``, fewer samples) and widen it: a model registered by name
(``MODELS``) or given as a file (``--model NAME=PATH``) joins the suite with the cells of the suite's first model
of its kind; ``solvers`` keeps only the cells of the solvers the suite sweeps, and adds a registered solver the
suite does not sweep to every model whose kind it takes (``register_solver(models=...)``: by default flows and
diffusion models for ODE solvers, diffusion models for discrete ones; one-step models take no added solver), saying
once which models it leaves out, at the step counts the model already uses for that kind of solver (else the
suite's ``steps``); ``steps`` replaces the step counts of fixed-grid and discrete solvers (one-step models keep
their single step); ``grids`` puts each fixed-grid cell on each time grid listed, and each discrete cell on each
timestep spacing listed (:mod:`rfbench.samplers.grids`), and without ``grids`` every cell keeps its own grid (a
suite's cells theirs, a solver the run adds its default); ``solver_options`` set solver options on the run's cells
(:mod:`rfbench.suites.options`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from rfbench.data.registry import DATASETS
from rfbench.metrics import METRICS
from rfbench.models.cache import PlanningCache, Training
from rfbench.models.sources import MODELS, LoadContext, ModelFile, ModelSource, Recipe
from rfbench.models.speed import check_compile_mode
from rfbench.samplers import SOLVERS, models_taken
from rfbench.samplers.grids import GRIDS, SIGMA_GRIDS, SPACINGS, check_grid
from rfbench.samplers.precision import check_precision
from rfbench.suites.base import Cell, Suite, SuiteModel, applies, check_cells
from rfbench.suites.options import parse_solver_options, with_options
from rfbench.suites.shards import shard_plan
from rfbench.threads import check_threads


class InputError(ValueError):
    """Problems found before any work, one line each (a missing data folder, checkpoint or file, a model whose
    shape does not fit the suite)."""

    def __init__(self, lines):
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


def parse_shard(value) -> tuple[int, int] | None:
    """``--shard K/N`` (the string "K/N", or (K, N)) as (K, N), 1 <= K <= N; None stays None."""
    if value is None:
        return None
    text = "/".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
    parts = text.split("/")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts) and 1 <= int(parts[0]) <= int(parts[1]):
        return int(parts[0]), int(parts[1])
    raise ValueError(f"--shard (shard=) takes K/N with 1 <= K <= N (e.g. 2/8: the second of 8 jobs), got {text!r}")


@dataclass(frozen=True)
class RunConfig:
    """A run's options; none of them is part of a suite's definition, and every one that changes numbers is
    recorded in the rows (sample count, seeds, batch size, extractor, reference, model sources)."""

    models: tuple[str, ...] | None = None               # suite models, or registered models (MODELS) to add
    add_models: tuple[tuple[str, ModelSource], ...] = ()  # --model NAME=PATH: added, or a suite model's source
    checkpoints: tuple[tuple[str, str], ...] = ()        # --checkpoint MODEL=PATH: a suite model read from a file
    solvers: tuple[str, ...] | None = None
    steps: tuple[int, ...] | None = None
    grids: tuple[str, ...] | None = None                 # time grids / spacings of fixed-grid and discrete cells
    num_samples: int | None = None
    first_seed: int | None = None
    batch_size: int | str | None = None                  # samples per sampler call, "auto", or None (the suite's)
    repeats: int | None = None                           # timed runs per cell (wall_clock_s: their median; None:
    #                                                      the suite's, 3 on the toy suites, 1 on the image suites)
    bootstrap: int | None = None
    extractor: str | None = None
    extractor_options: tuple[tuple[str, Any], ...] = ()  # inception: weights, mode
    data_dir: str | None = None
    reference_file: str | None = None
    device: str | None = None                            # None or "auto": cuda when there is one
    cache_dir: str | None = None
    resume: bool = True
    save_samples: bool = False
    # options for the run's cells: (solver or None for every solver that takes the option, option, value)
    solver_options: tuple[tuple[str | None, str, Any], ...] = ()
    threads: int | None = None                           # CPU threads of torch; None: rfbench.threads decides
    precision: str = "fp32"                              # network evaluations: fp32, tf32, bf16, fp16 (--dtype)
    compile: str | None = None                           # torch.compile mode of the networks (--compile)
    channels_last: bool = False                          # networks in channels-last memory (--channels-last)
    shard: tuple[int, int] | str | None = None           # --shard K/N: this job's share of the cells (shard_cells)

    def __post_init__(self):
        check_precision(self.precision)
        object.__setattr__(self, "shard", parse_shard(self.shard))
        check_compile_mode(self.compile)
        object.__setattr__(self, "solver_options", parse_solver_options(self.solver_options))
        object.__setattr__(self, "threads", check_threads(self.threads))
        for name in ("models", "solvers", "grids"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                    raise TypeError(f"--{name} ({name}=) must be a list of names, got {value!r}")
                object.__setattr__(self, name, tuple(value))
        if self.steps is not None:
            steps = (self.steps,) if isinstance(self.steps, int) else tuple(self.steps)
            if not steps or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in steps):
                raise ValueError(f"--steps (steps=) must be integers >= 1, got {list(steps)}")
            object.__setattr__(self, "steps", tuple(dict.fromkeys(steps)))
        if self.num_samples is not None and self.num_samples < 2:
            raise ValueError(f"--num-samples must be >= 2, got {self.num_samples}")
        if self.first_seed is not None and self.first_seed < 0:
            raise ValueError(f"--first-seed must be >= 0, got {self.first_seed}")
        if self.repeats is not None and self.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {self.repeats}")
        if self.bootstrap is not None and (self.bootstrap < 0 or self.bootstrap == 1):
            raise ValueError(f"--bootstrap must be 0 (off) or >= 2 replicates, got {self.bootstrap}")
        if self.batch_size is not None and self.batch_size != "auto" and (
                isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ValueError(f"--batch-size takes an integer >= 1 or auto, got {self.batch_size!r}")


@dataclass(frozen=True)
class Plan:
    """A suite as one run executes it: its models (sources resolved), cells, sample count, seeds, batch size,
    extractor and reference, and the notes every row carries."""

    suite: Suite                 # the definition (with the run's data folder)
    models: tuple[SuiteModel, ...]
    cells: tuple[Cell, ...]
    metrics: tuple[str, ...]
    num_samples: int
    first_seed: int
    batch_size: int | None
    auto_batch: bool
    repeats: int
    bootstrap: int
    extractor: str | None
    fallback_extractor: str | None
    reference_file: str | None
    save_samples: bool = False
    notes: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()   # what the run leaves out of what it was asked for, said once before it starts
    threads: int | None = None   # --threads (None: rfbench.threads decides per model)
    precision: str = "fp32"      # --dtype: the network evaluations' arithmetic
    # per recipe model, what the cache lacked when the plan was made: the networks to train and the reflow pairs to
    # generate (:func:`plan_training`; None: its planning pass failed, and the run says why in the model's rows)
    training: tuple[tuple[str, tuple[Training, ...] | None], ...] = ()
    cache_dir: str | None = None    # --cache the plan's training was read from (None: the default cache)

    @property
    def trains(self) -> bool:
        """Whether the run will train a model or make reflow pairs (write into the cache); a recipe whose planning
        pass failed is taken to train."""
        return any(jobs is None or jobs for _, jobs in self.training)
    shard: tuple[int, int] | None = None   # (K, N): the cells and models are shard K's of N (suites.shards)
    whole: Plan | None = None    # a shard's unsharded plan, whose table every shard gathers; None when unsharded

    @property
    def name(self) -> str:
        return self.suite.name

    @property
    def version(self) -> int:
        return self.suite.version

    @property
    def problem(self):
        return self.suite.problem

    @property
    def seeds(self) -> range:
        return range(self.first_seed, self.first_seed + self.num_samples)

    @property
    def independent_row(self) -> bool:
        """Whether this run computes the suite's independent row (a sharded run: shard 1 does)."""
        return self.suite.independent_row and (self.shard is None or self.shard[0] == 1)

    @property
    def unsharded(self) -> Plan:
        """The plan of every shard together (this plan when it is not a shard)."""
        return self.whole if self.whole is not None else self

    @property
    def straightness_steps(self) -> int:
        return self.suite.straightness_steps

    @property
    def straightness_samples(self) -> int | None:
        return self.suite.straightness_samples

    @property
    def solver_error_samples(self) -> int | None:
        return self.suite.solver_error_samples

    @property
    def quality_metric(self) -> str:
        return self.suite.quality_metric

    @property
    def extractors(self) -> tuple[str, ...]:
        return tuple(e for e in (self.extractor, self.fallback_extractor) if e is not None)

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    def model(self, name: str) -> SuiteModel:
        return next(m for m in self.models if m.name == name)

    def grid(self, model: str) -> list[Cell]:
        return [c for c in self.cells if c.model == model]


def make_plan(suite: Suite, config: RunConfig = RunConfig()) -> Plan:
    """Apply a run's options to a suite; every inconsistency is a ValueError naming the option."""
    problem = suite.problem
    if config.data_dir is not None:
        dataset = getattr(problem, "dataset", None)
        if not hasattr(problem, "data_dir") or dataset is None:
            raise ValueError(f"suite {suite.name} does not read data from disk; --data-dir applies to the image suites "
                             f"that read files (mnist, fashion-mnist, cifar)")
        if DATASETS[dataset].bundled:
            raise ValueError(f"suite {suite.name} uses {dataset}, which is bundled with its package; --data-dir does "
                             f"not apply")
        problem = dataclasses.replace(problem, data_dir=str(config.data_dir))
    definition = dataclasses.replace(suite, problem=problem) if problem is not suite.problem else suite
    extractor, fallback = suite.extractor, suite.fallback_extractor
    if config.extractor is not None:
        if not suite.extractors:
            raise ValueError(f"--extractor {config.extractor}: suite {suite.name} has no image metrics, so no "
                             f"feature extractor")
        if config.extractor not in suite.extractors:
            raise ValueError(f"--extractor {config.extractor}: suite {suite.name} is scored with "
                             f"{' or '.join(suite.extractors)}, not {config.extractor!r}")
        extractor, fallback = config.extractor, None
    if config.reference_file is not None and suite.extractor is None:
        raise ValueError(f"suite {suite.name} has no image metrics; --ref-stats applies to image suites")
    models = _models(suite, config)
    cells: tuple[Cell, ...] = ()
    for model in models:
        cells += _cells(suite, model, config)
    skipped = _not_taken(suite, models, config)
    if config.steps is not None and not any(SOLVERS[c.solver].kind != "adaptive" and models_kind(models, c.model)
                                            != "one-step" for c in cells):
        raise ValueError(f"--steps applies to fixed-grid and discrete solvers; no cell of this run has one (solvers: "
                         f"{', '.join(sorted({c.solver for c in cells})) or 'none'})")
    if config.grids is not None:
        cells = _gridded(cells, config.grids, models)
    if not cells:
        asked = list(config.solvers or sorted({c.solver for c in suite.cells}))
        raise ValueError(f"suite {suite.name}: no cell has model in {[m.name for m in models]} and solver in "
                         f"{asked}; nothing to run" + "".join(f" ({line})" for line in skipped))
    cells = with_options(cells, config.solver_options)
    check_cells(suite.name, cells, [m.name for m in models])
    cells = _with_origins(suite, cells, config)
    models = tuple(m for m in models if any(c.model == m.name for c in cells))   # models left without cells: unused
    num_samples = suite.num_samples if config.num_samples is None else int(config.num_samples)
    notes: tuple[str, ...] = ()
    if num_samples < suite.num_samples:
        notes += (f"{num_samples} samples, fewer than the suite's default {suite.num_samples}: not comparable with "
                  f"default runs or published numbers",)
    auto = config.batch_size == "auto"
    batch = suite.batch_size if config.batch_size in (None, "auto") else int(config.batch_size)
    plan = Plan(suite=definition, models=models, cells=cells, metrics=suite.metrics, num_samples=num_samples,
                first_seed=suite.first_seed if config.first_seed is None else int(config.first_seed),
                batch_size=batch, auto_batch=auto,
                repeats=suite.repeats if config.repeats is None else int(config.repeats),
                bootstrap=suite.bootstrap if config.bootstrap is None else int(config.bootstrap),
                extractor=extractor, fallback_extractor=fallback,
                reference_file=None if config.reference_file is None else str(config.reference_file),
                save_samples=config.save_samples, notes=notes, skipped=skipped,
                threads=config.threads,
                precision=config.precision, training=plan_training(definition, models, config.cache_dir),
                cache_dir=None if config.cache_dir is None else str(config.cache_dir))
    return plan if config.shard is None else shard_plan(plan, config.shard)


def plan_training(suite: Suite, models, cache_dir=None) -> tuple[tuple[str, tuple[Training, ...] | None], ...]:
    """What each recipe model would train that the cache (``cache_dir``, else the default) lacks: one planning pass
    of its recipe through a :class:`~rfbench.models.cache.PlanningCache`, which trains nothing and builds untrained
    networks. A network or pair set that several models need (1-RF's, for 2-RF and 3-RF) is listed under each (a
    reader counts it once). The input checks, ``--dry-run`` and the progress bar all read this one pass."""
    planning = PlanningCache(cache_dir)      # None: the default cache, as Cache takes it
    out = []
    for model in models:
        if not isinstance(model.source, Recipe):
            continue
        planning.to_train = []
        try:
            model.source.load(LoadContext(suite, planning, torch.device("cpu"), lambda msg: None))
        except Exception:       # the real load says what is wrong, in the model's rows
            out.append((model.name, None))
            continue
        out.append((model.name, tuple(planning.to_train)))
    return tuple(out)


def models_kind(models, name: str) -> str:
    return next(m.kind for m in models if m.name == name)


def _models(suite: Suite, config: RunConfig) -> tuple[SuiteModel, ...]:
    added = dict(config.add_models)
    checkpoints = dict(config.checkpoints)
    unknown = [m for m in checkpoints if m not in suite.model_names]
    if unknown:
        raise ValueError(f"suite {suite.name} has no model {', '.join(map(repr, unknown))} to load a checkpoint "
                         f"into; its models are: {', '.join(suite.model_names)}")
    if config.models is None:
        names = list(suite.model_names)
    else:   # the suite's own in the suite's order, then the others in the order given
        names = [m for m in suite.model_names if m in config.models]
        names += [m for m in config.models if m not in suite.model_names]
    # a model given as a file joins the run; a suite model given a file stays subject to --models
    names += [n for n in added if n not in names and n not in suite.model_names]
    out = []
    for name in dict.fromkeys(names):
        if name in added:
            source = added[name]
            if name in suite.model_names and isinstance(source, ModelFile) and source.explicit_kind is None:
                source = _claiming(suite.model(name).source.with_file(source.path), name)   # its flavor, network
            out.append(SuiteModel(name, source))
        elif name in suite.model_names:
            model = suite.model(name)
            out.append(SuiteModel(name, _claiming(model.source.with_file(checkpoints[name]), name))
                       if name in checkpoints else model)
        elif name in MODELS:
            out.append(SuiteModel(name, MODELS[name]))
        else:
            registered = f"; registered models: {', '.join(MODELS.names())}" if len(MODELS) else ""
            raise ValueError(f"suite {suite.name} has no model {name!r} and no model of that name is registered; its "
                             f"models are: {', '.join(suite.model_names)}{registered} (or give a file with --model "
                             f"{name}=PATH)")
    return tuple(out)


def _claiming(source, name: str):
    """A file given for the suite's model ``name`` is checked to be that model (:meth:`ModelFile.check`)."""
    return source.claiming(name) if isinstance(source, ModelFile) else source


def _cells(suite: Suite, model: SuiteModel, config: RunConfig) -> tuple[Cell, ...]:
    """The cells of one model in this run: the suite's own (or, for a model the run adds, those of the suite's first
    model of its kind), narrowed or widened by the run's solvers, with the run's step counts."""
    if model.name in suite.model_names and model.kind == suite.model(model.name).kind:
        base = suite.grid(model.name)
    else:   # a model the run adds, or a suite model given as a model of another kind: the cells of its kind
        base = [c.for_model(model.name) for c in suite.template(model.kind)]
        if not base and config.solvers is None:
            raise ValueError(f"suite {suite.name} has no {model.kind} model whose cells {model.name} could take; name "
                             f"the solvers with --solvers (and --steps)")
    cells = list(base)
    if config.solvers is not None:
        for solver in config.solvers:
            if solver not in SOLVERS:
                raise ValueError(f"--solvers {solver}: {SOLVERS.unknown_message(solver)}")
        cells = [c for c in base if c.solver in config.solvers]
        present = {c.solver for c in suite.cells}    # a solver the suite sweeps narrows; another one is added
        for solver in config.solvers:
            if solver in present or not applies(solver, model.kind):
                continue
            kind = SOLVERS[solver].kind
            if kind == "adaptive":
                cells.append(Cell(model.name, solver))
                continue
            counts = config.steps or tuple(sorted({c.steps for c in base if SOLVERS[c.solver].kind == kind})) \
                or suite.default_steps(kind)
            if not counts:
                raise ValueError(f"--solvers {solver}: {model.name} has no {kind} cells in suite {suite.name} to take "
                                 f"step counts from; pass --steps")
            cells += [Cell(model.name, solver, n) for n in counts]
    if config.steps is not None and model.kind != "one-step":
        stepped = []
        for cell in cells:
            if SOLVERS[cell.solver].kind == "adaptive":
                stepped.append(cell)
            else:
                stepped += [Cell(cell.model, cell.solver, n, cell.options, cell.grid) for n in config.steps]
        cells = list(dict.fromkeys(stepped))
    return tuple(cells)


def _not_taken(suite: Suite, models, config: RunConfig) -> tuple[str, ...]:
    """One line per solver the run adds (``--solvers``, one the suite does not sweep) naming the run's models it gets
    no cells on because it does not take their kind (``register_solver(models=...)``); one-step models, which take
    no added solver, are not listed."""
    present = {c.solver for c in suite.cells}
    lines = []
    for solver in dict.fromkeys(config.solvers or ()):
        left = [f"{m.name} ({m.kind})" for m in models if m.kind != "one-step" and m.kind not in SOLVERS[solver].models]
        if solver not in present and left:
            lines.append(f"--solvers {solver}: {models_taken(solver)}; not run on {', '.join(left)}")
    return tuple(lines)


def _with_origins(suite: Suite, cells: tuple[Cell, ...], config: RunConfig) -> tuple[Cell, ...]:
    """Each cell marked "suite" when it is one of the suite's own cells (same model, solver, steps, options and
    grid), else "run (...)" with the run's choices that made it: the suite's recorded baselines speak only for the
    former."""
    def same(cell: Cell) -> tuple:
        return tuple((k, v) for k, v in cell.fields().items() if k != "cell_origin")
    own = {same(c) for c in suite.cells}
    chosen = []
    if config.solvers is not None:
        chosen.append("--solvers " + " ".join(config.solvers))
    if config.steps is not None:
        chosen.append("--steps " + " ".join(map(str, config.steps)))
    if config.grids is not None:
        chosen.append("--grids " + " ".join(config.grids))
    for solver, key, value in config.solver_options:
        chosen.append(f"--solver-option {'' if solver is None else solver + ':'}{key}={value}")
    run = f"run ({'; '.join(chosen)})" if chosen else "run"
    added = f"run (added model{''.join('; ' + c for c in chosen)})"
    return tuple(c if same(c) in own else dataclasses.replace(c, origin=run if c.model in suite.model_names else added)
                 for c in cells)


def _gridded(cells: tuple[Cell, ...], grids: tuple[str, ...], models) -> tuple[Cell, ...]:
    """Each fixed-grid and discrete cell on each of ``grids`` that applies to its solver (time grids to fixed-grid
    solvers, timestep spacings to discrete ones); adaptive cells and one-step models as they are. A solver that
    declares its own default grid (edm-heun: karras, deis: time_uniform:rho=2, which start at a finite sigma) takes
    only the asked grids of that family or of the others that start there (``SIGMA_GRIDS``: karras:rho=5,
    time_uniform, gits, ...) and otherwise keeps its cell as it is: the others start where it cannot."""
    usable: dict[str, list[str]] = {"fixed": [], "discrete": []}
    for grid in grids:
        fits = []
        for kind in usable:
            try:
                check_grid(kind, grid, None)
                fits.append(kind)
            except (KeyError, ValueError):
                pass
        if not fits:
            raise ValueError(f"--grids {grid}: not a time grid ({', '.join(GRIDS.names())}, with options such as "
                             f"karras:rho=5) nor a timestep spacing ({', '.join(SPACINGS)})")
        for kind in fits:
            usable[kind].append(grid)
    out: list[Cell] = []
    own_grids: dict[str, str] = {}
    for cell in cells:
        kind = SOLVERS[cell.solver].kind
        if kind == "adaptive" or models_kind(models, cell.model) == "one-step" or not usable[kind]:
            out.append(cell)
            continue
        own = SOLVERS[cell.solver].default_grid
        family = {own.split(":")[0], *SIGMA_GRIDS}
        fitting = usable[kind] if own == "uniform" else [g for g in usable[kind] if g.split(":")[0] in family]
        if own != "uniform":
            own_grids[cell.solver] = own
        out += [Cell(cell.model, cell.solver, cell.steps, cell.options, grid) for grid in fitting] or [cell]
    if not any(c.grid is not None for c in out):
        raise ValueError(f"--grids {' '.join(grids)}: no cell of this run takes them (time grids apply to fixed-grid "
                         f"solvers, spacings to discrete ones"
                         + "".join(f"; {solver} takes only {grid.split(':')[0]} and the other grids from a finite "
                                   f"sigma ({', '.join(SIGMA_GRIDS)})" for solver, grid in own_grids.items()) + ")")
    return tuple(dict.fromkeys(out))


def metric_columns(plan: Plan) -> list[str]:
    return [col for name in plan.metrics for col in METRICS[name].columns]
