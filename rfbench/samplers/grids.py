"""Time grids: where a fixed-grid solver steps (in flow time, t=0 source, t=1 data), and which timesteps a discrete
sampler visits. The grid is an argument of every sampler (``rfbench.sample(..., grid=...)``), never a constant
inside one, and a cell's grid is an axis of a sweep (the ``grid`` column).

Named grids for fixed-grid solvers, registered by name (``GRIDS``; a plugin adds its own with
:func:`register_grid`), computed on the model's Gaussian path (:mod:`rfbench.models.paths`):

* ``uniform``: t_i = i / N (the default);
* ``quadratic``: uniform in the square root of the model's diffusion time (DPM-Solver's ``time_quadratic``;
  1 - t for flows, the SDE time for score-SDE's VP models): denser near the data;
* ``logsnr``: uniform in the half log-SNR lambda = log(alpha / sigma) (DPM-Solver's ``logSNR``);
* ``karras``: EDM's schedule, uniform in sigma^(1/rho) with sigma = sigma_t / alpha_t = exp(-lambda) (Karras et al.
  2022, eq. 5; ``karras:rho=5`` sets rho, default 7; ``sigma_min``, ``sigma_max`` default to EDM's 0.002 and 80,
  clipped to the model's range); ``polynomial`` is the same grid under zju-pi/diff-sampler's name;
* ``time_uniform``: diff-sampler's ``time_uniform``: uniform in u^(1/rho) (default rho = 1; DEIS uses
  ``time_uniform:rho=2``), u the time of the VP SDE whose sigma runs from sigma_max (u = 1) to sigma_min
  (u = 1e-3), on the same sigma range and with the same ends as ``karras``;
* ``polynomial``, ``time_uniform`` and ``logsnr`` with ``to_data=0``: on a flow, N + 1 points from sigma_max to
  sigma_min and no step to the data, as diff-sampler's schedules (``denoise_to_zero=False``); ``logsnr`` with any
  option (``sigma_min``, ``sigma_max``, ``to_data``) is diff-sampler's, uniform in log sigma on karras's range.

On score-SDE's VP / sub-VP models (sampled from SDE time 1 to eps) ``uniform``, ``quadratic`` and ``logsnr`` are the
official DPM-Solver code's grids, mapped to flow time. A rectified flow's log-SNR is -inf at t=0 and +inf at t=1:
``logsnr`` and ``karras`` are computed on [delta, 1 - delta] (delta = 1e-3). ``logsnr`` then runs the whole path,
its ends moved to t=0 (the source, where x0 is drawn) and t=1; ``karras`` starts at its sigma_max (t = 1/81 for
EDM's 80), as EDM does, and ends as EDM's does, with a step from its smallest sigma to the data (sigma = 0, t=1). An
explicit sequence of flow times (increasing, in [0, 1]) is a grid too: the sampler starts at its first entry, and
steps = len(grid) - 1. Every fixed-grid solver on a grid that starts at t0 > 0 starts from the state sigma(t0) x0
(:func:`rfbench.samplers.start_state`; EDM's sigma_max x0 in its variables), x0 being the source noise.

A grid that starts after t=0 (karras always; an explicit one) leaves out the first stretch of the path: its samples
differ from the model's ODE solution from x0 even at many steps. solver_error, measured against that solution, keeps
this error and so stops falling with the steps (about 1.5e-2 in RMS on a 2D Gaussian flow, tests/test_grids.py):
it is part of what such a sampler gives, not of its discretisation.

Discrete samplers (ddim, ddpm) take spacings of a DiffusionModel's integer timesteps, named after diffusers'
``timestep_spacing``: ``uniform`` (rfbench's default, floor(i T / S)), ``leading``, ``linspace``, ``trailing``; or
an explicit sequence of timesteps in sampling order (decreasing), to compare step for step with a diffusers
scheduler given the same timesteps.
"""

from __future__ import annotations

