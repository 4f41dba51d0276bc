"""What every sampler shares: the NFE-counting model wrapper, trajectories, results and the solver registry."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from rfbench.protocols import KINDS
from rfbench.registry import Registry
from rfbench.samplers.precision import AUTOCAST, evaluation

# callback(i, t, x, v): called at step i, flow time t, state x; v is the model's velocity at (x, t) when the solver
# has it (ODE solvers), else None.
Callback = Callable[[int, float, torch.Tensor, "torch.Tensor | None"], None]


class SamplerError(RuntimeError):
    """A sampler failed on its input (an adaptive solver that cannot proceed, for example)."""


class NonFiniteError(SamplerError):
    """The samples (or a model evaluation) contain NaN or inf."""


class BudgetExceeded(SamplerError):
    """An adaptive solver spent its ``max_nfe`` model evaluations before reaching t=1."""


@dataclass(frozen=True)
class SolverSpec:
    """A registered solver.

    kind: ``"fixed"`` (uniform grid over [0, 1], takes ``steps``), ``"adaptive"`` (error-controlled, no ``steps``)
    or ``"discrete"`` (a DDPM-family sampler on the model's discrete schedule, takes ``steps``).
    expected_nfe: for fixed-grid solvers, NFE as a function of steps, or of (steps, model) where it depends on the
    model (edm-heun: one evaluation more where the model's path ends short of sigma = 0; ``model`` is None where
    unknown); the counted NFE is checked against it.
    models: the kinds of model it samples (:data:`rfbench.protocols.KINDS`: flow, one-step, diffusion).
    """

    name: str
    fn: Callable[..., tuple[torch.Tensor, dict]]
    kind: str
    order: int | None = None
    stochastic: bool | Callable[[dict], bool] = False
    expected_nfe: Callable[[int], int] | None = None
    description: str = ""
    default_grid: str = "uniform"     # the grid (or, for discrete samplers, the spacing) when none is asked for
    models: tuple[str, ...] = KINDS

    def nfe(self, steps: int, model: Any = None) -> int | None:
        """The NFE the solver must count for ``steps`` on ``model`` (None: it declares none)."""
        if self.expected_nfe is None:
            return None
        if len(inspect.signature(self.expected_nfe).parameters) >= 2:
            return self.expected_nfe(steps, model)
        return self.expected_nfe(steps)

    def is_stochastic(self, options: dict) -> bool:
        return self.stochastic(options) if callable(self.stochastic) else bool(self.stochastic)


SOLVERS: Registry[SolverSpec] = Registry("solver")


SOLVER_KINDS = ("fixed", "adaptive", "discrete")

# the model kinds each kind of solver can sample: a discrete sampler needs a DDPM-style model's schedule
SAMPLES = {"fixed": KINDS, "adaptive": KINDS, "discrete": ("diffusion",)}


def register_solver(name: str, kind: str, *, order: int | None = None, expected_nfe: Callable[[int], int] | None = None,
                    stochastic: bool | Callable[[dict], bool] = False, description: str = "",
                    default_grid: str = "uniform", models: tuple[str, ...] | None = None):
    """Decorator registering a solver function under ``name`` (rfbench's own solvers and plugins' alike).

    The function is ``fn(model, x, *, times, callback=None, **options) -> (x1, stats)`` for ``kind`` "fixed"
    (``times``: the grid's N + 1 increasing flow times, uniform unless the caller asks for another grid),
    ``fn(model, x, *, timesteps, ...)`` for "discrete" (a DiffusionModel's integer timesteps, in sampling order),
    and ``fn(model, x, *, callback=None, **options)`` for "adaptive" solvers (error-controlled; options such as
    rtol, atol). It evaluates ``model(x, t)`` (or ``model.eps``) and calls ``callback(i, t, x, v)`` at its step
    points; stochastic solvers also take ``noise`` (``noise(i)``: seeded draws for step i). :func:`rfbench.sample`
    computes the grid, counts the evaluations, refuses options the solver does not take and, for fixed-grid
    solvers, checks the count against ``expected_nfe(steps)``, which is therefore required for them.
    ``default_grid``: the grid used when the caller names none (edm-heun: karras). ``models``: the kinds of model
    the solver samples, some of flow, one-step and diffusion (default: every kind its ``kind`` can: all for ODE
    solvers, diffusion for discrete ones); a run adds it only to models of those kinds, and :func:`rfbench.sample`
    refuses a model of another kind."""
    if kind not in SOLVER_KINDS:
        raise ValueError(f"solver {name}: kind must be one of {', '.join(SOLVER_KINDS)}, got {kind!r}")
    models = _check_models(name, kind, models)
    if kind == "fixed" and not callable(expected_nfe):
        raise ValueError(f"solver {name}: a fixed-grid solver must declare expected_nfe(steps), the number of model "
                         f"evaluations it makes, so that rfbench can check the count")
    if order is not None and (isinstance(order, bool) or not isinstance(order, int) or order < 1):
        raise ValueError(f"solver {name}: order must be a positive integer or None, got {order!r}")

    def deco(fn):
        if not callable(fn):
            raise TypeError(f"solver {name}: register_solver decorates a function, got {type(fn).__name__}")
        params = inspect.signature(fn).parameters
        positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        grid = {"fixed": ["times"], "discrete": ["timesteps"], "adaptive": []}[kind]
        needed = grid + ["callback"] + (["noise"] if stochastic else [])
        missing = [p for p in needed if p not in params]
        if len(positional) < 2 or missing:
            raise TypeError(f"solver {name}: the function must be fn(model, x, *, "
                            f"{''.join(g + ', ' for g in grid)}callback=None"
                            f"{', noise=None' if stochastic else ''}, **options); "
                            + (f"it lacks {', '.join(missing)}" if missing else "it takes fewer than two positional "
                               "arguments (model, x)"))
        if kind == "fixed":
            try:
                one = (expected_nfe(1, None) if len(inspect.signature(expected_nfe).parameters) >= 2
                       else expected_nfe(1))
            except Exception as exc:
                raise ValueError(f"solver {name}: expected_nfe(1) failed: {type(exc).__name__}: {exc}") from None
            if isinstance(one, bool) or not isinstance(one, int) or one < 1:
                raise ValueError(f"solver {name}: expected_nfe(steps) must return a positive integer; "
                                 f"expected_nfe(1) = {one!r}")
        if kind != "adaptive":
            from rfbench.samplers.grids import check_grid      # grids needs the model paths; base stays light
            try:
                check_grid(kind, default_grid, None)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"solver {name}: default_grid {default_grid!r} does not fit a {kind} solver "
                                 f"(register a custom grid before the solver that uses it): {exc}") from None
        SOLVERS.add(name, SolverSpec(name=name, fn=fn, kind=kind, order=order, stochastic=stochastic,
                                     expected_nfe=expected_nfe, description=description, default_grid=default_grid,
                                     models=models))
        return fn

    return deco


def _check_models(name: str, kind: str, models) -> tuple[str, ...]:
    """``register_solver``'s ``models`` as a tuple of model kinds (None: every kind a ``kind`` solver samples)."""
    possible = SAMPLES[kind]
    if models is None:
        return possible
    given = (models,) if isinstance(models, str) else models
    try:
        given = tuple(dict.fromkeys(given))
    except TypeError:
        given = ()
    if not given or not all(isinstance(m, str) and m in possible for m in given):
        raise ValueError(f"solver {name}: models must be a tuple of model kinds, some of {', '.join(possible)} (what a "
                         f"{kind} solver samples), got {models!r}")
    return given


class CountingModel:
    """Wraps a model, counts its evaluations (one call on a batch is one NFE) and checks every output.

    ``model(x, t)`` accepts t as a float or a (B,) tensor and always passes the model a (B,) tensor of x's dtype.
    ``model.eps(x, timesteps)`` and ``model.denoise(x, t)`` are counted too. Every output must be a tensor shaped
    like the input (else :class:`SamplerError`) and finite (else :class:`NonFiniteError`); both errors name the
    call number and the time. ``solver`` and ``steps`` (what :func:`rfbench.sample` runs) lead the messages.
    """

    def __init__(self, model: Any, solver: str | None = None, steps: int | None = None, precision: str = "fp32"):
        self.model = model
        self.nfe = 0
        self._solver, self._steps = solver, steps     # private: the model's own attributes pass through
        self._precision = precision

    def _evaluate(self, fn, x: torch.Tensor, t: torch.Tensor) -> Any:
        """``fn(x, t)`` in the run's precision (:mod:`rfbench.samplers.precision`), returned in x's dtype; not
        counted (the trajectory's extra velocities use it too)."""
        if self._precision not in AUTOCAST:     # fp32, tf32: float32 arithmetic, nothing to cast back
            return fn(x, t)
        with evaluation(self._precision, x.device):
            out = fn(x, t)
        return out.to(x.dtype) if isinstance(out, torch.Tensor) else out

    def _check(self, out: Any, x: torch.Tensor, t: torch.Tensor, what: str) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise SamplerError(f"{self._lead()}the model's {what} at call {self.nfe} ({_time_label(t, what)}) "
                               f"returned {got} for an input of shape {tuple(x.shape)}; it must return a tensor "
                               f"shaped like its input")
        if not bool(torch.isfinite(out).all()):       # one reduction per call; the counts only on failure
            finite = torch.isfinite(out)
            rows = int((~finite.reshape(out.shape[0], -1).all(dim=1)).sum())
            # runs with steps keep the words of sample()'s final check: a results table sees one kind of failure
            lead = (f"{self._solver} (steps={self._steps}) produced non-finite samples: " if self._steps is not None
                    else self._lead())
            plural = "velocities" if what == "velocity" else what + "s"
            raise NonFiniteError(f"{lead}the model returned non-finite {plural} at call {self.nfe} "
                                 f"({_time_label(t, what)}): {rows} of {out.shape[0]} rows contain NaN or inf "
                                 f"({int((~finite).sum())} of {out.numel()} values)")
        return out

    def _lead(self) -> str:
        if self._solver is None:
            return ""
        return f"{self._solver}{'' if self._steps is None else f' (steps={self._steps})'}: "

    def __call__(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or t.ndim == 0:
            t = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        self.nfe += 1
        return self._check(self._evaluate(self.model, x, t), x, t, "velocity")

    def eps(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self._check(self._evaluate(self.model.eps, x, timesteps), x, timesteps, "eps prediction")

    def __getattr__(self, name: str) -> Any:
        if name == "denoise":        # the data prediction, counted (absent when the model has none)
            denoise = getattr(self.model, "denoise")

            def counted(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                self.nfe += 1
                return self._check(self._evaluate(denoise, x, t), x, t, "data prediction")
            return counted
        return getattr(self.model, name)


def _time_label(t: Any, what: str) -> str:
    """The time of a model call in an error message: t=0.5 (flow time) or timestep 750 (a DDPM timestep); the
    range where rows differ."""
    name = "timestep " if what == "eps prediction" else "t="
    values = torch.as_tensor(t).detach().reshape(-1).to(torch.float64).cpu()
    if values.numel() == 0:
        return f"{name}?"
    lo, hi = float(values.min()), float(values.max())
    return f"{name}{lo:.6g}" if lo == hi else f"{name}{lo:.6g}..{hi:.6g}"


@dataclass
class Trajectory:
    """States along a sampler's path. times: (K+1,) flow times; states: (K+1, B, ...); velocities: (K, B, ...),
    the model's velocity at the start of each step (None for discrete samplers)."""

    times: torch.Tensor
    states: torch.Tensor
    velocities: torch.Tensor | None = None


class TrajectoryRecorder:
    """A callback that keeps every (t, x, v) it is given, on the CPU."""

    def __init__(self):
        self.times: list[float] = []
        self.states: list[torch.Tensor] = []
        self.velocities: list[torch.Tensor | None] = []

    def __call__(self, i: int, t: float, x: torch.Tensor, v: torch.Tensor | None) -> None:
        self.times.append(float(t))
        self.states.append(x.detach().cpu())
        self.velocities.append(None if v is None else v.detach().cpu())

    def build(self, velocity_fn: Callable[[torch.Tensor, float], torch.Tensor] | None) -> tuple[Trajectory, int]:
        """The Trajectory; missing velocities at step starts are filled with ``velocity_fn`` (count returned)."""
        vels = self.velocities[:-1]
        extra = 0
        if velocity_fn is not None:
            for k, v in enumerate(vels):
                if v is None:
                    vels[k] = velocity_fn(self.states[k], self.times[k]).detach().cpu()
                    extra += 1
        velocities = torch.stack(vels) if vels and all(v is not None for v in vels) else None
        return Trajectory(torch.tensor(self.times, dtype=torch.float64), torch.stack(self.states), velocities), extra


@dataclass
class SampleResult:
    """The output of :func:`rfbench.sample`.

    x: final samples, shaped like x0. nfe: model evaluations counted on the batch. stats: solver facts (adaptive
    solvers: accepted and rejected steps). trajectory: when asked for with ``trajectory=True``.
    """

    x: torch.Tensor
    nfe: int
    solver: str
    steps: int | None
    stats: dict = field(default_factory=dict)
    trajectory: Trajectory | None = None
