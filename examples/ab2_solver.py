"""A solver plugin: the second-order Adams-Bashforth method (AB2) for flows, benchmarked beside rfbench's solvers.

    python benchmark.py --suite toy2d --plugin examples/ab2_solver.py --solvers euler heun ab2

AB2 reuses the previous step's velocity, so it is second order at one model evaluation per step, Euler's cost:
    x_{n+1} = x_n + h_n (v_n + h_n / (2 h_{n-1}) (v_n - v_{n-1})),   v_n = v(x_n, t_n),   h_n = t_{n+1} - t_n,
the variable-step form (on a uniform grid: x_n + h (3/2 v_n - 1/2 v_{n-1})), with an Euler first step (its O(h^2)
local error does not lower the method's global order). One step is Euler's step exactly. The solver steps through
the ``times`` rfbench gives it, so every grid applies (``--grids uniform logsnr``).

What registering gives the solver, as it gives rfbench's own: ``rfbench.sample(model, x0, "ab2", steps=N)``, its
evaluations counted and checked against ``expected_nfe``, options it does not take refused, trajectories through
``callback`` (for straightness), a place in every suite's sweep (``--solvers ab2``) and in ``--list``.
"""

import rfbench


@rfbench.register_solver("ab2", "fixed", order=2, expected_nfe=lambda steps: steps,
                         description="Adams-Bashforth 2 (Euler first step); 1 NFE per step")
def ab2(model, x, *, times, callback=None):
    """Integrate dx/dt = model(x, t) through the grid ``times`` (t_0 < ... < t_N)."""
    v_prev = h_prev = None
    for i, (t_cur, t_next) in enumerate(zip(times[:-1], times[1:])):
        h = t_next - t_cur
        v_cur = model(x, t_cur)
        if callback is not None:
            callback(i, t_cur, x, v_cur)
        slope = v_cur if v_prev is None else v_cur + h / (2 * h_prev) * (v_cur - v_prev)
        x, v_prev, h_prev = x + h * slope, v_cur, h
    if callback is not None:
        callback(len(times) - 1, times[-1], x, None)
    return x, {}