import inspect
import math
import numbers
import operator
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from rfbench.models.paths import GaussianPath, log_snr_range, path_of
from rfbench.registry import Registry

DEFAULT = "uniform"
EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0     # EDM's defaults (Karras et al. 2022, Table 1)


@dataclass(frozen=True)
class GridSpec:
    """A named grid: ``fn(steps, path, **options) -> N + 1 increasing flow times``."""

    name: str
    fn: Callable[..., Sequence[float]]
    description: str = ""

    @property
    def options(self) -> list[str]:
        return [p for p in inspect.signature(self.fn).parameters if p not in ("steps", "path")]

    @property
    def defaults(self) -> dict[str, Any]:
        """Each option's default (an option whose default is a word takes words: ``gits:metric=l2``)."""
        return {p.name: p.default for p in inspect.signature(self.fn).parameters.values()
                if p.name not in ("steps", "path")}


GRIDS: Registry[GridSpec] = Registry("grid")


# the grids that start at a model's largest finite sigma (EDM's sigma_max, clipped to the model's range), not at a
# flow's source: every solver that needs a finite starting sigma (edm-heun, ipndm, deis) takes each of them
SIGMA_GRIDS = ("karras", "polynomial", "time_uniform", "gits")


def register_grid(name: str, description: str = ""):
    """Decorator registering ``fn(steps, path, **options)`` (``path``: the model's
    :class:`~rfbench.models.paths.GaussianPath`) as a named time grid for fixed-grid solvers."""
    if ":" in name or "," in name or "=" in name:
        raise ValueError(f"grid names may not contain ':', ',' or '=' (they separate options), got {name!r}")

    def deco(fn):
        params = list(inspect.signature(fn).parameters)
        if params[:2] != ["steps", "path"]:
            raise TypeError(f"grid {name}: the function must be fn(steps, path, **options), got ({', '.join(params)})")
        GRIDS.add(name, GridSpec(name, fn, description))
        return fn

    return deco


def parse_grid(spec: str) -> tuple[str, dict[str, float | str]]:
    """``"karras:rho=5"`` -> ("karras", {"rho": 5.0}); ``"gits:metric=l2"`` -> ("gits", {"metric": "l2"}) (a word
    for an option whose default is one, :func:`named_grid`); ``"logsnr"`` -> ("logsnr", {})."""
    name, _, rest = spec.partition(":")
    options: dict[str, float | str] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        try:
            options[key.strip()] = float(value)
        except ValueError:
            if not value.strip().isidentifier():
                sep = ""
            options[key.strip()] = value.strip()
        if not sep:
            raise ValueError(f"grid {spec!r}: options are written name:key=value[,key=value], e.g. karras:rho=5")
    return name, options


@register_grid("uniform", "t_i = i / N")
def uniform(steps, path):
    return [i / steps for i in range(steps + 1)]      # float64 arithmetic; the last point is exactly 1


@register_grid("quadratic", "uniform in sqrt(diffusion time) (DPM-Solver's time_quadratic)")
def quadratic(steps, path):
    start, end = path.diffusion_time(np.array([0.0, 1.0]))
    u = np.linspace(math.sqrt(start), math.sqrt(end), steps + 1) ** 2
    return _ends(path.flow_time(u))


@register_grid("logsnr", "uniform in log(alpha / sigma) (DPM-Solver's logSNR)")
def logsnr(steps, path, sigma_min: float | None = None, sigma_max: float | None = None, to_data: float = 1.0):
    """The path's whole finite log-SNR range, its ends moved to t=0 and t=1 where lambda is infinite there; with any
    option, diff-sampler's logsnr instead: uniform in log sigma from sigma_max to sigma_min, ends as karras's."""
    if sigma_min is None and sigma_max is None and to_data == 1.0:
        lam_lo, lam_hi = log_snr_range(path)
        t = path.t_of_log_snr(np.linspace(lam_lo, lam_hi, steps + 1))
        return _snap(_ends(t, path), path)
    return _sigma_grid("logsnr", _log_sigmas, steps, path, 1.0, sigma_min, sigma_max, to_data)


