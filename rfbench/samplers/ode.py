"""ODE solvers for dZ/dt = v(Z, t) from t=0 (source) to t=1 (data).

Fixed-grid solvers (euler, heun, midpoint, rk4) are written here, a few lines each, because every step must hand
its velocity to the callback (straightness needs it) and count exactly; they step through the ``times`` of a grid
(:mod:`rfbench.samplers.grids`: uniform by default). Adaptive solvers come from scipy (rk45, the rectified-flow
paper's choice) and torchdiffeq (dopri5, stays on the device).
"""

from __future__ import annotations

import numpy as np
import scipy.integrate
import torch

from rfbench.samplers.base import Callback, NonFiniteError, SamplerError, register_solver


def _fixed(step_fn):
    """Run a one-step map over a grid's times t_0 < ... < t_N; step_fn(model, x, t_cur, t_next) -> (x_next, d_cur)."""

    def solver(model, x, *, times: list[float], callback: Callback | None = None):
        for i, (t_cur, t_next) in enumerate(zip(times[:-1], times[1:])):
            x_next, d_cur = step_fn(model, x, t_cur, t_next)
            if callback is not None:
                callback(i, t_cur, x, d_cur)
            x = x_next
        if callback is not None:
            callback(len(times) - 1, times[-1], x, None)
        return x, {}

    solver.__doc__ = step_fn.__doc__
    return solver


def _euler_step(model, x, t_cur, t_next):
    """Euler: x_next = x + h * v(x, t)."""
    d_cur = model(x, t_cur)
    return x + (t_next - t_cur) * d_cur, d_cur


def _heun_step(model, x, t_cur, t_next):
    """Heun (explicit trapezoid, 2nd order): average the slopes at t_cur and at the Euler guess at t_next."""
    h = t_next - t_cur
    d_cur = model(x, t_cur)
    x_euler = x + h * d_cur
    d_prime = model(x_euler, t_next)
    return x + h * (0.5 * d_cur + 0.5 * d_prime), d_cur


def _midpoint_step(model, x, t_cur, t_next):
    """Explicit midpoint (2nd order): the slope at the half step."""
    h = t_next - t_cur
    d_cur = model(x, t_cur)
    d_mid = model(x + 0.5 * h * d_cur, t_cur + 0.5 * h)
    return x + h * d_mid, d_cur


def _rk4_step(model, x, t_cur, t_next):
    """Classic 4th-order Runge-Kutta."""
    h = t_next - t_cur
    k1 = model(x, t_cur)
    k2 = model(x + 0.5 * h * k1, t_cur + 0.5 * h)
    k3 = model(x + 0.5 * h * k2, t_cur + 0.5 * h)
    k4 = model(x + h * k3, t_next)
    return x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4), k1


euler = register_solver("euler", "fixed", order=1, expected_nfe=lambda n: n,
                        description="Euler")(_fixed(_euler_step))
heun = register_solver("heun", "fixed", order=2, expected_nfe=lambda n: 2 * n,
                       description="Heun (trapezoid)")(_fixed(_heun_step))
midpoint = register_solver("midpoint", "fixed", order=2, expected_nfe=lambda n: 2 * n,
                           description="explicit midpoint")(_fixed(_midpoint_step))
rk4 = register_solver("rk4", "fixed", order=4, expected_nfe=lambda n: 4 * n,
                      description="classic Runge-Kutta 4")(_fixed(_rk4_step))


@register_solver("rk45", "adaptive", order=5, description="scipy RK45 (Dormand-Prince), the RF paper's solver")
def rk45(model, x, *, rtol: float = 1e-5, atol: float = 1e-5, callback: Callback | None = None):
    """Adaptive Dormand-Prince 5(4) via scipy, on the whole batch flattened into one system (as the rectified-flow
    paper's code calls ``solve_ivp(method="RK45")``). Stepping scipy's ``RK45`` class is the same algorithm as
    ``solve_ivp``; it also hands us the FSAL velocity at every accepted point for the callback."""
    _check_tolerances(rtol, atol)
    shape, dtype, device = x.shape, x.dtype, x.device

    def to_torch(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y).reshape(shape).to(device=device, dtype=dtype)

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        v = model(to_torch(y), float(t)).detach().to(torch.float64).cpu().numpy().reshape(-1)
        if not np.isfinite(v).all():
            raise NonFiniteError(f"rk45: the model returned non-finite velocities at t={t:.6g} "
                                 f"({int((~np.isfinite(v)).sum())} of {v.size} values)")
        return v

    ode = scipy.integrate.RK45(fun, 0.0, x.detach().to(torch.float64).cpu().numpy().reshape(-1), 1.0,
                               rtol=rtol, atol=atol)
    if callback is not None:
        callback(0, ode.t, x, to_torch(ode.f))
    accepted = 0
    while ode.status == "running":
        message = ode.step()
        if ode.status == "failed":
            raise SamplerError(f"rk45 failed at t={ode.t:.6g}: {message}")
        accepted += 1
        if callback is not None:
            callback(accepted, ode.t, to_torch(ode.y), to_torch(ode.f))
    # scipy's RK45 spends 2 evaluations to start (f(t0) and the initial step guess) and 6 per attempted step.
    attempts = (model.nfe - 2) // 6 if hasattr(model, "nfe") else accepted
    return to_torch(ode.y), {"accepted_steps": accepted, "rejected_steps": max(attempts - accepted, 0),
                             "rtol": rtol, "atol": atol}


@register_solver("dopri5", "adaptive", order=5, description="torchdiffeq dopri5, on the device")
def dopri5(model, x, *, rtol: float = 1e-5, atol: float = 1e-5, callback: Callback | None = None):
    """Adaptive Dormand-Prince 5(4) via torchdiffeq; the state stays on x's device and dtype."""
    import torchdiffeq

    _check_tolerances(rtol, atol)
    counts = {"accepted_steps": 0, "rejected_steps": 0}

    class Func(torch.nn.Module):
        def forward(self, t, y):
            v = model(y, t.to(y.dtype))
            if not bool(torch.isfinite(v).all()):
                raise NonFiniteError(f"dopri5: the model returned non-finite velocities at t={float(t):.6g} "
                                     f"({int((~torch.isfinite(v)).sum())} of {v.numel()} values)")
            return v

        def callback_accept_step(self, t0, y0, dt):
            if callback is not None:
                callback(counts["accepted_steps"], float(t0), y0, None)
            counts["accepted_steps"] += 1

        def callback_reject_step(self, t0, y0, dt):
            counts["rejected_steps"] += 1

    t_span = torch.tensor([0.0, 1.0], dtype=x.dtype, device=x.device)
    # step_t pins a step end at t=1, so the model is never evaluated past the data end of the interval
    out = torchdiffeq.odeint(Func(), x, t_span, rtol=rtol, atol=atol, method="dopri5",
                             options={"step_t": t_span[-1:]})[-1]
    if callback is not None:
        callback(counts["accepted_steps"], 1.0, out, None)
    return out, {**counts, "rtol": rtol, "atol": atol}


def _check_tolerances(rtol: float, atol: float) -> None:
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(value, (int, float)) and 0 < value < 1):
            raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
