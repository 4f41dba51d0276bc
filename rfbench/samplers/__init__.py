"""One entry point over every solver: :func:`sample`.

Solvers live in a registry (``SOLVERS``); each is a plain function ``fn(model, x, *, times|timesteps?, callback,
...)``. ``sample`` checks the input once for all of them, wraps the model to count evaluations, supplies seeded noise to
stochastic samplers, records trajectories on request, and refuses options a solver does not take.
"""

from __future__ import annotations

import inspect
import operator
import reprlib
from typing import Any, Sequence

import numpy as np
import torch

from rfbench.models.labels import seed_classes, seeded, unbound_error
from rfbench.models.paths import path_of
from rfbench.noise import StepNoise
from rfbench.protocols import is_diffusion_model, network_module, stated_kind
from rfbench.registry import describe_origin
from rfbench.samplers import discrete, exponential, multistep, ode, stochastic  # noqa: F401  (registers the solvers)
from rfbench.samplers.grids import GRIDS, check_grid, discrete_timesteps, register_grid, time_grid
from rfbench.samplers.precision import PRECISIONS, check_precision, float32_mode
from rfbench.samplers.base import (SOLVER_KINDS, SOLVERS, BudgetExceeded, CountingModel, NonFiniteError, SamplerError,
                                   SampleResult, SolverSpec, Trajectory, TrajectoryRecorder, register_solver)
from rfbench.training.counting import solving

__all__ = ["sample", "check_call", "solver_options", "models_taken", "register_solver", "register_grid", "GRIDS",
           "SOLVER_KINDS", "SOLVERS", "SampleResult",
           "Trajectory", "SolverSpec", "SamplerError", "NonFiniteError", "BudgetExceeded", "CountingModel",
           "is_diffusion_model", "PRECISIONS"]

_RESERVED = {"steps", "times", "timesteps", "callback", "noise"}


def solver_options(solver: str) -> list[str]:
    """The options a solver takes: its keyword parameters after (model, x), but for the grid (times, timesteps),
    callback and noise, which :func:`sample` supplies."""
    params = list(inspect.signature(SOLVERS[solver].fn).parameters.values())
    named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    positional = [p for p in named if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:2]
    return [p.name for p in named if p not in positional and p.name not in _RESERVED]


def solver_defaults(solver: str) -> dict[str, Any]:
    """Each option of a solver with its default value (``inspect.Parameter.empty`` when it has none)."""
    params = inspect.signature(SOLVERS[solver].fn).parameters
    return {name: params[name].default for name in solver_options(solver)}