@register_grid("karras", "EDM's rho schedule of sigma = exp(-lambda) (Karras et al. 2022, eq. 5)")
def karras(steps, path, rho: float = 7.0, sigma_min: float | None = None, sigma_max: float | None = None):
    """sigma_min / sigma_max default to EDM's, 0.002 and 80, clipped to the model's range as EDM's sampler clips
    them to its network's (a flow's range: t in [delta, 1 - delta])."""
    return _sigma_grid("karras", _polynomial_sigmas, steps, path, rho, sigma_min, sigma_max)


@register_grid("polynomial", "karras under diff-sampler's name (its schedule_type='polynomial'): the same times")
def polynomial(steps, path, rho: float = 7.0, sigma_min: float | None = None, sigma_max: float | None = None,
               to_data: float = 1.0):
    return _sigma_grid("polynomial", _polynomial_sigmas, steps, path, rho, sigma_min, sigma_max, to_data)


@register_grid("time_uniform", "uniform in u^(1/rho), u the time of a VP SDE fitted to the sigma range "
                               "(diff-sampler's time_uniform; DEIS: rho=2)")
def time_uniform(steps, path, rho: float = 1.0, sigma_min: float | None = None, sigma_max: float | None = None,
                 to_data: float = 1.0):
    """The VP SDE beta(u) = beta_min + beta_d u whose sigma(u) = sqrt(exp(beta_d u^2 / 2 + beta_min u) - 1) runs
    from sigma_max at u = 1 to sigma_min at u = 1e-3; the times u_i are uniform in u^(1/rho) (rho = 1: uniform in u,
    DPM-Solver's time_uniform on that SDE). Ends and sigma range as karras."""
    return _sigma_grid("time_uniform", _vp_time_sigmas, steps, path, rho, sigma_min, sigma_max, to_data)


