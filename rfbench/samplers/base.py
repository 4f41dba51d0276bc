"""What every sampler shares: the NFE-counting model wrapper, trajectories, results and the solver registry."""

from __future__ import annotations

import contextlib
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
    rtol, atol). It evaluates ``model(x, t)`` (or ``model.eps``, ``model.denoise``: the model it gets offers only
    these counted calls and the model's data, :class:`CountingModel`) and calls ``callback(i, t, x, v)`` at its
    step points; stochastic solvers also take ``noise`` (``noise(i)``: seeded draws for step i).
    :func:`rfbench.sample` computes the grid, counts the evaluations (rows evaluated over the batch's rows, also
    those that reach the network around the counted calls), refuses options the solver does not take and, for
    fixed-grid solvers, checks the count against ``expected_nfe(steps)``, which is therefore required for them.
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


# What a solver may read from its model besides the counted evaluations: data about the model (its Gaussian path, a
# discrete schedule, the input shape), never a callable that evaluates the network.
MODEL_DATA = ("gaussian_path", "num_timesteps", "alphas_cumprod", "input_shape")


class CountingModel:
    """The model as a solver sees it: counted evaluations, checked outputs, and the model's data, nothing else.

    ``model(x, t)`` accepts t as a float or a (B,) tensor and always passes the model a (B,) tensor of x's dtype.
    ``model.eps(x, timesteps)`` and ``model.denoise(x, t)`` exist where the model has them, counted too; the names
    in :data:`MODEL_DATA` read the model's own attributes. Anything else (the network, ``forward``) is an
    AttributeError, so a solver can evaluate the model only through a counted call.

    NFE counts rows, not calls: :attr:`nfe` is the rows evaluated over ``batch`` (x0's rows), so a call on half
    the batch counts 1/2 and a call on one row is not free. While :func:`rfbench.sample` runs the solver, a forward
    pre-hook on the model's torch module (:meth:`_watching`) also counts the calls of the module that do not come
    through this wrapper (a solver that kept a reference to the network, or dug it out); an evaluation through the
    wrapper is counted once, by the wrapper. What no hook sees: a model that is a plain function (no module), and
    a solver that calls the network's ``forward`` or its submodules directly or computes with its parameters.

    Every output must be a tensor shaped like the input (else :class:`SamplerError`) and finite (else
    :class:`NonFiniteError`); both errors name the call number and the time. An exception from the model's first
    call becomes a :class:`SamplerError` that says what rfbench passed it. ``solver`` and ``steps`` (what
    :func:`rfbench.sample` runs) lead the messages.
    """

    def __init__(self, model: Any, solver: str | None = None, steps: int | None = None, precision: str = "fp32",
                 batch: int | None = None):
        self._model = model
        self._solver, self._steps = solver, steps
        self._precision = precision
        self._batch = batch
        self._calls = 0          # calls through the wrapper: error messages name them
        self._rows = 0           # rows evaluated, through the wrapper or around it (the hook)
        self._quiet = 0          # > 0 while the network runs for the wrapper (or the caller's callback): no hook count
        self._first_failure: SamplerError | None = None   # the error of a failed first call

    @property
    def nfe(self) -> int | float:
        """Model evaluations on the batch: rows evaluated / ``batch`` (an int when whole; the calls when no batch
        was given)."""
        if not self._batch:
            return self._calls
        whole, part = divmod(self._rows, self._batch)
        return whole if part == 0 else self._rows / self._batch

    def _evaluate(self, fn, x: torch.Tensor, t: torch.Tensor) -> Any:
        """``fn(x, t)`` in the run's precision (:mod:`rfbench.samplers.precision`), returned in x's dtype; not
        counted (the trajectory's extra velocities use it too)."""
        if self._precision not in AUTOCAST:     # fp32, tf32: float32 arithmetic, nothing to cast back
            return fn(x, t)
        with evaluation(self._precision, x.device):
            out = fn(x, t)
        return out.to(x.dtype) if isinstance(out, torch.Tensor) else out

    def _counted(self, fn, x: torch.Tensor, t: torch.Tensor, what: str) -> torch.Tensor:
        """One counted evaluation ``fn(x, t)``: its rows counted, the hook quiet meanwhile, its output checked."""
        self._calls += 1
        self._rows += _rows(x, self._batch)
        self._quiet += 1
        try:
            out = self._evaluate(fn, x, t)
        except Exception as exc:
            if self._calls == 1:
                self._first_failure = self._first_call_error(exc, x, t, what)
                raise self._first_failure from exc
            raise
        finally:
            self._quiet -= 1
        return self._check(out, x, t, what)

    def _first_call_error(self, exc: Exception, x: Any, t: Any, what: str) -> SamplerError:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else ""
        return SamplerError(f"{self._lead()}the model's first evaluation ({what}) failed on what rfbench passed it, "
                            f"x {_describe(x)} and {'timesteps' if what == 'eps prediction' else 't'} {_describe(t)} "
                            f"({_time_label(t, what)}): {type(exc).__name__}: {first}")

    def _check(self, out: Any, x: torch.Tensor, t: torch.Tensor, what: str) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise SamplerError(f"{self._lead()}the model's {what} at call {self._calls} ({_time_label(t, what)}) "
                               f"returned {got} for an input of shape {tuple(x.shape)}; it must return a tensor "
                               f"shaped like its input")
        if not bool(torch.isfinite(out).all()):       # one reduction per call; the counts only on failure
            finite = torch.isfinite(out)
            rows = int((~finite.reshape(out.shape[0], -1).all(dim=1)).sum())
            # runs with steps keep the words of sample()'s final check: a results table sees one kind of failure
            lead = (f"{self._solver} (steps={self._steps}) produced non-finite samples: " if self._steps is not None
                    else self._lead())
            plural = "velocities" if what == "velocity" else what + "s"
            raise NonFiniteError(f"{lead}the model returned non-finite {plural} at call {self._calls} "
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
        return self._counted(self._model, x, t, "velocity")

    def __getattr__(self, name: str) -> Any:
        # only for names the class lacks: eps and denoise where the model has them (counted), and the model's data
        model = self.__dict__.get("_model")
        if name in ("eps", "denoise") and callable(getattr(model, name, None)):
            fn = getattr(model, name)
            what = "eps prediction" if name == "eps" else "data prediction"
            return lambda x, t: self._counted(fn, x, t, what)
        if name in MODEL_DATA and hasattr(model, name):
            return getattr(model, name)
        raise AttributeError(f"{name!r}: the model a solver receives offers only counted evaluations, model(x, t) "
                             f"and, where the model has them, model.eps(x, timesteps) and model.denoise(x, t), and "
                             f"the model's data: {', '.join(MODEL_DATA)}")

    @contextlib.contextmanager
    def _watching(self, net: torch.nn.Module | None):
        """Within the block, count the rows of every evaluation of the torch module ``net`` (the model's network,
        :func:`rfbench.protocols.network_module`) that does not come through this wrapper, by a forward pre-hook
        removed on leaving (also on an error). None, or a module that takes no hooks (TorchScript): nothing more is
        counted than the wrapper's calls."""
        handle = None
        if net is not None:
            def pre_hook(module, args, kwargs):
                if self._quiet == 0:
                    self._rows += _rows(next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)),
                                             None), self._batch)
            try:
                handle = net.register_forward_pre_hook(pre_hook, with_kwargs=True)
            except RuntimeError:     # "not supported on ScriptModules"
                handle = None
        try:
            yield self
        finally:
            if handle is not None:
                handle.remove()

    def _uncounted(self, fn: Callable | None) -> Callable | None:
        """``fn`` (the caller's callback or noise) run with the hook quiet: what the caller evaluates there is not
        the solver's work."""
        if fn is None:
            return None

        def quiet(*args, **kwargs):
            self._quiet += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._quiet -= 1
        return quiet


def _rows(x: Any, batch: int | None) -> int:
    """The rows of one evaluation's input x (the whole batch where x has none)."""
    if isinstance(x, torch.Tensor) and x.ndim >= 1:
        return int(x.shape[0])
    return batch or 1


def _describe(value: Any) -> str:
    """A tensor's shape, dtype and device (an error's account of what a model was passed); else its type."""
    if isinstance(value, torch.Tensor):
        return f"{tuple(value.shape)} {value.dtype} on {value.device}"
    return type(value).__name__


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

    x: final samples, shaped like x0. nfe: model evaluations counted on the batch, the rows evaluated over the
    batch's rows (an int for every solver that evaluates the whole batch at each call). stats: solver facts (adaptive
    solvers: accepted and rejected steps). trajectory: when asked for with ``trajectory=True``.
    """

    x: torch.Tensor
    nfe: int | float
    solver: str
    steps: int | None
    stats: dict = field(default_factory=dict)
    trajectory: Trajectory | None = None