def sample(model: Any, x0: torch.Tensor, solver: str, steps: int | None = None, *, grid: Any = None,
           trajectory: bool = False, callback=None, seeds: Sequence[int] | None = None, noise=None,
           precision: str = "fp32", **options: Any) -> SampleResult:
    """Integrate from x0 (t=0, the source) to t=1 (data) with a registered solver.

    Args:
        model: a flow ``model(x, t) -> v`` with x (B, ...) and t (B,) in [0, 1], or a
            :class:`rfbench.models.DiffusionModel` (ODE solvers then integrate its probability-flow ODE).
        x0: initial points, shape (B, ...); draw them with :func:`rfbench.noise.initial`.
        solver: a name in ``SOLVERS`` (euler, heun, midpoint, rk4, rk45, dopri5, ddim, ddpm, dpm++2m, dpm++3m,
            unipc, edm-heun, euler-ancestral, dpm++2m-sde, ipndm, deis, and any a plugin registers).
        steps: number of steps for fixed-grid and discrete solvers (>= 1); None for adaptive ones.
        grid: where the steps go (:mod:`rfbench.samplers.grids`): for fixed-grid solvers a grid name ("uniform",
            the default but for edm-heun's karras, "quadratic", "logsnr", "karras", "karras:rho=5", or a registered
            one) or a sequence of
            flow times from its first entry to its last (steps = len(grid) - 1; a grid that starts at t0 > 0 starts
            from the state sigma(t0) x0, :func:`start_state`); for
            discrete samplers a spacing ("uniform", "leading", "linspace", "trailing") or a sequence of the model's
            integer timesteps in sampling order. None for adaptive solvers.
        trajectory: also return the states (and, for ODE solvers, the velocities) at every step point.
        callback: ``callback(i, t, x, v)`` at every step point.
        seeds: one seed per row of x0, for the per-step noise of stochastic samplers (or pass ``noise``, a callable
            ``noise(i) -> tensor like x0`` for step i), and for the class of each row of a model that draws its
            classes from the seeds (:mod:`rfbench.models.labels`; such a model needs them with every solver).
        precision: the network evaluations' arithmetic: fp32, tf32 (CUDA's TensorFloat-32), bf16 or fp16 (autocast);
            the solver's state and steps stay in x0's dtype (:mod:`rfbench.samplers.precision`).
        **options: solver options (rk45/dopri5: rtol, atol, max_nfe; ddim, euler-ancestral, dpm++2m-sde: eta;
            edm-heun: s_churn, s_tmin, s_tmax, s_noise). Unknown options are an error.

    Returns:
        SampleResult with ``.x`` (shaped like x0) and ``.nfe``, the model evaluations counted on the batch: rows
        evaluated over x0's rows, through the counted model the solver gets (:class:`CountingModel`) or around it
        (a forward pre-hook on the model's torch module while the solver runs). Inside a training's counting
        block (:func:`rfbench.training.counting.counting`) the rows evaluated count as its forwards.

    Raises:
        SamplerError: the solver failed; the model's first evaluation failed (naming what was passed to it); a
            fixed-grid solver counted another NFE than its ``expected_nfe`` declares (naming where it was
            registered).
    """
    _check_solver_name(solver)
    check_precision(precision)
    spec = SOLVERS[solver]
    if model is None or not (callable(model) or is_diffusion_model(model)):
        raise TypeError(f"model must be a flow model, a callable model(x, t) -> v, or a "
                        f"rfbench.models.DiffusionModel; got "
                        f"{'None' if model is None else f'{type(model).__name__} {reprlib.repr(model)}'}")
    _check_x0(model, x0)
    steps = check_call(solver, steps, options, grid)
    if spec.kind == "discrete" and is_diffusion_model(model) and steps > model.num_timesteps:
        raise ValueError(f"{solver}: steps={steps} exceeds the model's {model.num_timesteps} timesteps")
    _check_model_kind(solver, model)

    kwargs: dict[str, Any] = dict(options)
    if spec.kind == "fixed":
        kwargs["times"] = time_grid(spec.default_grid if grid is None else grid, steps, model)
        x0 = start_state(model, x0, kwargs["times"][0])
    elif spec.kind == "discrete":
        kwargs["timesteps"] = discrete_timesteps(spec.default_grid if grid is None else grid, steps,
                                                 model.num_timesteps)
    labelled = seed_classes(model) > 0           # its classes come from the seeds (rfbench.models.labels)
    if labelled:
        if seeds is None:
            raise unbound_error(model)
        seeds = list(seeds)
        if len(seeds) != x0.shape[0]:
            raise ValueError(f"seeds has {len(seeds)} entries but x0 has {x0.shape[0]} rows: pass one seed per row")
        model = seeded(model, seeds)
    if spec.is_stochastic(options):
        kwargs["noise"] = _step_noise(solver, x0, None if labelled and noise is not None else seeds, noise)
    elif (seeds is not None and not labelled) or noise is not None:
        raise TypeError(f"{solver} is deterministic with these options: seeds/noise would be ignored")

    counted = CountingModel(model, solver, steps, precision, batch=x0.shape[0])
    if "noise" in kwargs:
        kwargs["noise"] = counted._uncounted(kwargs["noise"])
    recorder = TrajectoryRecorder() if trajectory else None
    if recorder is not None and callback is not None:
        def kwargs_callback(i, t, x, v):
            recorder(i, t, x, v)
            callback(i, t, x, v)
        kwargs["callback"] = counted._uncounted(kwargs_callback)
    else:
        kwargs["callback"] = counted._uncounted(recorder or callback)

    with torch.no_grad(), float32_mode(precision):
        try:
            # evaluations that go around the wrapper count too; inside a training's counting block, the rows
            # evaluated count as its forwards (rfbench.training.counting)
            with counted._watching(network_module(model)), solving(lambda: counted._rows):
                x, stats = spec.fn(counted, x0, **kwargs)
        except SamplerError as exc:
            hint = _dtype_hint(model, x0, exc.__cause__) if exc is counted._first_failure else None
            if hint is None:
                raise
            raise hint from None
        traj = None
        if recorder is not None:
            velocity_fn = None
            if spec.kind != "discrete":  # fill velocities an adaptive solver did not expose (uncounted)
                def velocity_fn(s, t):    # in the run's precision, as the solver's own evaluations
                    return counted._evaluate(model, s.to(x0.device),
                                             torch.full((s.shape[0],), t, dtype=x0.dtype, device=x0.device))
            traj, extra = recorder.build(velocity_fn)
            if extra:
                stats["trajectory_evals"] = extra

    expected = spec.nfe(steps, model)
    if expected is not None and counted.nfe != expected:
        raise SamplerError(_miscount_message(spec, steps, expected, counted.nfe))
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        run = solver if steps is None else f"{solver} (steps={steps})"
        raise NonFiniteError(f"{run} produced non-finite samples: {int(bad.sum())} of "
                             f"{x.shape[0]} rows contain NaN or inf after {_nfe_text(counted.nfe)} model evaluations")
    return SampleResult(x=x, nfe=counted.nfe, solver=solver, steps=steps, stats=stats, trajectory=traj)