def _polynomial_sigmas(points: int, s_min: float, s_max: float, rho: float) -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, points) if points > 1 else np.zeros(1)
    return (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho


def _log_sigmas(points: int, s_min: float, s_max: float, rho: float) -> np.ndarray:
    return np.exp(-np.linspace(-math.log(s_max), -math.log(s_min), points))


VP_TIME_EPS = 1e-3      # the VP SDE time at sigma_min of time_uniform (diff-sampler's epsilon_s)


def _vp_time_sigmas(points: int, s_min: float, s_max: float, rho: float) -> np.ndarray:
    eps = VP_TIME_EPS
    top, bottom = math.log1p(s_max ** 2), math.log1p(s_min ** 2)         # beta_d u^2 / 2 + beta_min u at u = 1, eps
    beta_d = 2 * (bottom / eps - top) / (eps - 1)
    beta_min = top - 0.5 * beta_d
    ramp = np.linspace(0.0, 1.0, points) if points > 1 else np.zeros(1)
    u = (1 + ramp * (eps ** (1 / rho) - 1)) ** rho
    return np.sqrt(np.expm1(0.5 * beta_d * u ** 2 + beta_min * u))


def _sigma_grid(name: str, sigmas: Callable[[int, float, float, float], np.ndarray], steps: int, path: GaussianPath,
                rho: float, sigma_min: float | None, sigma_max: float | None, to_data: float = 1.0) -> list[float]:
    """A grid given as decreasing sigmas = exp(-lambda) from sigma_max to sigma_min, ``sigmas(points, sigma_min,
    sigma_max, rho)``, in flow time: N + 1 points where the path ends at a smallest sigma > 0, else (a flow) N
    points and EDM's last step to the data (sigma 0, t=1); on a flow ``to_data=0`` gives N + 1 points, ending at
    sigma_min as diff-sampler's schedules do (its denoise_to_zero=False)."""
    if not rho > 0:
        raise ValueError(f"grid {name}: rho must be > 0, got {rho}")
    if to_data not in (0.0, 1.0):
        raise ValueError(f"grid {name}: to_data must be 1 (a flow's last step goes to the data) or 0 (the grid ends "
                         f"at sigma_min), got {to_data:g}")
    lam_lo, lam_hi = log_snr_range(path)
    s_max = min(EDM_SIGMA_MAX, math.exp(-lam_lo)) if sigma_max is None else float(sigma_max)
    s_min = max(EDM_SIGMA_MIN, math.exp(-lam_hi)) if sigma_min is None else float(sigma_min)
    if not 0 < s_min < s_max:
        raise ValueError(f"grid {name}: need 0 < sigma_min < sigma_max, got {s_min:g} and {s_max:g}")
    if s_max > math.exp(-lam_lo) * (1 + 1e-9) or s_min < math.exp(-lam_hi) * (1 - 1e-9):
        raise ValueError(f"grid {name}: sigma in [{s_min:g}, {s_max:g}] leaves the model's range "
                         f"[{math.exp(-lam_hi):g}, {math.exp(-lam_lo):g}]")
    # sigma reaches 0 at t=1 (a flow): EDM's last step, unless to_data=0
    to_data = bool(to_data) and not np.isfinite(path.log_snr(np.array([1.0])))[0]
    t = path.t_of_log_snr(-np.log(sigmas(steps if to_data else steps + 1, s_min, s_max, rho)))
    return np.append(_ends(t), 1.0).tolist() if to_data else _ends(t, path)   # starts at sigma_max, as EDM does


def _ends(t: np.ndarray, path: GaussianPath | None = None) -> list[float]:
    """Exact end points where the grid reaches the path's ends (inversions leave round-off there)."""
    t = np.asarray(t, dtype=np.float64)
    if abs(t[0]) < 1e-12:
        t[0] = 0.0
    if abs(t[-1] - 1) < 1e-12:
        t[-1] = 1.0
    return t.tolist()


def _snap(t: Sequence[float], path: GaussianPath) -> list[float]:
    """A grid computed on a clipped log-SNR range still runs the whole path: its ends move to t=0 and t=1 where
    lambda is infinite there."""
    t = list(t)
    ends = path.log_snr(np.array([0.0, 1.0]))
    if not np.isfinite(ends[0]):
        t[0] = 0.0
    if not np.isfinite(ends[1]):
        t[-1] = 1.0
    return t


def named_grid(grid: str) -> tuple[GridSpec, dict[str, float | str]]:
    """The registered grid that ``grid`` (a name with options) names, and its options, checked: known to the grid,
    and a word exactly where the option's default is one."""
    name, options = parse_grid(grid)
    spec = GRIDS[name]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(f"grid {name} got unknown option(s) {', '.join(unknown)}; it takes: "
                         f"{', '.join(spec.options) or 'no options'}")
    for key, value in options.items():
        word = isinstance(spec.defaults[key], str)
        if isinstance(value, str) != word:
            raise ValueError(f"grid {name}: option {key} takes a {'word' if word else 'number'}, got {value!r}")
    return spec, options


def describe_grid(grid: Any) -> str | None:
    """The ``grid`` column of a cell: the name (with options) of a named grid, ``custom (N steps)`` for a sequence,
    None when there is none (adaptive solvers)."""
    if grid is None:
        return None
    if isinstance(grid, str):
        return grid
    return f"custom ({len(list(grid)) - 1} steps)"


def is_sequence(grid: Any) -> bool:
    return grid is not None and not isinstance(grid, str)


def check_grid(solver_kind: str, grid: Any, steps: Any) -> int | None:
    """Check a grid against a solver kind and a step count; returns the step count (an explicit sequence fixes it)."""
    if grid is None:
        return steps
    if solver_kind == "adaptive":
        raise ValueError(f"an adaptive solver chooses its own times; grid does not apply (got {grid!r})")
    if isinstance(grid, str):
        name, options = parse_grid(grid)
        if solver_kind == "discrete":
            if name not in SPACINGS:
                raise ValueError(f"grid {grid!r}: discrete samplers take the spacings {', '.join(SPACINGS)} or a "
                                 f"sequence of timesteps; named time grids ({', '.join(GRIDS.names())}) are for "
                                 f"fixed-grid ODE solvers")
            if options:
                raise ValueError(f"grid {grid!r}: a spacing takes no options")
            return steps
        named_grid(grid)
        return steps
    try:
        values = list(grid)
    except TypeError:
        raise TypeError(f"grid must be a name or a sequence, got {type(grid).__name__}") from None
    if len(values) < 2:
        raise ValueError(f"a grid sequence needs at least 2 entries (one step), got {len(values)}")
    if steps is not None and steps != len(values) - 1:
        raise ValueError(f"a grid of {len(values)} entries makes {len(values) - 1} steps; steps={steps!r} differs "
                         f"(leave steps out)")
    return len(values) - 1


def time_grid(grid: Any, steps: int, model: Any) -> list[float]:
    """The N + 1 flow times of a fixed-grid solver's steps on ``model``'s path: a named grid or a sequence."""
    if grid is None:
        grid = DEFAULT
    if isinstance(grid, str):
        spec, options = named_grid(grid)
        times = list(map(float, spec.fn(steps, path_of(model), **options)))
    else:
        times = [float(v) for v in grid]
    if len(times) != steps + 1 or not all(math.isfinite(v) and 0 <= v <= 1 for v in times) or any(
            b <= a for a, b in zip(times, times[1:])):
        raise ValueError(f"grid {describe_grid(grid)}: times must be {steps + 1} increasing values in [0, 1] (flow "
                         f"time: 0 source, 1 data), got {np.round(times, 6).tolist()}")
    return times


# -- discrete samplers: spacings of the integer timesteps ------------------------------------------------------

def _uniform_spacing(num_timesteps: int, steps: int) -> list[int]:
    """rfbench's default (DDIM's uniform skip written exactly): floor(i T / S), i = 0..S-1."""
    return [(i * num_timesteps) // steps for i in range(steps)]


def _leading(num_timesteps: int, steps: int) -> list[int]:
    """diffusers' timestep_spacing="leading" (steps_offset 0): i * (T // S)."""
    return [i * (num_timesteps // steps) for i in range(steps)]


def _linspace(num_timesteps: int, steps: int) -> list[int]:
    """diffusers' "linspace": round(linspace(0, T - 1, S))."""
    return np.linspace(0, num_timesteps - 1, steps).round().astype(np.int64).tolist()


def _trailing(num_timesteps: int, steps: int) -> list[int]:
    """diffusers' "trailing": round(arange(T, 0, -T / S)) - 1, increasing."""
    return sorted((np.round(np.arange(num_timesteps, 0, -num_timesteps / steps)).astype(np.int64) - 1).tolist())


SPACINGS: dict[str, Callable[[int, int], list[int]]] = {"uniform": _uniform_spacing, "leading": _leading,
                                                        "linspace": _linspace, "trailing": _trailing}


def discrete_timesteps(grid: Any, steps: int, num_timesteps: int) -> list[int]:
    """The integer timesteps a discrete sampler visits, in sampling order (decreasing)."""
    if grid is None or isinstance(grid, str):
        increasing = SPACINGS[grid or DEFAULT](num_timesteps, steps)
        values = increasing[::-1]
    else:
        values = []
        for v in grid:
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"a discrete sampler's grid is a sequence of integer timesteps; got {v!r}")
            values.append(operator.index(v))
    if len(set(values)) != len(values) or any(b >= a for a, b in zip(values, values[1:])) or values[-1] < 0 \
            or values[0] > num_timesteps - 1:
        raise ValueError(f"timesteps must be distinct, decreasing (sampling order) and in [0, {num_timesteps - 1}]; "
                         f"got {values[:8]}{' ...' if len(values) > 8 else ''} (grid {describe_grid(grid)}, "
                         f"{steps} steps of T={num_timesteps})")
    return values