def start_state(model: Any, x0: torch.Tensor, t0: float) -> torch.Tensor:
    """The state a fixed-grid solver starts from: x0 is the source noise; a grid that starts at a flow time t0 > 0
    starts from sigma(t0) x0 on the model's Gaussian path (1 - t0 on a rectified flow: EDM's x = sigma_max * noise
    in rfbench's variables), so every solver on one grid starts from the same state."""
    if t0 <= 0:
        return x0
    return x0 * float(path_of(model).alpha_sigma(np.array([t0]))[1][0])


def _miscount_message(spec: SolverSpec, steps: int, expected: int, counted: int | float) -> str:
    """A fixed-grid solver whose counted NFE is not the one it declares: named with where it was registered."""
    try:
        where = f"{inspect.getsourcefile(spec.fn) or inspect.getfile(spec.fn)}:{inspect.getsourcelines(spec.fn)[1]}"
    except (TypeError, OSError):     # no source (a builtin, code made by exec): its module
        where = f"module {getattr(spec.fn, '__module__', '?')}"
    origin = describe_origin(SOLVERS.origin(spec.name))
    more = "uses more evaluations than it declares" if counted > expected else "declares more than it uses"
    return (f"solver {spec.name} (registered by {origin}; defined at {where}) counted {_nfe_text(counted)} model "
            f"evaluations at steps={steps}, but its expected_nfe({steps}) declares {expected}: it {more}; fix its "
            f"expected_nfe or its evaluations (NFE: the rows evaluated over the batch's rows)")


def _nfe_text(nfe: int | float) -> str:
    """An NFE in a message: an int as it is, a fraction of evaluations to 6 digits."""
    return str(nfe) if isinstance(nfe, int) else f"{nfe:.6g}"


def _check_model_kind(solver: str, model: Any) -> None:
    """Refuse a model of a kind the solver does not take (its ``register_solver(models=...)``). A plain callable
    does not say whether it is a flow or a one-step map: it is refused only by a solver that takes neither."""
    spec = SOLVERS[solver]
    kind = stated_kind(model)
    got = f"a {kind or 'flow'} model ({type(model).__name__})"
    if spec.kind == "discrete" and not is_diffusion_model(model):
        raise TypeError(f"{solver} samples DDPM-style models on their discrete schedule; got {got}. Wrap an eps/x0/v "
                        f"network in rfbench.models.DiffusionModel, or use an ODE solver: "
                        f"{', '.join(n for n, s in SOLVERS.items() if s.kind != 'discrete')}")
    if kind in spec.models or (kind is None and {"flow", "one-step"} & set(spec.models)):
        return
    raise TypeError(f"{models_taken(solver)}; got {got}")


def models_taken(solver: str) -> str:
    """The kinds of model ``solver`` takes and where it was registered, for messages: "x takes flow models
    (register_solver(models=...) in --plugin x.py)"."""
    return (f"{solver} takes {' and '.join(SOLVERS[solver].models)} models (register_solver(models=...) in "
            f"{describe_origin(SOLVERS.origin(solver))})")


def _check_x0(model: Any, x0: Any) -> None:
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"x0 must be a torch.Tensor of shape (B, ...), got {type(x0).__name__}")
    if x0.ndim < 2 or x0.shape[0] < 1:
        raise ValueError(f"x0 must have shape (B, ...) with B >= 1 and at least one feature dimension; "
                         f"got {tuple(x0.shape)}")
    if not x0.dtype.is_floating_point:
        raise TypeError(f"x0 must be floating point, got {x0.dtype}")
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(x0.shape[1:]) != tuple(expected):
        raise ValueError(f"x0 has shape {tuple(x0.shape)} but the model takes (B, {', '.join(map(str, expected))})")


def _dtype_hint(model: Any, x0: torch.Tensor, exc: Exception) -> TypeError | None:
    """When the model's first evaluation fails and x0's dtype is not its parameters' (a model may convert its
    input itself, so this is said only on failure), an error that says so."""
    dtype = _parameter_dtype(model)
    if dtype is None or x0.dtype == dtype:
        return None
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return TypeError(f"the model failed on its first evaluation ({type(exc).__name__}: {first[:160]}): x0 is "
                     f"{x0.dtype} but the model's parameters are {dtype}; pass x0.to({dtype}) (or convert the model "
                     f"with .to({x0.dtype}))")


def _parameter_dtype(model: Any) -> torch.dtype | None:
    """The floating dtype of a torch module's parameters (a DiffusionModel's net's), None where there is no single
    one (not a module, no floating parameters, or mixed precision)."""
    net = network_module(model)
    if net is None:
        return None
    dtypes = {p.dtype for p in net.parameters() if p.dtype.is_floating_point}
    return dtypes.pop() if len(dtypes) == 1 else None


def _check_solver_name(solver: Any) -> None:
    if not isinstance(solver, str):
        raise TypeError(f"solver must be a solver name (a string), one of: {', '.join(SOLVERS.names())}; "
                        f"got {solver!r}")


def check_call(solver: str, steps: Any, options: dict, grid: Any = None) -> int | None:
    """Check a solver name, its step count, its grid and its options without running anything (also used by
    suites). Returns steps as an int (None for adaptive solvers; a grid sequence fixes it). Unknown options are an
    error, never a warning.
    """
    _check_solver_name(solver)
    spec = SOLVERS[solver]
    steps = check_grid(spec.kind, grid, steps)
    allowed = solver_options(solver)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"{solver} got unknown option(s) {', '.join(unknown)}; "
                        f"it takes: {', '.join(allowed) if allowed else 'no options'}")
    params = inspect.signature(SOLVERS[solver].fn).parameters
    for key, value in options.items():   # a value of another type than the option's default: refused before any work
        if key in ("eta", "rtol", "atol", "max_nfe"):
            continue                     # their ranges are checked below
        default, annotation = params[key].default, str(params[key].annotation)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(default, bool):     # a flag; "bool | int" also takes a count (lower_order_final)
            if not isinstance(value, bool) and not (isinstance(value, int) and "int" in annotation):
                also = " or an integer" if "int" in annotation else ""
                raise ValueError(f"{solver} option {key} must be True, False{also} (default {default}), got {value!r}")
        elif isinstance(default, (int, float)) and not number:
            raise ValueError(f"{solver} option {key} takes a number (default {default:g}), got {value!r}")
    for key in ("rtol", "atol"):
        if key in options:
            value = options[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(f"{solver} option {key} must be a number in (0, 1), got {value!r}")
    if "max_nfe" in options:
        value = options["max_nfe"]
        try:
            ok = not isinstance(value, bool) and operator.index(value) >= 1   # int and numpy integers, not 1e5
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"{solver} option max_nfe must be an integer >= 1 (the most model evaluations it may "
                             f"make), got {value!r}")
    if "eta" in options:
        eta = options["eta"]
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    for key in ("s_churn", "s_noise", "s_tmin", "s_tmax"):     # the noise options of the stochastic samplers
        if key in options and not options[key] >= 0:
            raise ValueError(f"{solver} option {key} must be a number >= 0, got {options[key]!r}")
    if options.get("s_tmin", 0.0) > options.get("s_tmax", float("inf")):
        raise ValueError(f"{solver}: s_tmin={options['s_tmin']!r} exceeds s_tmax={options['s_tmax']!r} (the sigma "
                         f"range in which s_churn adds noise)")
    if spec.kind == "adaptive":
        if steps is not None:
            raise ValueError(f"{solver} is adaptive and chooses its own steps; pass steps=None "
                             f"(got steps={steps!r}); set rtol/atol instead")
        return None
    message = f"{solver} needs steps, an integer >= 1; got {steps!r}"
    if isinstance(steps, bool):
        raise ValueError(message)
    try:
        steps = operator.index(steps)  # int and numpy integers; not floats or None
    except TypeError:
        raise ValueError(message) from None
    if steps < 1:
        raise ValueError(message)
    return steps


def _step_noise(solver: str, x0: torch.Tensor, seeds: Sequence[int] | None, noise: Any):
    if (seeds is None) == (noise is None):
        raise TypeError(f"{solver} is stochastic: pass exactly one of seeds= (one per row of x0, for seeded "
                        f"per-step noise) or noise= (a callable noise(i) -> tensor like x0)")
    if noise is not None:
        if not callable(noise):
            raise TypeError(f"noise must be a callable noise(i) -> tensor like x0, got {type(noise).__name__}")
        return noise
    seeds = list(seeds)
    if len(seeds) != x0.shape[0]:
        raise ValueError(f"seeds has {len(seeds)} entries but x0 has {x0.shape[0]} rows: pass one seed per row")
    return StepNoise(seeds, x0.shape[1:], device=x0.device, dtype=x0.dtype)
